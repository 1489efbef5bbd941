// Normalisation layers' ops over the last dim, with fused forward and backward kernels.
#pragma once

#include "autograd/tensor.h"

namespace hd {

// y = (x - mean) / sqrt(var + eps) * weight + bias over the last dim (biased variance, as
// PyTorch). weight and bias are [C] and may be undefined (no affine).
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);
// y = x / sqrt(mean(x^2) + eps) * weight over the last dim; weight may be undefined.
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps = 1e-6);

// The fused backward kernels as ops without autograd (ggml-style; the autograd nodes call
// them). mean and rstd are the per-row statistics of the forward (shape [rows], rows =
// x.numel() / C). gw and gb come back undefined unless asked for.
struct NormGrads {
  Tensor gx, gw, gb;
};
NormGrads layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& mean,
                              const Tensor& rstd, const Tensor& weight, bool need_weight,
                              bool need_bias);
NormGrads rms_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& rstd,
                            const Tensor& weight, bool need_weight);

}  // namespace hd
