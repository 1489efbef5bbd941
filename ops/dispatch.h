// Device dispatch for ops. Each op's frontend (ops/<family>.cpp) checks its inputs, allocates
// outputs, then calls the kernel of the device its tensors live on:
//
//   dispatch(x, "softmax", [&] { cpu::softmax(x, dim, out); },
//            HD_CUDA_KERNEL(cuda::softmax(x, dim, out)));
//
// HD_CUDA_KERNEL expands to a lambda in CUDA builds and to a throwing stub otherwise, so the
// frontends compile unchanged with HD_CUDA=OFF (where no CUDA tensor can exist: the allocator
// refuses them). An op called with only the CPU lambda has no CUDA kernel: a CUDA tensor
// reaching it gets an error that names the op, never a silent CPU fallback.
#pragma once

#include "autograd/error.h"
#include "autograd/tensor.h"

namespace hd {

#ifdef HD_HAVE_CUDA
#define HD_CUDA_KERNEL(...) [&] { __VA_ARGS__; }
#else
#define HD_CUDA_KERNEL(...) \
  [] { throw ::hd::Error("this build has no CUDA backend (configured with HD_CUDA=OFF)"); }
#endif

template <class CpuFn, class CudaFn>
void dispatch(const Tensor& t, const char* op, CpuFn&& cpu, CudaFn&& cuda) {
  switch (t.device().type) {
    case DeviceType::cpu:
      cpu();
      return;
    case DeviceType::cuda:
      cuda();
      return;
  }
  throw Error(detail::concat(op, ": unknown device type"));
}

template <class CpuFn>
void dispatch(const Tensor& t, const char* op, CpuFn&& cpu) {
  switch (t.device().type) {
    case DeviceType::cpu:
      cpu();
      return;
    case DeviceType::cuda:
      throw Error(detail::concat(op, ": no CUDA kernel in this build for ", t.str()));
  }
}

// All tensors must be defined-or-skipped and on one device.
inline void check_same_device(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t->defined()) continue;
    if (!first) {
      first = t;
      continue;
    }
    HD_CHECK(t->device() == first->device(), op, ": tensors on different devices: ", first->str(),
             " and ", t->str());
  }
}

inline void check_same_dtype(const char* op, const Tensor& a, const Tensor& b) {
  HD_CHECK(a.dtype() == b.dtype(), op, ": dtype mismatch: ", a.str(), " vs ", b.str(),
           " (convert one with hd::to)");
}

inline int64_t normalize_dim(const char* op, int64_t dim, int64_t rank) {
  HD_CHECK(dim >= -rank && dim < std::max<int64_t>(rank, 1), op, ": dim ", dim,
           " out of range for a tensor of rank ", rank);
  return dim < 0 ? dim + rank : dim;
}

}  // namespace hd
