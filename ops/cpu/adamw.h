#pragma once

#include <cstdint>

#include "autograd/tensor.h"

namespace hd::cpu {

struct AdamWStep {
  double lr, beta1, beta2, eps, weight_decay;
  int64_t step;  // 1-based, after increment
};

// One fused pass over contiguous param/grad/exp_avg/exp_avg_sq (same dtype), in PyTorch's
// order: p *= 1 - lr wd; m = lerp(m, g, 1 - b1); v = b2 v + (1 - b2) g^2;
// p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
void adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                const AdamWStep& s);

}  // namespace hd::cpu
