// bf16 attention on the CPU's bf16 dot-product instruction (vdpbf16ps, AVX512_BF16), for head
// dims 16, 32 and 64.
//
// Why a kernel of its own: through the tiled path (ops/cpu/attention.h) each tile is a few
// oneDNN GEMM calls, and with small heads every tile product has a dimension equal to the head
// dim: QK^T is [q, D] x [D, k] and PV is [q, k] x [k, D]. At D = 16 (PS3's demo model, width 64
// and 4 heads, and its text tower) oneDNN ran them at 180-275 GFLOP/s on a Zen 4 EPYC, and the
// bf16 demo step spent 43 of its ~99 ms in attention; at D = 64 (the tiny ViT of the benchmarks)
// fwd+bwd reached 255 GFLOP/s, and the per-score passes over L2-sized tiles cost as much again.
// Here the products are register-blocked AVX512_BF16 code laid out for 16-lane vectors:
// vdpbf16ps multiplies 16 pairs of bf16 and adds them into 16 f32 lanes, so
// - QK^T and dO V^T put keys on the lanes: K is repacked once per matrix so that a vector holds
//   one pair of head dims for 16 keys, and each query's pair is a broadcast (D / 2 instructions
//   give 16 scores);
// - PV and dS K put head dims on the lanes: V (and K) repacked as pairs of keys;
// - dK = dS^T Q and dV = P^T dO read the f32 tiles two query rows at a time, rounded and
//   interleaved into pairs (one convert, one permute per 16 keys). At D = 16 they keep key-major
//   accumulators [16 dims][16 keys] and are transposed once per matrix at the end; wider heads
//   would need D such accumulators, so they store the interleaved pairs and accumulate rows of D
//   dims for a few keys at a time instead.
// Each score block goes through an epilogue (masked scores and running max, P, dS) instead of a
// second pass over the tile, and the forward keeps a 4-row group's tiles in L1. Scores, softmax
// statistics and accumulators are f32; P and dS enter their products rounded to bf16, as the
// tiled oneDNN path does. Semantics are those of AttentionArgs (prefix keys always visible,
// causal on own keys, key mask, a query with no visible key gets zeros and lse = +inf).
//
// Determinism: forward tasks are (matrix, 32-query tile), backward tasks whole matrices (dK and
// dV sum over every query); each value is summed in one fixed order, so results do not depend on
// the thread count.
#pragma once

#include <cstdint>

#include "autograd/tensor.h"
#include "ops/cpu/attention.h"

namespace hd::cpu {

// Whether the kernels below run this attention: bf16 operands, Dh = Dv in {16, 32, 64}, a CPU with
// AVX512_BF16 (and AVX-512 kernels not turned off, ops/cpu/isa.h), blocks.dpbf16 not 0 and, in
// auto mode (-1), no tile sizes forced (tests that force tiles mean the tiled path).
bool attention_dpbf16_applies(DType dtype, int64_t Dh, int64_t Dv, const AttentionBlocks& blocks);

// Same contracts as attention_forward / attention_backward (ops/cpu/attention.h), for operands
// where attention_dpbf16_applies.
void attention_dpbf16_forward(const AttentionArgs& args, Tensor& out, Tensor& lse);
void attention_dpbf16_backward(const AttentionArgs& args, const Tensor& out, const Tensor& lse,
                               const Tensor& grad_out, Tensor& dq, Tensor& dk, Tensor& dv,
                               Tensor& dprefix_k, Tensor& dprefix_v);

}  // namespace hd::cpu
