// Softmax and log-softmax along one dim, with fused backward kernels
// (gx = y * (g - sum(g*y)) and gx = g - exp(y) * sum(g)).
#pragma once

#include "autograd/tensor.h"

namespace hd {

Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);

}  // namespace hd
