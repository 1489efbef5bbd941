// Resampling of [..., H, W] tensors, each rule exactly as PyTorch computes it (the PS3 notes,
// ps3-reference-implementation.md §1.3 and §7, say which is used where):
//  * bicubic, antialias off: Keys cubic a = -0.75, align_corners=False, border indices clamped.
//  * bicubic, antialias on: Pillow-style kernel a = -0.5, support scaled by the downsampling
//    factor, taps outside the image dropped and weights renormalised.
//  * bilinear (antialias off/on), nearest (legacy floor rule src = floor(dst * in / out)),
//    area (= adaptive average pooling), adaptive max pooling.
// Linear rules are separable: they are applied as two matmuls with per-axis weight matrices,
// so their gradients are matmuls too.
#pragma once

#include "autograd/tensor.h"
#include "ops/reduce.h"

namespace hd {

enum class ResampleMode { nearest, bilinear, bicubic, area };

Tensor interpolate(const Tensor& x, int64_t out_h, int64_t out_w, ResampleMode mode,
                   bool antialias = false);
Tensor adaptive_avg_pool2d(const Tensor& x, int64_t out_h, int64_t out_w);
// Values and the flat (h * W + w) index of each max, PyTorch rule for windows:
// [floor(i * in / out), ceil((i + 1) * in / out)).
ValuesIndices adaptive_max_pool2d(const Tensor& x, int64_t out_h, int64_t out_w);
// The [out, in] weight matrix of one axis for a linear mode (exposed for tests and for callers
// that resample many tensors of one size).
Tensor resample_weights(int64_t in, int64_t out, ResampleMode mode, bool antialias,
                        DType dtype = DType::f32);

}  // namespace hd
