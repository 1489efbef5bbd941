// CPU kernel for adaptive max pooling (the linear resampling modes need none: they are matmuls
// with host-built weight matrices, see ops/resample.cpp).
#pragma once

#include <cstdint>

#include "autograd/tensor.h"

namespace hd::cpu {

// x contiguous [planes, h, w] -> values [planes, oh, ow], indices (i64, flat y * w + x within
// the plane) [planes, oh, ow]. Window i covers [floor(i * in / out), ceil((i + 1) * in / out)).
// The first maximum in row-major window order wins; NaN wins over numbers (PyTorch's rule).
void adaptive_max_pool2d(const Tensor& x, int64_t planes, int64_t h, int64_t w, int64_t oh,
                         int64_t ow, Tensor& values, Tensor& indices);

}  // namespace hd::cpu
