// Flash-attention kernels on the CPU (forward and FlashAttention-2 backward): f32, f64, and bf16
// operands with f32 compute.
//
// Memory: each task holds one [q_block, k_block] tile of scores (plus one of dP in backward);
// the full [Nq, Nk] matrix never exists. Block products go through single-threaded cpu::gemm
// inside pool tasks. Every output element is accumulated by one task in a fixed order, so
// results are bit-identical for any thread count. bf16 operands with head dims 16, 32 or 64 on a
// CPU with AVX512_BF16 go to the register-blocked kernel of attention_dpbf16.h instead (same
// contract).
#pragma once

#include <cstdint>

#include "autograd/tensor.h"

namespace hd::cpu {

struct AttentionBlocks {
  // 0: by operands. 64 (64 x 256 f32 scores = 64 KiB: the tile and its dP twin stay in L2 with
  // the K/V blocks), except for bf16 tiles on oneDNN: 128 (half the oneDNN calls, each twice as
  // tall; fwd+bwd at [8, 3, 729, 64] 41.4 -> 40.1 ms, at PS3's [2, 4, 729, 16] 6.42 -> 6.25 ms,
  // the bf16 ViT step 571 -> 563 ms, medians of interleaved runs on a Zen 4 EPYC).
  int64_t q = 0;
  // 0: by operands. 256, except for bf16 tiles on oneDNN: 768 (one key tile at 729 tokens, a
  // third of the oneDNN calls; bf16 attention fwd+bwd at [8, 3, 729, 64] 44-46 -> 42-45 ms and
  // the bf16 ViT step 2-3 % faster on a Zen 4 EPYC, while f32 on OpenBLAS was 1-10 % slower).
  int64_t k = 0;
  // Backward scheme: -1 picks by thread count, 0 one task per (batch, head), 1 separate dK/dV
  // and dQ passes. Forced only by tests, to check the two agree bit for bit.
  int split = -1;
  // bf16 operands: 1 read in place by bf16 tile products, 0 widened to f32 copies up front, -1
  // in place where oneDNN has bf16 products on this CPU (elsewhere each tile would be widened
  // again for every tile it meets, slower than one copy). Forced only by tests.
  int bf16_tiles = -1;
  // bf16 operands with head dims 16, 32, 64 on a CPU with AVX512_BF16: 1 the kernel of
  // ops/cpu/attention_dpbf16.h, 0 the tiled path here, -1 that kernel unless a test forces tile
  // sizes or bf16_tiles (the demo's attention fwd+bwd: see attention_dpbf16.h).
  int dpbf16 = -1;
};

// Operands as prepared by the frontend: q [B, H, Nq, Dh], k [B, H, Nk, Dh], v [B, H, Nk, Dv],
// prefix_k/prefix_v [B, H, Np, D*] or undefined, all with a unit stride in the last dim (any
// other strides, so permuted views need no copy); key_mask contiguous bool [B, Np + Nk] or
// undefined. scale is the final (non-zero) scale. Operands are f32, f64 or bf16; bf16 ones are
// read in place by bf16 tile products (ops/cpu/gemm.h) with scores, softmax statistics and
// accumulators in f32, and then out and the gradients below are bf16 too (accumulated in f32
// per task and rounded once), lse f32.
struct AttentionArgs {
  Tensor q, k, v, prefix_k, prefix_v, key_mask;
  double scale = 1.0;
  bool causal = false;
  AttentionBlocks blocks;
};

// out: [B, H, Nq, Dv] with a unit last stride (contiguous, or heads-last: [B, Nq, H, Dv] memory);
// lse: contiguous [B, H, Nq], the per-row logsumexp of the
// scaled, masked scores (+inf for a row with no visible key, whose output is zero).
void attention_forward(const AttentionArgs& args, Tensor& out, Tensor& lse);

// grad_out and out [B, H, Nq, Dv] with a unit last stride, in the operands' dtype. Writes
// dq, dk, dv and, when the args have a prefix, dprefix_k and dprefix_v (all allocated by the
// caller, overwritten): contiguous, or with any strides and a unit last stride where
// attention_backward_writes_views says so.
void attention_backward(const AttentionArgs& args, const Tensor& out, const Tensor& lse,
                        const Tensor& grad_out, Tensor& dq, Tensor& dk, Tensor& dv,
                        Tensor& dprefix_k, Tensor& dprefix_v);
// Whether attention_backward writes gradients laid out as views (the bf16 dot-product kernel).
bool attention_backward_writes_views(const AttentionArgs& args);

}  // namespace hd::cpu
