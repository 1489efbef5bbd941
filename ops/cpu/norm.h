// CPU kernels for layer_norm and rms_norm over the last dim. x is contiguous [rows, C]; weight
// and bias are contiguous [C] or undefined; the per-row statistics (mean, rstd: [rows], dtype of
// x) are written by the forward and reused by the backward.
#pragma once

#include "autograd/tensor.h"

namespace hd::cpu {

// center = true: layer norm (subtract the mean; `mean` is written). center = false: RMS norm
// (`mean` is ignored and may be undefined; bias must be undefined).
void norm_forward(bool center, const Tensor& x, const Tensor& weight, const Tensor& bias,
                  double eps, Tensor& y, Tensor& mean, Tensor& rstd);
// gx from gy; gw/gb (when non-null) are sums over rows, computed in fixed 64-row blocks whose
// partials are added in block order, so they do not depend on the thread count.
void norm_backward(bool center, const Tensor& gy, const Tensor& x, const Tensor& mean,
                   const Tensor& rstd, const Tensor& weight, Tensor& gx, Tensor* gw, Tensor* gb);

}  // namespace hd::cpu
