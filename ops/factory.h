// Tensor factories: constants, ranges, host data, and counter-based random values.
#pragma once

#include <vector>

#include "autograd/random.h"
#include "autograd/tensor.h"

namespace hd {

Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
Tensor full(const Shape& shape, double value, DType dtype = DType::f32,
            Device device = Device::cpu());
Tensor empty_like(const Tensor& t);
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor full_like(const Tensor& t, double value);
// [start, end) step `step`.
Tensor arange(double start, double end, double step = 1.0, DType dtype = DType::i64,
              Device device = Device::cpu());
Tensor eye(int64_t n, DType dtype = DType::f32, Device device = Device::cpu());

// A tensor holding a copy of host values (converted to dtype); numel(shape) must match.
template <class T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, DType dtype = dtype_of<T>(),
                   Device device = Device::cpu());
Tensor from_vector(const std::vector<bool>& values, const Shape& shape,
                   DType dtype = DType::boolean, Device device = Device::cpu());
Tensor scalar_tensor(double value, DType dtype = DType::f32, Device device = Device::cpu());

// Random values from `gen` (advances gen.offset). Element i depends only on (gen, i), so the
// result is the same for any thread count. Floating-point dtypes only.
Tensor uniform(const Shape& shape, double lo, double hi, Generator& gen, DType dtype = DType::f32,
               Device device = Device::cpu());
Tensor normal(const Shape& shape, double mean, double stddev, Generator& gen,
              DType dtype = DType::f32, Device device = Device::cpu());
// In-place variants, for initialising parameters.
void uniform_(Tensor& t, double lo, double hi, Generator& gen);
void normal_(Tensor& t, double mean, double stddev, Generator& gen);

}  // namespace hd
