// Softmax and log-softmax along one dim, with fused backward kernels
// (gx = y * (g - sum(g*y)) and gx = g - exp(y) * sum(g)).
#pragma once

#include "autograd/tensor.h"

namespace hd {

Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);

// The fused backward kernels as ops without autograd (ggml-style; the autograd nodes call
// them): y is the forward output, gy the gradient w.r.t. it; returns the gradient w.r.t. x.
Tensor softmax_backward(const Tensor& y, const Tensor& gy, int64_t dim);
Tensor log_softmax_backward(const Tensor& y, const Tensor& gy, int64_t dim);

}  // namespace hd
