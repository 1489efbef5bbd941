#include "autograd/tensor.h"

#include <sstream>

#include "autograd/engine.h"
#include "autograd/node.h"
#include "autograd/pinned_host.h"
#ifdef HD_HAVE_CUDA
#include "ops/cuda/runtime.h"
#endif

namespace hd {

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    s *= std::max<int64_t>(shape[i], 1);
  }
  return strides;
}

std::string shape_str(const Shape& shape) {
  return detail::concat(shape);
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t s : shape) {
    HD_CHECK(s >= 0, "Tensor::empty: negative size in shape ", shape);
  }
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(size_t(shape_numel(shape)) * dtype_size(dtype), device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::empty_pinned(const Shape& shape, DType dtype) {
  for (int64_t s : shape) {
    HD_CHECK(s >= 0, "Tensor::empty_pinned: negative size in shape ", shape);
  }
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(size_t(shape_numel(shape)) * dtype_size(dtype),
                                            Device::cpu(), pinned_host_allocator());
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

bool Tensor::is_pinned() const {
  return defined() && &storage()->allocator() == &pinned_host_allocator();
}

int64_t Tensor::size(int64_t d) const {
  int64_t n = dim();
  HD_CHECK(d >= -n && d < n, "Tensor::size: dim ", d, " out of range for shape ", shape());
  return shape()[d < 0 ? d + n : d];
}

int64_t Tensor::stride(int64_t d) const {
  int64_t n = dim();
  HD_CHECK(d >= -n && d < n, "Tensor::stride: dim ", d, " out of range for shape ", shape());
  return strides()[d < 0 ? d + n : d];
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (size_t i = shape().size(); i-- > 0;) {
    if (shape()[i] == 1) continue;
    if (strides()[i] != expected) return false;
    expected *= shape()[i];
  }
  return true;
}

std::string Tensor::str() const {
  if (!defined()) return "undefined";
  return detail::concat(dtype_name(dtype()), shape(), " ", device().str());
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  if (!device().is_cpu()) {
#ifdef HD_HAVE_CUDA
    // Copy the whole storage to the host (synchronizing) and read it through the same view.
    auto host = std::make_shared<Storage>(storage()->nbytes(), Device::cpu());
    cuda::copy_device_to_host(host->data(), storage()->data(), storage()->nbytes(), device().index);
    auto impl = std::make_shared<TensorImpl>();
    impl->storage = host;
    impl->shape = shape();
    impl->strides = strides();
    impl->offset = offset();
    impl->dtype = dtype();
    return Tensor(impl).to_vector<T>();
#else
    throw Error(detail::concat("Tensor::to_vector: tensor is on ", device().str()));
#endif
  }
  std::vector<T> out;
  out.reserve(size_t(numel()));
  visit_dtype(dtype(), "to_vector", [&]<class S>() {
    const S* base = static_cast<const S*>(raw_data());
    Shape idx(shape().size(), 0);
    for (int64_t n = 0; n < numel(); ++n) {
      int64_t off = 0;
      for (size_t d = 0; d < idx.size(); ++d) off += idx[d] * strides()[d];
      out.push_back(static_cast<T>(ElementTraits<S>::load(base[off])));
      for (size_t d = idx.size(); d-- > 0;) {
        if (++idx[d] < shape()[d]) break;
        idx[d] = 0;
      }
    }
  });
  return out;
}

template <class T>
T Tensor::item() const {
  HD_CHECK(numel() == 1, "Tensor::item: expected one element, got shape ", shape());
  return to_vector<T>()[0];
}

template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int32_t> Tensor::to_vector<int32_t>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;
template std::vector<uint8_t> Tensor::to_vector<uint8_t>() const;
template float Tensor::item<float>() const;
template double Tensor::item<double>() const;
template int64_t Tensor::item<int64_t>() const;
template int32_t Tensor::item<int32_t>() const;

Tensor Tensor::as_strided(const Shape& shape, const Shape& strides, int64_t offset) const {
  HD_CHECK(shape.size() == strides.size(), "as_strided: shape ", shape, " and strides ", strides,
           " differ in rank");
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = storage();
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = dtype();
  return Tensor(std::move(impl));
}

Tensor& Tensor::requires_grad_(bool value) {
  HD_CHECK(is_leaf(), "requires_grad_: ", str(),
           " is not a leaf; its requires_grad follows from the op that made it (use detach())");
  HD_CHECK(!value || is_floating(dtype()), "requires_grad_: only floating-point tensors can ",
           "require gradients, got ", str());
  impl().requires_grad = value;
  return *this;
}

Tensor Tensor::detach() const {
  Tensor t = as_strided(shape(), strides(), offset());
  t.impl().name = name();
  return t;
}

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  run_backward({*this}, {gradient}, retain_graph);
}

}  // namespace hd
