// 2-D convolution for what the models use: patch embedding (kernel = stride, 14 and 28),
// depthwise 7x7 with padding 3 (ConvNeXt), 1x1. NCHW layout, as PyTorch.
#pragma once

#include "autograd/tensor.h"

namespace hd {

// x [B, Cin, H, W], weight [Cout, Cin/groups, kh, kw], bias [Cout] or undefined.
// groups == 1 or groups == Cin == Cout (depthwise). x and weight share a dtype, except that a
// patch convolution (kernel = stride, no padding) takes any float x: its patches are converted
// to the weight's dtype as they are gathered (an f32 image into a bf16 model).
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride = 1,
              int64_t padding = 0, int64_t groups = 1);

// The pieces conv2d is built from, exposed for tests and for callers that run a conv only at
// some locations (PS3's selected-patch embedding).
//
// im2col as a differentiable op: x [B, C, H, W] -> [B, C * kh * kw, oh * ow], rows ordered
// (c, ky, kx) like weight.reshape(Cout, -1); zero where padded. Gradient: fold2d.
Tensor unfold2d(const Tensor& x, int64_t kh, int64_t kw, int64_t stride = 1, int64_t padding = 0);
// col2im, the adjoint of unfold2d (no autograd): sums cols back into [B, C, H, W].
Tensor fold2d(const Tensor& cols, const Shape& input_shape, int64_t kh, int64_t kw,
              int64_t stride = 1, int64_t padding = 0);
// Depthwise conv kernels as ops without autograd (weight [C, 1, kh, kw]); conv2d's depthwise
// backward calls the last two.
Tensor depthwise_conv2d_forward(const Tensor& x, const Tensor& weight, int64_t stride,
                                int64_t padding);
Tensor depthwise_conv2d_backward_input(const Tensor& grad_out, const Tensor& weight,
                                       const Shape& input_shape, int64_t stride, int64_t padding);
Tensor depthwise_conv2d_backward_weight(const Tensor& grad_out, const Tensor& x,
                                        const Shape& weight_shape, int64_t stride, int64_t padding);

}  // namespace hd
