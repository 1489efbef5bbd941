// CUDA reductions along one dim of a contiguous tensor read as [outer, n, inner] (same contract
// as ops/cpu/reduce.cpp: sum of ints/bool -> i64, float sums accumulate in f64, max/min return
// the first index of the extreme and let a NaN win, logsumexp subtracts the max first).
//
// Two simple kernels, chosen for being obviously correct:
// - inner == 1 sums (rows, the common case and the full reduction): one block per row, a
//   strided per-thread partial, then a shared-memory tree (blockDim is a power of two);
// - everything else: one thread per output element walking n. Adjacent threads read adjacent
//   columns, so the loads coalesce when inner > 1. For max/min/logsumexp over long rows with
//   inner == 1 this is one thread per row: correct, not fast (see docs/cuda.md).
#include <type_traits>

#include "ops/cpu/reduce.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/kernels.h"

namespace hd::cuda {
namespace {

template <class O, class A>
__device__ O store_as(A v) {
  return Elem<O>::store(static_cast<typename Elem<O>::compute>(v));
}

template <class T, class O, class A>
__global__ void sum_rows_kernel(const T* x, O* out, int64_t outer, int64_t n) {
  __shared__ A buf[kThreads];
  for (int64_t o = blockIdx.x; o < outer; o += gridDim.x) {
    A acc = A(0);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += A(Elem<T>::load(x[o * n + i]));
    buf[threadIdx.x] = acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
      if (int(threadIdx.x) < s) buf[threadIdx.x] += buf[threadIdx.x + s];
      __syncthreads();
    }
    if (threadIdx.x == 0) out[o] = store_as<O>(buf[0]);
    __syncthreads();  // buf is reused by the next row
  }
}

template <class T, class O, class A>
__global__ void sum_cols_kernel(const T* x, O* out, int64_t outer, int64_t n, int64_t inner) {
  int64_t total = outer * inner, step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < total; p += step) {
    int64_t o = p / inner, j = p % inner;
    const T* col = x + o * n * inner + j;
    A acc = A(0);
    for (int64_t i = 0; i < n; ++i) acc += A(Elem<T>::load(col[i * inner]));
    out[p] = store_as<O>(acc);
  }
}

template <class T>
__global__ void extreme_kernel(bool is_max, const T* x, T* out, int64_t* idx, int64_t outer,
                               int64_t n, int64_t inner) {
  using C = typename Elem<T>::compute;
  int64_t total = outer * inner, step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < total; p += step) {
    int64_t o = p / inner, j = p % inner;
    const T* col = x + o * n * inner + j;
    C best = Elem<T>::load(col[0]);
    int64_t best_i = 0;
    for (int64_t i = 1; i < n; ++i) {
      C v = Elem<T>::load(col[i * inner]);
      if (best != best) break;  // NaN wins and stays
      bool better = is_max ? (v > best) : (v < best);
      if (better || v != v) {
        best = v;
        best_i = i;
      }
    }
    out[p] = Elem<T>::store(best);
    if (idx) idx[p] = best_i;
  }
}

template <class T>
__global__ void logsumexp_kernel(const T* x, T* out, int64_t outer, int64_t n, int64_t inner) {
  using C = typename Elem<T>::compute;
  int64_t total = outer * inner, step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < total; p += step) {
    int64_t o = p / inner, j = p % inner;
    const T* col = x + o * n * inner + j;
    C m = C(-INFINITY);
    for (int64_t i = 0; i < n; ++i) {
      C v = Elem<T>::load(col[i * inner]);
      m = (m < v) ? v : m;  // std::max semantics (a NaN v is skipped), as on the CPU
    }
    if (!isfinite(double(m))) {
      out[p] = Elem<T>::store(m);
      continue;
    }
    double acc = 0;
    for (int64_t i = 0; i < n; ++i) acc += exp(double(Elem<T>::load(col[i * inner])) - double(m));
    out[p] = Elem<T>::store(C(double(m) + log(acc)));
  }
}

template <class T, class O, class A>
void launch_sum(const Tensor& x, Tensor& out, int64_t outer, int64_t n, int64_t inner) {
  const T* px = static_cast<const T*>(x.raw_data());
  O* po = static_cast<O*>(out.raw_data());
  cudaStream_t s = stream_of(x);
  if (inner == 1) {
    unsigned blocks = unsigned(outer < 65535 ? outer : 65535);  // grid-stride over rows beyond
    sum_rows_kernel<T, O, A><<<blocks, kThreads, 0, s>>>(px, po, outer, n);
  } else {
    sum_cols_kernel<T, O, A><<<grid_for(outer * inner), kThreads, 0, s>>>(px, po, outer, n, inner);
  }
}

}  // namespace

void reduce_dim(cpu::ReduceKind kind, const Tensor& x, int64_t outer, int64_t n, int64_t inner,
                Tensor& out, Tensor* indices) {
  HD_CHECK(x.is_contiguous() && out.is_contiguous(), "reduce: expects contiguous tensors, got ",
           x.str(), " -> ", out.str());
  HD_CHECK(x.device().type == DeviceType::cuda, "reduce: CUDA kernel got ", x.str());
  if (outer * inner == 0) return;
  DeviceGuard guard(x.device().index);
  visit_dtype(x.dtype(), "reduce", [&]<class T>() {
    using C = typename Elem<T>::compute;
    if (kind == cpu::ReduceKind::sum) {
      if constexpr (std::is_floating_point_v<C>) {
        launch_sum<T, T, double>(x, out, outer, n, inner);
      } else {
        HD_CHECK(out.dtype() == DType::i64, "reduce: integer sums produce i64, got ", out.str());
        launch_sum<T, int64_t, int64_t>(x, out, outer, n, inner);
      }
    } else if constexpr (std::is_same_v<T, bool>) {
      throw Error("reduce: max/min/logsumexp are not defined for bool tensors");
    } else {
      HD_CHECK(n > 0, "reduce: cannot take max/min/logsumexp over an empty dimension (shape ",
               x.shape(), ")");
      const T* px = static_cast<const T*>(x.raw_data());
      T* po = static_cast<T*>(out.raw_data());
      unsigned grid = grid_for(outer * inner);
      if (kind == cpu::ReduceKind::logsumexp) {
        if constexpr (std::is_floating_point_v<C>) {
          logsumexp_kernel<T><<<grid, kThreads, 0, stream_of(x)>>>(px, po, outer, n, inner);
        } else {
          throw Error(detail::concat("logsumexp: needs a floating-point tensor, got ", x.str()));
        }
      } else {
        int64_t* pi = indices ? static_cast<int64_t*>(indices->raw_data()) : nullptr;
        extreme_kernel<T><<<grid, kThreads, 0, stream_of(x)>>>(kind == cpu::ReduceKind::max, px, po,
                                                               pi, outer, n, inner);
      }
    }
  });
  check_launch("reduce", x);
}

}  // namespace hd::cuda
