// CPU kernels for softmax / log-softmax, forward and backward. Every tensor is contiguous and
// read as [outer, n, inner], the softmax running along n.
#pragma once

#include "autograd/tensor.h"

namespace hd::cpu {

// y = softmax(x) or log_softmax(x) along n.
void softmax_forward(const Tensor& x, Tensor& y, int64_t outer, int64_t n, int64_t inner, bool log);
// From the forward output y and the upstream gradient gy:
//   softmax:     gx = y * (gy - sum(gy * y))
//   log_softmax: gx = gy - exp(y) * sum(gy)
void softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx, int64_t outer, int64_t n,
                      int64_t inner, bool log);

}  // namespace hd::cpu
