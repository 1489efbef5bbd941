// bf16 attention with 16-wide heads, on the CPU's bf16 dot-product instruction (AVX512_BF16).
//
// Why a kernel of its own: PS3's demo model (width 64, 4 heads) and its text tower attend with
// head dim 16. Through the tiled path (ops/cpu/attention.h) every tile product then has an inner
// or outer dimension of 16: QK^T is [q, 16] x [16, k] and PV is [q, k] x [k, 16], shapes for which
// oneDNN's GEMMs run at 180-275 GFLOP/s on a Zen 4 EPYC, and the bf16 demo step spent 43 of its
// ~99 ms in attention. Here the products are register-blocked AVX512_BF16 code laid out for
// those 16 lanes: vdpbf16ps multiplies 16 pairs of bf16 and adds them into 16 f32 lanes, so
// - QK^T and dO V^T put keys on the lanes: K is repacked once per matrix so that a vector holds
//   one pair of head dims for 16 keys, and each query's pair is a broadcast (8 instructions
//   give 16 scores);
// - PV, dS K put head dims on the lanes: V (and K) repacked as pairs of keys;
// - dK = dS^T Q and dV = P^T dO keep key-major accumulators [16 dims][keys] and read the tiles
//   two query rows at a time, interleaved into pairs on the fly (one convert, one permute per 16
//   products); they are transposed once per matrix at the end.
// Scores, softmax statistics and accumulators are f32; P and dS enter their products rounded to
// bf16, as the tiled oneDNN path does. Semantics are those of AttentionArgs (prefix keys always
// visible, causal on own keys, key mask, a query with no visible key gets zeros and lse = +inf).
//
// Determinism: forward tasks are (matrix, 32-query tile), backward tasks whole matrices (dK and
// dV sum over every query); each value is summed in one fixed order, so results do not depend on
// the thread count.
#pragma once

#include <cstdint>

#include "autograd/tensor.h"
#include "ops/cpu/attention.h"

namespace hd::cpu {

// Whether the kernels below run this attention: bf16 operands, Dh = Dv = 16, a CPU with
// AVX512_BF16 (and AVX-512 kernels not turned off, ops/cpu/isa.h), blocks.head16 not 0 and, in
// auto mode (-1), no tile sizes forced (tests that force tiles mean the tiled path).
bool attention_head16_applies(DType dtype, int64_t Dh, int64_t Dv, const AttentionBlocks& blocks);

// Same contracts as attention_forward / attention_backward (ops/cpu/attention.h), for operands
// where attention_head16_applies.
void attention_head16_forward(const AttentionArgs& args, Tensor& out, Tensor& lse);
void attention_head16_backward(const AttentionArgs& args, const Tensor& out, const Tensor& lse,
                               const Tensor& grad_out, Tensor& dq, Tensor& dk, Tensor& dv,
                               Tensor& dprefix_k, Tensor& dprefix_v);

}  // namespace hd::cpu
