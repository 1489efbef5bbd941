// Normalisation layers' ops over the last dim, with fused forward and backward kernels.
#pragma once

#include "autograd/tensor.h"

namespace hd {

// y = (x - mean) / sqrt(var + eps) * weight + bias over the last dim (biased variance, as
// PyTorch). weight and bias are [C] and may be undefined (no affine).
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);
// y = x / sqrt(mean(x^2) + eps) * weight over the last dim; weight may be undefined.
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps = 1e-6);

}  // namespace hd
