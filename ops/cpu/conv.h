// CPU kernels for conv2d (NCHW): im2col/col2im for the general path and direct depthwise
// kernels. All tensors contiguous; f32/f64. No autograd (ops/conv.cpp builds the graph).
//
// Every kernel writes each output element from one task in a fixed order, so results do not
// depend on the thread count: forward/backward-input split over (batch, channel) planes,
// backward-weight over channels (each summing its batches in order).
#pragma once

#include <cstdint>

#include "autograd/tensor.h"

namespace hd::cpu {

struct Conv2dGeometry {
  int64_t batch = 0, channels = 0, h = 0, w = 0;  // input (channels = input channels)
  int64_t kh = 0, kw = 0, stride = 1, pad = 0;
  int64_t oh = 0, ow = 0;  // output spatial size
};

// x [B, C, H, W] -> cols [B, C * kh * kw, oh * ow] (row (c, ky, kx), zero where padded).
void im2col(const Tensor& x, const Conv2dGeometry& g, Tensor& cols);
// The adjoint: cols [B, C * kh * kw, oh * ow] summed back into out [B, C, H, W] (overwritten).
void col2im(const Tensor& cols, const Conv2dGeometry& g, Tensor& out);

// The patches of a stride-k k x k convolution: x [B, C, H, W] (unit last stride, any others)
// -> out [B, (H/k) * (W/k), C * k * k] contiguous, each patch's values in (c, ky, kx) order (rows
// and columns past the last whole patch dropped). out's dtype may differ from x's (f32 -> bf16:
// the conversion is this copy). x's rows are read in order, a task per (image, patch row).
void gather_patches(const Tensor& x, int64_t k, Tensor& out);

// Depthwise (one filter per channel): weight [C, 1, kh, kw].
void depthwise_forward(const Tensor& x, const Tensor& weight, const Conv2dGeometry& g, Tensor& out);
// grad_out [B, C, oh, ow] -> grad_x [B, C, H, W] (overwritten).
void depthwise_backward_input(const Tensor& grad_out, const Tensor& weight, const Conv2dGeometry& g,
                              Tensor& grad_x);
// grad_out [B, C, oh, ow], x -> grad_weight [C, 1, kh, kw] (overwritten).
void depthwise_backward_weight(const Tensor& grad_out, const Tensor& x, const Conv2dGeometry& g,
                               Tensor& grad_weight);

}  // namespace hd::cpu
