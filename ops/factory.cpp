#include "ops/factory.h"

#include <cmath>
#include <cstring>

#include "ops/cpu/elementwise.h"
#include "ops/cpu/random.h"
#include "ops/cuda/kernels.h"
#include "ops/dispatch.h"
#include "ops/shape.h"

namespace hd {

Tensor empty(const Shape& shape, DType dtype, Device device) {
  return Tensor::empty(shape, dtype, device);
}

Tensor full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = Tensor::empty(shape, dtype, device);
  dispatch(
      t, "full", [&] { cpu::fill(t, value); }, HD_CUDA_KERNEL(cuda::fill(t, value)));
  return t;
}
Tensor zeros(const Shape& shape, DType dtype, Device device) {
  return full(shape, 0.0, dtype, device);
}
Tensor ones(const Shape& shape, DType dtype, Device device) {
  return full(shape, 1.0, dtype, device);
}
Tensor empty_like(const Tensor& t) {
  return Tensor::empty(t.shape(), t.dtype(), t.device());
}
Tensor zeros_like(const Tensor& t) {
  return zeros(t.shape(), t.dtype(), t.device());
}
Tensor ones_like(const Tensor& t) {
  return ones(t.shape(), t.dtype(), t.device());
}
Tensor full_like(const Tensor& t, double value) {
  return full(t.shape(), value, t.dtype(), t.device());
}

Tensor arange(double start, double end, double step, DType dtype, Device device) {
  HD_CHECK(step != 0, "arange: step must be non-zero");
  int64_t n = std::max<int64_t>(0, int64_t(std::ceil((end - start) / step)));
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = start + double(i) * step;
  return from_vector(v, {n}, dtype, device);
}

Tensor eye(int64_t n, DType dtype, Device device) {
  std::vector<double> v(size_t(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) v[size_t(i * n + i)] = 1.0;
  return from_vector(v, {n, n}, dtype, device);
}

template <class T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, DType dtype, Device device) {
  HD_CHECK(int64_t(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
           " values for shape ", shape, " (", shape_numel(shape), " elements)");
  Tensor host = Tensor::empty(shape, dtype_of<T>(), Device::cpu());
  if (!values.empty()) std::memcpy(host.raw_data(), values.data(), values.size() * sizeof(T));
  if (dtype != dtype_of<T>()) {
    Tensor converted = Tensor::empty(shape, dtype, Device::cpu());
    cpu::copy(host, converted);
    host = converted;
  }
  return device == Device::cpu() ? host : to(host, device);  // built on the host, then moved
}
template Tensor from_vector(const std::vector<float>&, const Shape&, DType, Device);
template Tensor from_vector(const std::vector<double>&, const Shape&, DType, Device);
template Tensor from_vector(const std::vector<int32_t>&, const Shape&, DType, Device);
template Tensor from_vector(const std::vector<int64_t>&, const Shape&, DType, Device);

Tensor from_vector(const std::vector<bool>& values, const Shape& shape, DType dtype,
                   Device device) {
  std::vector<int32_t> v(values.begin(), values.end());
  return from_vector(v, shape, dtype, device);
}

Tensor scalar_tensor(double value, DType dtype, Device device) {
  return full({}, value, dtype, device);
}

namespace {
// Random fills of device tensors draw on the host with the same Philox stream and copy the
// bits over: a model initialises bit-identically on the CPU and on any GPU (init is not hot).
template <class F>
void fill_via_host([[maybe_unused]] Tensor& t, [[maybe_unused]] F&& fill_host) {
#ifdef HD_HAVE_CUDA
  Tensor host = Tensor::empty(t.shape(), t.dtype(), Device::cpu());
  fill_host(host);
  cuda::copy(to(host, t.device()), t);
#endif
}
}  // namespace

void uniform_(Tensor& t, double lo, double hi, Generator& gen) {
  HD_CHECK(t.is_contiguous(), "uniform_: needs a contiguous tensor, got ", t.str());
  uint64_t per_block = t.dtype() == DType::f64 ? 2 : 4;
  uint64_t first = gen.advance((uint64_t(t.numel()) + per_block - 1) / per_block);
  dispatch(
      t, "uniform_", [&] { cpu::fill_uniform(t, lo, hi, gen, first); },
      HD_CUDA_KERNEL(
          fill_via_host(t, [&](Tensor& h) { cpu::fill_uniform(h, lo, hi, gen, first); })));
  t.bump_version();
}

void normal_(Tensor& t, double mean, double stddev, Generator& gen) {
  HD_CHECK(t.is_contiguous(), "normal_: needs a contiguous tensor, got ", t.str());
  uint64_t per_block = t.dtype() == DType::f64 ? 1 : 2;
  uint64_t first = gen.advance((uint64_t(t.numel()) + per_block - 1) / per_block);
  dispatch(
      t, "normal_", [&] { cpu::fill_normal(t, mean, stddev, gen, first); },
      HD_CUDA_KERNEL(
          fill_via_host(t, [&](Tensor& h) { cpu::fill_normal(h, mean, stddev, gen, first); })));
  t.bump_version();
}

Tensor uniform(const Shape& shape, double lo, double hi, Generator& gen, DType dtype,
               Device device) {
  Tensor t = Tensor::empty(shape, dtype, device);
  uniform_(t, lo, hi, gen);
  return t;
}

Tensor normal(const Shape& shape, double mean, double stddev, Generator& gen, DType dtype,
              Device device) {
  Tensor t = Tensor::empty(shape, dtype, device);
  normal_(t, mean, stddev, gen);
  return t;
}

}  // namespace hd
