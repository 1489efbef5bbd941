// Rotary position embedding (RoPE, rotate-half convention of Llama/Qwen in HF transformers).
#pragma once

#include "autograd/tensor.h"

namespace hd {

// cos and sin tables [N, Dh] for positions 0..N-1: angle(p, i) = p * base^(-2 (i mod Dh/2) / Dh)
// duplicated over the two halves (HF convention).
struct RopeTables {
  Tensor cos, sin;
};
RopeTables rope_tables(int64_t positions, int64_t head_dim, double base = 10000.0,
                       DType dtype = DType::f32);
// x [..., N, Dh] -> x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1].
Tensor apply_rope(const Tensor& x, const RopeTables& tables);

}  // namespace hd
