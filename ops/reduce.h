// Reductions. Sums accumulate in double (f32 inputs) and in a fixed order, so results are
// bit-identical for any thread count.
#pragma once

#include <vector>

#include "autograd/tensor.h"

namespace hd {

struct ValuesIndices {
  Tensor values, indices;  // indices are i64
};

Tensor sum(const Tensor& x);  // all elements -> scalar (ints and bool sum to i64)
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
ValuesIndices max(const Tensor& x, int64_t dim, bool keepdim = false);
ValuesIndices min(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor amax(const Tensor& x);  // max over all elements (gradient to the first maximum)
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor logsumexp(const Tensor& x, int64_t dim, bool keepdim = false);
// Sums `x` down to `shape` (the inverse of broadcasting), for gradients of broadcast ops.
Tensor sum_to(const Tensor& x, const Shape& shape);

}  // namespace hd
