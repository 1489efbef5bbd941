// bf16 attention on AVX512_BF16's dot products (see the header for the layouts and why).
//
// Here: the operands' packing, the mask bias and the task drivers (the forward's row groups
// and the backward's per-matrix loop are compiled for AVX-512 too, HD_DPBF16_TARGET); the
// products, epilogues and softmax passes are in attention_dpbf16_kernels.h.
#include "ops/cpu/attention_dpbf16.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "autograd/error.h"
#include "autograd/thread_pool.h"
#include "ops/cpu/attention_dpbf16_kernels.h"
#include "ops/cpu/isa.h"

// GCC 12's _mm512_reduce_* warnings again, where the kernels are inlined into the drivers below.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace hd::cpu {
namespace {

using namespace dpbf16;

constexpr int64_t kQTile = 32;    // queries per tile: forward task, backward step
constexpr int64_t kKTile = 1024;  // keys per score tile (PS3: 729 and 729 + 256 keys: one tile)

int64_t round_up16(int64_t n) {
  return (n + 15) / 16 * 16;
}

// A [B, H, N, D] bf16 tensor with a unit last stride; rows ld apart (permuted views welcome).
// Gradients are written through the same description (OutRows), so they may be views too.
template <class Element>
struct RowsOf {
  Element* base = nullptr;
  int64_t sb = 0, sh = 0, ld = 0;
  RowsOf() = default;
  explicit RowsOf(const Tensor& t)
      : base(const_cast<Element*>(t.data<bf16_t>())),
        sb(t.stride(0)),
        sh(t.stride(1)),
        ld(t.size(2) > 1 ? t.stride(2) : t.size(3)) {}
  Element* at(int64_t b, int64_t h) const { return base + b * sb + h * sh; }
};
using Rows = RowsOf<const bf16_t>;
using OutRows = RowsOf<bf16_t>;

struct Problem {
  Rows q, k, v, pk, pv;
  int64_t B, H, Nq, Nk, Np, Nt, Ntp;
  const bool* mask = nullptr;  // [B, mask_ld] or null
  int64_t mask_ld = 0;
  bool causal;
  float scale;
  explicit Problem(const AttentionArgs& a)
      : q(a.q),
        k(a.k),
        v(a.v),
        B(a.q.size(0)),
        H(a.q.size(1)),
        Nq(a.q.size(2)),
        Nk(a.k.size(2)),
        Np(a.prefix_k.defined() ? a.prefix_k.size(2) : 0),
        causal(a.causal),
        scale(float(a.scale)) {
    if (Np > 0) {
      pk = Rows(a.prefix_k);
      pv = Rows(a.prefix_v);
    }
    Nt = Np + Nk;
    Ntp = round_up16(Nt);
    if (a.key_mask.defined()) {
      mask = a.key_mask.data<bool>();
      mask_ld = a.key_mask.size(1);
    }
  }
  // Key j of the concatenation [prefix ; own] for k (keys = true) or v.
  const bf16_t* key_row(bool keys, int64_t b, int64_t h, int64_t j) const {
    const Rows& own = keys ? k : v;
    const Rows& prefix = keys ? pk : pv;
    return j < Np ? prefix.at(b, h) + j * prefix.ld : own.at(b, h) + (j - Np) * own.ld;
  }
  // First key (absolute) hidden from query i by causality, or past the end.
  int64_t causal_end(int64_t i) const { return causal ? Np + i + 1 : Nt; }
  // A key tile starting at j0 that causality hides from all of queries [i0, i0 + nq).
  bool hidden_tile(int64_t j0, int64_t i0, int64_t nq) const {
    return causal && j0 >= causal_end(i0 + nq - 1);
  }
};

// Keys on lanes: dst[((j / 16) * D / 2 + p) * 16 + j % 16] = pair p of key j, zero past Nt. A
// vector of it holds one pair of head dims for 16 keys (the QK^T and dO V^T operand).
template <int D>
void pack_keys_on_lanes(const Problem& P, bool keys, int64_t b, int64_t h, uint32_t* dst) {
  constexpr int64_t kPairs = D / 2;
  std::fill_n(dst, P.Ntp * kPairs, 0u);
  for (int64_t j = 0; j < P.Nt; ++j) {
    const bf16_t* row = P.key_row(keys, b, h, j);
    for (int64_t p = 0; p < kPairs; ++p)
      dst[((j >> 4) * kPairs + p) * 16 + (j & 15)] = pair_at(row, p);
  }
}

// Rows in pairs, dims on lanes: dst[(r / 2) * D + d] = (x[r][d], x[r + 1][d]), zero past n. A
// vector of it is one pair of keys (PV, dS K) or of queries (dS^T Q, P^T dO) for 16 dims.
template <int D, class RowAt>
void pack_row_pairs(RowAt&& row_at, int64_t n, int64_t n_padded, uint32_t* dst) {
  std::fill_n(dst, n_padded / 2 * D, 0u);
  for (int64_t r = 0; r < n; ++r) {
    const bf16_t* row = row_at(r);
    for (int64_t d = 0; d < D; ++d)
      dst[(r >> 1) * D + d] |= uint32_t(row[d].bits) << (16 * (r & 1));
  }
}

// Additive bias of key tile [j0, j0 + nkp): 0 for a visible key, -inf for a masked one or
// padding.
void key_bias(const Problem& P, int64_t b, int64_t j0, int64_t nkp, float* bias) {
  const bool* m = P.mask ? P.mask + b * P.mask_ld : nullptr;
  for (int64_t c = 0; c < nkp; ++c) {
    const int64_t j = j0 + c;
    bias[c] = j < P.Nt && (!m || m[j]) ? 0.0f : -kInf;
  }
}

// ---- task drivers ----

uint32_t* as_words(Tensor& t) {
  return reinterpret_cast<uint32_t*>(t.data<int32_t>());
}

// Queries [i0, i0 + nq) of matrix (b, h), in groups of 4 rows: per key tile, the group's scores,
// their online softmax and its P V product, with the group's [4, tile] scores and probabilities
// in L1; then the normalised rows and their logsumexp. bias: the matrix's key bias (key_bias).
template <int D>
HD_DPBF16_TARGET void forward_tile(const Problem& P, int64_t b, int64_t h, int64_t i0, int64_t nq,
                                   const uint32_t* kt, const uint32_t* vp, const float* bias,
                                   float* S, bf16_t* P16, float* O, float* m, float* l,
                                   const OutRows& out, float* lse) {
  constexpr int64_t kPairs = D / 2;
  std::fill_n(m, nq, -kInf);
  std::fill_n(l, nq, 0.0f);
  std::fill_n(O, nq * D, 0.0f);
  const bf16_t* Q = P.q.at(b, h) + i0 * P.q.ld;
  for (int64_t g0 = 0; g0 < nq; g0 += 4) {
    const int64_t n = std::min<int64_t>(4, nq - g0);
    for (int64_t j0 = 0; j0 < P.Nt && !P.hidden_tile(j0, i0 + g0, n); j0 += kKTile) {
      const int64_t nkp = round_up16(std::min(kKTile, P.Nt - j0));
      MaskedScores ms{S, nkp, bias + j0, P.scale, P.causal_end(i0 + g0) - j0, 0, {}};
      for (__m512& v : ms.vmax) v = _mm512_set1_ps(-kInf);
      scores<D>(Q + g0 * P.q.ld, P.q.ld, n, kt + j0 * kPairs, nkp / 16, ms);
      softmax_tile_rows<D>(ms, n, nkp, P16, m + g0, l + g0, O + g0 * D);
      pair_product<D>(P16, nkp, n, nkp / 2, vp + j0 * kPairs, O + g0 * D);
    }
  }
  bf16_t* rows = out.base + b * out.sb + h * out.sh + i0 * out.ld;
  for (int64_t r = 0; r < nq; ++r) {
    float* o = O + r * D;
    if (l[r] == 0.0f) {  // no visible key: zeros, and +inf so backward's P = exp(S - L) = 0
      std::fill_n(o, D, 0.0f);
      lse[i0 + r] = kInf;
    } else {
      const float inv = 1.0f / l[r];
      for (int64_t d = 0; d < D; ++d) o[d] *= inv;
      lse[i0 + r] = m[r] + std::log(l[r]);
    }
  }
  round_rows<D>(O, nq, rows, out.ld);
}

template <int D>
void forward(const AttentionArgs& args, Tensor& out, Tensor& lse) {
  constexpr int64_t kPairs = D / 2;
  const Problem P(args);
  const int64_t BH = P.B * P.H, qtiles = (P.Nq + kQTile - 1) / kQTile;
  // K with keys on lanes and V in key pairs, per matrix: read by every query tile.
  const int64_t words = P.Ntp * kPairs;
  Tensor packed = Tensor::empty({BH, 2, std::max<int64_t>(words, 1)}, DType::i32);
  uint32_t* kv = as_words(packed);
  parallel_for(0, BH, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t bh = lo; bh < hi; ++bh) {
      const int64_t b = bh / P.H, h = bh % P.H;
      pack_keys_on_lanes<D>(P, true, b, h, kv + 2 * bh * words);
      pack_row_pairs<D>([&](int64_t j) { return P.key_row(false, b, h, j); }, P.Nt, P.Ntp,
                        kv + (2 * bh + 1) * words);
    }
  });
  // The key bias of each batch row (mask and padding), shared by its heads and query tiles.
  Tensor biases = Tensor::empty({P.B, P.Ntp}, DType::f32);
  for (int64_t b = 0; b < P.B; ++b) key_bias(P, b, 0, P.Ntp, biases.data<float>() + b * P.Ntp);
  const OutRows rows(out);
  float* L = lse.data<float>();
  parallel_for(0, BH * qtiles, 1, [&](int64_t lo, int64_t hi) {
    // One group's scores and probabilities, and the tile's output rows and softmax statistics.
    Tensor f32 = Tensor::empty({4 * kKTile + kQTile * D + 2 * kQTile}, DType::f32);
    Tensor b16 = Tensor::empty({4 * kKTile}, DType::bf16);
    float* S = f32.data<float>();
    float* O = S + 4 * kKTile;
    float* m = O + kQTile * D;
    float* l = m + kQTile;
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t bh = t / qtiles, i0 = (t % qtiles) * kQTile, b = bh / P.H;
      forward_tile<D>(P, b, bh % P.H, i0, std::min(kQTile, P.Nq - i0), kv + 2 * bh * words,
                      kv + (2 * bh + 1) * words, biases.data<float>() + b * P.Ntp, S,
                      b16.data<bf16_t>(), O, m, l, rows, L + bh * P.Nq);
    }
  });
}

// One matrix's backward: per query tile, per key tile, S -> P, dP = dO V^T, dS; dQ accumulated
// for the tile's rows, dK and dV for the whole matrix: key-major [16, Ntp] transposed at the end
// for 16-wide heads, in rows [Ntp, D] from interleaved row pairs for wider ones.
template <int D>
struct BackwardWorkspace {
  static constexpr int64_t kPairs = D / 2;
  Tensor words, f32, b16;
  uint32_t *kt, *kp, *vt, *qp, *dop, *p_pairs, *ds_pairs;
  float *dk, *dv, *S, *dP, *dq, *bias, *delta;
  bf16_t* ds16;
  explicit BackwardWorkspace(int64_t Ntp)
      : words(Tensor::empty({3 * Ntp * kPairs + kQTile * D + kQTile * kKTile}, DType::i32)),
        f32(Tensor::empty({2 * D * Ntp + 2 * kQTile * kKTile + kQTile * D + Ntp + kQTile},
                          DType::f32)),
        b16(Tensor::empty({kQTile * kKTile}, DType::bf16)) {
    kt = as_words(words);
    kp = kt + Ntp * kPairs;
    vt = kp + Ntp * kPairs;
    qp = vt + Ntp * kPairs;
    dop = qp + kQTile / 2 * D;
    p_pairs = dop + kQTile / 2 * D;
    ds_pairs = p_pairs + kQTile / 2 * kKTile;
    dk = f32.data<float>();
    dv = dk + D * Ntp;
    S = dv + D * Ntp;
    dP = S + kQTile * kKTile;
    dq = dP + kQTile * kKTile;
    bias = dq + kQTile * D;
    delta = bias + Ntp;
    ds16 = b16.data<bf16_t>();
  }
};

template <int D>
HD_DPBF16_TARGET void backward_matrix(const Problem& P, const Rows& out, const Rows& dout,
                                      const float* lse, int64_t bh, BackwardWorkspace<D>& w,
                                      const OutRows& dq, const OutRows& dk, const OutRows& dv,
                                      const OutRows& dpk, const OutRows& dpv) {
  constexpr int64_t kPairs = D / 2;
  const int64_t b = bh / P.H, h = bh % P.H;
  pack_keys_on_lanes<D>(P, true, b, h, w.kt);
  pack_keys_on_lanes<D>(P, false, b, h, w.vt);
  pack_row_pairs<D>([&](int64_t j) { return P.key_row(true, b, h, j); }, P.Nt, P.Ntp, w.kp);
  key_bias(P, b, 0, P.Ntp, w.bias);
  std::fill_n(w.dk, D * P.Ntp, 0.0f);
  std::fill_n(w.dv, D * P.Ntp, 0.0f);
  const bf16_t* Q = P.q.at(b, h);
  const bf16_t* dO = dout.at(b, h);
  const bf16_t* O = out.at(b, h);
  for (int64_t i0 = 0; i0 < P.Nq; i0 += kQTile) {
    const int64_t nq = std::min(kQTile, P.Nq - i0), nq_even = nq + (nq & 1);
    const bf16_t* q_rows = Q + i0 * P.q.ld;
    const bf16_t* do_rows = dO + i0 * dout.ld;
    pack_row_pairs<D>([&](int64_t r) { return q_rows + r * P.q.ld; }, nq, nq_even, w.qp);
    pack_row_pairs<D>([&](int64_t r) { return do_rows + r * dout.ld; }, nq, nq_even, w.dop);
    for (int64_t r = 0; r < nq; ++r) {  // D = rowsum(dO * O), FlashAttention-2's trick
      const bf16_t* o = O + (i0 + r) * out.ld;
      float s = 0;
      for (int64_t d = 0; d < D; ++d)
        s += bf16_to_float(do_rows[r * dout.ld + d]) * bf16_to_float(o[d]);
      w.delta[r] = s;
    }
    std::fill_n(w.dq, nq * D, 0.0f);
    const float* L = lse + bh * P.Nq + i0;
    for (int64_t j0 = 0; j0 < P.Nt && !P.hidden_tile(j0, i0, nq); j0 += kKTile) {
      const int64_t nkp = round_up16(std::min(kKTile, P.Nt - j0)), nkb = nkp / 16;
      Probabilities probs{w.S, nkp, w.bias + j0, P.scale, P.causal_end(i0) - j0, L};
      scores<D>(q_rows, P.q.ld, nq, w.kt + j0 * kPairs, nkb, probs);
      ScoreGrads grads{w.S, w.dP, w.ds16, nkp, w.delta, P.scale};
      scores<D>(do_rows, dout.ld, nq, w.vt + j0 * kPairs, nkb, grads);
      if (nq < nq_even) {  // the pad row of the last query pair: no probability, no gradient
        std::fill_n(w.S + nq * nkp, nkp, 0.0f);
        std::fill_n(w.dP + nq * nkp, nkp, 0.0f);
      }
      pair_product<D>(w.ds16, nkp, nq, nkp / 2, w.kp + j0 * kPairs, w.dq);  // dQ += dS K
      if constexpr (D == kLanes) {
        transposed_accumulate(w.S, nkp, nq_even / 2, nkb, w.dop, w.dv + j0, P.Ntp);  // P^T dO
        transposed_accumulate(w.dP, nkp, nq_even / 2, nkb, w.qp, w.dk + j0, P.Ntp);  // dS^T Q
      } else {
        interleave_row_pairs(w.S, nkp, nq_even / 2, nkb, w.p_pairs);
        interleave_row_pairs(w.dP, nkp, nq_even / 2, nkb, w.ds_pairs);
        pair_columns<D>(w.p_pairs, nkp, nq_even / 2, nkp, w.dop, w.dv + j0 * D);  // P^T dO
        pair_columns<D>(w.ds_pairs, nkp, nq_even / 2, nkp, w.qp, w.dk + j0 * D);  // dS^T Q
      }
    }
    round_rows<D>(w.dq, nq, dq.at(b, h) + i0 * dq.ld, dq.ld);
  }
  if constexpr (D == kLanes) {
    // dK^T and dV^T [16, Ntp] -> the rows of the prefix's and the own keys' gradients.
    transpose_rounded(w.dk, P.Ntp, 0, P.Np, dpk.at(b, h), dpk.ld);
    transpose_rounded(w.dk, P.Ntp, P.Np, P.Nt, dk.at(b, h), dk.ld);
    transpose_rounded(w.dv, P.Ntp, 0, P.Np, dpv.at(b, h), dpv.ld);
    transpose_rounded(w.dv, P.Ntp, P.Np, P.Nt, dv.at(b, h), dv.ld);
  } else {
    round_rows<D>(w.dk, P.Np, dpk.at(b, h), dpk.ld);
    round_rows<D>(w.dk + P.Np * D, P.Nk, dk.at(b, h), dk.ld);
    round_rows<D>(w.dv, P.Np, dpv.at(b, h), dpv.ld);
    round_rows<D>(w.dv + P.Np * D, P.Nk, dv.at(b, h), dv.ld);
  }
}

template <int D>
void backward(const AttentionArgs& args, const Tensor& out, const Tensor& lse,
              const Tensor& grad_out, Tensor& dq, Tensor& dk, Tensor& dv, Tensor& dprefix_k,
              Tensor& dprefix_v) {
  const Problem P(args);
  const Rows o(out), g(grad_out);
  const float* L = lse.data<float>();
  const OutRows pdq(dq), pdk(dk), pdv(dv);
  const OutRows pdpk = P.Np > 0 ? OutRows(dprefix_k) : OutRows();
  const OutRows pdpv = P.Np > 0 ? OutRows(dprefix_v) : OutRows();
  parallel_for(0, P.B * P.H, 1, [&](int64_t lo, int64_t hi) {
    BackwardWorkspace<D> w(P.Ntp);
    for (int64_t bh = lo; bh < hi; ++bh)
      backward_matrix<D>(P, o, g, L, bh, w, pdq, pdk, pdv, pdpk, pdpv);
  });
}

// fn.template operator()<D>() for the head dims the kernels are built for.
template <class F>
void visit_head_dim(int64_t dim, F&& fn) {
  switch (dim) {
    case 16:
      fn.template operator()<16>();
      return;
    case 32:
      fn.template operator()<32>();
      return;
    case 64:
      fn.template operator()<64>();
      return;
    default:
      throw Error(detail::concat(
          "scaled_dot_product_attention: no bf16 dot-product kernel for head dim ", dim));
  }
}

}  // namespace

bool attention_dpbf16_applies(DType dtype, int64_t Dh, int64_t Dv, const AttentionBlocks& blocks) {
  if (dtype != DType::bf16 || Dh != Dv || blocks.dpbf16 == 0) return false;
  if (Dh != 16 && Dh != 32 && Dh != 64) return false;
  if (blocks.dpbf16 < 0 && (blocks.q > 0 || blocks.k > 0 || blocks.bf16_tiles >= 0)) return false;
  return vector_isa().avx512_bf16;
}

void attention_dpbf16_forward(const AttentionArgs& args, Tensor& out, Tensor& lse) {
  visit_head_dim(args.q.size(3), [&]<int D>() { forward<D>(args, out, lse); });
}

void attention_dpbf16_backward(const AttentionArgs& args, const Tensor& out, const Tensor& lse,
                               const Tensor& grad_out, Tensor& dq, Tensor& dk, Tensor& dv,
                               Tensor& dprefix_k, Tensor& dprefix_v) {
  visit_head_dim(args.q.size(3), [&]<int D>() {
    backward<D>(args, out, lse, grad_out, dq, dk, dv, dprefix_k, dprefix_v);
  });
}

}  // namespace hd::cpu
