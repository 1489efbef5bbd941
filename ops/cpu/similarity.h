// CPU kernels of the fused cosine similarity over the last dim (ops/similarity.h): one pass over
// each operand forward, one backward, where the composite of maps and sums made ten.
#pragma once

#include "autograd/tensor.h"

namespace hd::cpu {

// a and b: views of one shape [..., C] (leading dims may be broadcast, stride 0; unit last
// stride), floating. out [...] contiguous in a's dtype: w12 / sqrt(max(w1 w2, eps^2)) per row
// with w12 = a . b, w1 = |a|^2, w2 = |b|^2 summed in the compute type (f32, or f64 for f64);
// stats [..., 3] contiguous in the compute type: (w12, w1, w2) per row, for backward.
void cosine_forward(const Tensor& a, const Tensor& b, double eps, Tensor& out, Tensor& stats);

// g [...] (any strides): the upstream gradient. ga, gb: contiguous [..., C] in a's dtype, the
// gradients of the rows as given (the caller sums broadcast rows):
//   ga = g / n * (b - [w1 w2 > eps^2] cos (w2 / n) a),  gb likewise with a, b and w1, w2 swapped,
// n = sqrt(max(w1 w2, eps^2)), cos = w12 / n.
void cosine_backward(const Tensor& a, const Tensor& b, const Tensor& g, const Tensor& stats,
                     double eps, Tensor& ga, Tensor& gb);

}  // namespace hd::cpu
