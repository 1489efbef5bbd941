// Scaled-dot-product attention, blockwise with an online softmax (flash-attention style), so
// memory holds one block of scores per task, never the whole [Nq, Nk] matrix.
#pragma once

#include "autograd/tensor.h"

namespace hd {

struct AttentionOptions {
  double scale = 0;     // 0 -> 1/sqrt(head_dim)
  bool causal = false;  // query i sees own keys j <= i (+ offset, see below)
  // Keys/values prefix: queries attend to [prefix_k ; k] (PS3's low-res KV cache). Causality
  // applies to own keys only: the whole prefix is visible to every query.
  Tensor prefix_k, prefix_v;  // [B, H, Np, Dh] or undefined
  // Boolean key mask [B, Nk_total] (prefix keys first): false keys are ignored. A query whose
  // keys are all masked gets zeros (and zero gradient), not NaN.
  Tensor key_mask;
};

// q [B, H, Nq, Dh], k and v [B, H, Nk, Dh] (v may have another head dim Dv) -> [B, H, Nq, Dv].
// Gradients flow to q, k, v and the prefix k/v. f32 and f64; bf16/f16 computed in f32 (on the
// CPU: bf16 read in place by bf16 tile products where oneDNN has them, or with head dims 16/32/64
// on AVX512_BF16 by ops/cpu/attention_dpbf16.h's kernel; otherwise through converted copies,
// ops/cpu_half.h).
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const AttentionOptions& options = {});

}  // namespace hd

namespace hd::detail {

// scaled_dot_product_attention with explicit tile sizes and backward scheme (split: -1 auto,
// 0 one task per (batch, head), 1 separate dK/dV and dQ passes). For tests: tiny tiles cover
// partial tiles and tile boundaries at the prefix; both schemes must agree bit for bit.
Tensor scaled_dot_product_attention_tiled(const Tensor& q, const Tensor& k, const Tensor& v,
                                          const AttentionOptions& options, int64_t q_block,
                                          int64_t k_block, int split = -1);

// scaled_dot_product_attention on bf16 CPU tensors with the kernel's choice made explicit:
// in_tiles reads q, k and v in place with bf16 tile products (what CPUs with oneDNN bf16
// products do), otherwise f32 copies are made up front (what other CPUs do). For tests: both
// ways on any CPU.
Tensor scaled_dot_product_attention_bf16(const Tensor& q, const Tensor& k, const Tensor& v,
                                         const AttentionOptions& options, bool in_tiles,
                                         int64_t q_block = 64, int64_t k_block = 256);

// scaled_dot_product_attention on bf16 CPU tensors with head dims 16, 32 or 64, through the
// register-blocked AVX512_BF16 kernel (ops/cpu/attention_dpbf16.h, on = true) or the tiled path
// (false). For tests; on = true throws where that kernel cannot run (other dtypes or head dims,
// a CPU without AVX512_BF16).
Tensor scaled_dot_product_attention_dpbf16(const Tensor& q, const Tensor& k, const Tensor& v,
                                           const AttentionOptions& options, bool on);

// Attention composed from matmul, softmax and where, differentiable through them: the plain
// softmax(QK^T)V reference for the fused kernels (tests on every device, the GPU benchmark's
// baseline). Runs on any device.
Tensor attention_composed(const Tensor& q, const Tensor& k, const Tensor& v,
                          const AttentionOptions& options);

}  // namespace hd::detail
