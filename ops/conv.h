// 2-D convolution for what the models use: patch embedding (kernel = stride, 14 and 28),
// depthwise 7x7 with padding 3 (ConvNeXt), 1x1. NCHW layout, as PyTorch.
#pragma once

#include "autograd/tensor.h"

namespace hd {

// x [B, Cin, H, W], weight [Cout, Cin/groups, kh, kw], bias [Cout] or undefined.
// groups == 1 or groups == Cin == Cout (depthwise).
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride = 1,
              int64_t padding = 0, int64_t groups = 1);

}  // namespace hd
