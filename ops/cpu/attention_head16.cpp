// bf16 attention with 16-wide heads on AVX512_BF16 (see the header for the layouts and why).
//
// Code layout: the packing, the mask bias and the task drivers are baseline code; the products
// and the softmax passes are functions compiled for AVX-512 + AVX512_BF16 (HD_HEAD16_TARGET),
// reached only where vector_isa().avx512_bf16 says the CPU has them. They have internal linkage
// and take raw pointers, so no inline function shared with other files is ever emitted with
// AVX-512 code.
#include "ops/cpu/attention_head16.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>

#include "autograd/thread_pool.h"
#include "ops/cpu/isa.h"

// GCC 12 reports its own _mm512_reduce_* helpers as reading an uninitialised vector (they start
// from _mm512_undefined); the warning is about the header, not this code.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define HD_HEAD16_TARGET \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")))

namespace hd::cpu {
namespace {

constexpr int64_t kD = 16;  // head dim: 8 pairs of bf16, 16 f32 lanes
constexpr int64_t kPairs = kD / 2;
constexpr int64_t kQTile = 32;    // queries per tile: forward task, backward step
constexpr int64_t kKTile = 1024;  // keys per score tile (PS3: 729 and 729 + 256 keys: one tile)
constexpr float kInf = std::numeric_limits<float>::infinity();

int64_t round_up16(int64_t n) {
  return (n + 15) / 16 * 16;
}

// A [B, H, N, 16] bf16 operand with a unit last stride; rows ld apart (permuted views welcome).
struct Rows {
  const bf16_t* base = nullptr;
  int64_t sb = 0, sh = 0, ld = kD;
  Rows() = default;
  explicit Rows(const Tensor& t)
      : base(t.data<bf16_t>()),
        sb(t.stride(0)),
        sh(t.stride(1)),
        ld(t.size(2) > 1 ? t.stride(2) : kD) {}
  const bf16_t* at(int64_t b, int64_t h) const { return base + b * sb + h * sh; }
};

// Head dims 2p and 2p + 1 of a row: one vdpbf16ps operand lane.
inline uint32_t pair_at(const bf16_t* row, int64_t p) {
  uint32_t v;
  std::memcpy(&v, row + 2 * p, sizeof(v));
  return v;
}

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

// Keys on lanes: dst[((j / 16) * 8 + p) * 16 + j % 16] = pair p of key j, zero past Nt. A vector
// of it holds one pair of head dims for 16 keys (the QK^T and dO V^T operand).
void pack_keys_on_lanes(const Problem& P, bool keys, int64_t b, int64_t h, uint32_t* dst) {
  std::fill_n(dst, P.Ntp * kPairs, 0u);
  for (int64_t j = 0; j < P.Nt; ++j) {
    const bf16_t* row = P.key_row(keys, b, h, j);
    for (int64_t p = 0; p < kPairs; ++p)
      dst[((j >> 4) * kPairs + p) * 16 + (j & 15)] = pair_at(row, p);
  }
}

// Rows in pairs, dims on lanes: dst[(r / 2) * 16 + d] = (x[r][d], x[r + 1][d]), zero past n. A
// vector of it is one pair of keys (PV, dS K) or of queries (dS^T Q, P^T dO) for 16 dims.
template <class RowAt>
void pack_row_pairs(RowAt&& row_at, int64_t n, int64_t n_padded, uint32_t* dst) {
  std::fill_n(dst, n_padded / 2 * kD, 0u);
  for (int64_t r = 0; r < n; ++r) {
    const bf16_t* row = row_at(r);
    for (int64_t d = 0; d < kD; ++d)
      dst[(r >> 1) * kD + d] |= uint32_t(row[d].bits) << (16 * (r & 1));
  }
}

// Additive bias of key tile [j0, j0 + nkp): 0 for a visible key, -inf for a masked one or padding.
void key_bias(const Problem& P, int64_t b, int64_t j0, int64_t nkp, float* bias) {
  const bool* m = P.mask ? P.mask + b * P.mask_ld : nullptr;
  for (int64_t c = 0; c < nkp; ++c) {
    const int64_t j = j0 + c;
    bias[c] = j < P.Nt && (!m || m[j]) ? 0.0f : -kInf;
  }
}

// ---- AVX-512 + AVX512_BF16 kernels ----

HD_HEAD16_TARGET inline __m512 dot_pairs(__m512 acc, __m512i a, __m512i b) {
  return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
}

HD_HEAD16_TARGET inline __m512i broadcast_pair(const bf16_t* row, int64_t p) {
  return _mm512_set1_epi32(int(pair_at(row, p)));
}

// 16 bf16 -> 16 bf16 words in a 256-bit store (round to nearest even; denormals flush to zero,
// irrelevant for probabilities and dS that enter a product).
HD_HEAD16_TARGET inline void store_bf16(bf16_t* dst, __m512 x) {
  const __m256bh y = _mm512_cvtneps_pbh(x);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), (__m256i)y);
}

// One row of 16 results rounded to bf16 with round_to_bf16's bits (ops/cpu/isa.h): the CPU's
// rounding, or the software one for a row holding a denormal (which the instruction would
// flush). Inline, because the outputs come 16 values at a time: calling round_to_bf16 per row
// cost ~4 % of the demo step.
HD_HEAD16_TARGET inline void round_row16(const float* src, bf16_t* dst) {
  const __m512 x = _mm512_loadu_ps(src);
  const __m512 ax = _mm512_abs_ps(x);
  if (_mm512_cmp_ps_mask(ax, _mm512_set1_ps(FLT_MIN), _CMP_LT_OQ) &
      _mm512_cmp_ps_mask(ax, _mm512_setzero_ps(), _CMP_NEQ_OQ)) {
    for (int64_t k = 0; k < kD; ++k) dst[k] = float_to_bf16(src[k]);
    return;
  }
  store_bf16(dst, x);
}

// rows[r * ld] <- src rows r < n (16 values each), rounded.
HD_HEAD16_TARGET void round_rows(const float* src, int64_t n, bf16_t* rows, int64_t ld) {
  for (int64_t r = 0; r < n; ++r) round_row16(src + r * kD, rows + r * ld);
}

// exp(x) for x <= 0 (scores minus their max or logsumexp), 0 below -87.3 and for -inf:
// x = (n + f) ln 2 with |f| <= 1/2, 2^f by its degree-6 Taylor polynomial (relative error
// 1.2e-7, below f32's rounding), 2^n applied by vscalefps. P and dS are rounded to bf16 anyway.
HD_HEAD16_TARGET inline __m512 exp_nonpositive(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.33654f);
  const __m512 t = _mm512_mul_ps(_mm512_max_ps(x, lo), _mm512_set1_ps(1.44269504088896341f));
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, n);
  __m512 p = _mm512_set1_ps(1.5403530393381609e-4f);  // ln2^6 / 6!
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3333558146428443e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6181291076284772e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504108664821580e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022650695910071e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718055994531e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(_mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ), p, n);
}

// x with its lanes from `first` on set to -inf (causality hides keys from there on).
HD_HEAD16_TARGET inline __m512 hide_from(__m512 x, int64_t first) {
  if (first >= 16) return x;
  const __mmask16 lanes = __mmask16(0xFFFFu << std::max<int64_t>(first, 0));
  return _mm512_mask_mov_ps(x, lanes, _mm512_set1_ps(-kInf));
}

// Score products go through score_rows with an epilogue: epi(r, col, acc) receives the raw dot
// products of row row0 + r (epi.row0, set by scores()) with keys [col, col + 16) of the tile,
// and does the pass that used to re-read the tile: the masked scores and their running max
// (forward), P (backward), dS (backward). One write of the tile instead of a write and a
// read-modify-write. Epilogues are structs, not lambdas, so they carry the target attribute.

// Keys [16 c0, 16 (c0 + C)) of the tile for R rows (kt: the keys-on-lanes packing at block c0).
template <int R, int C, class Epilogue>
HD_HEAD16_TARGET inline void score_block(const bf16_t* const* rows, const uint32_t* kt, int64_t c0,
                                         Epilogue& epi) {
  __m512 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int64_t p = 0; p < kPairs; ++p) {
    __m512i keys[C];
    for (int c = 0; c < C; ++c) keys[c] = _mm512_loadu_si512(kt + (c * kPairs + p) * 16);
    for (int r = 0; r < R; ++r) {
      const __m512i x = broadcast_pair(rows[r], p);
      for (int c = 0; c < C; ++c) acc[r][c] = dot_pairs(acc[r][c], x, keys[c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) epi(r, (c0 + c) * 16, acc[r][c]);
}

template <int R, class Epilogue>
HD_HEAD16_TARGET inline void score_rows(const bf16_t* const* rows, const uint32_t* kt, int64_t nkb,
                                        Epilogue& epi) {
  constexpr int64_t kBlock = kPairs * 16;  // packed values per block of 16 keys
  int64_t c = 0;
  for (; c + 4 <= nkb; c += 4) score_block<R, 4>(rows, kt + c * kBlock, c, epi);
  switch (nkb - c) {
    case 3:
      score_block<R, 3>(rows, kt + c * kBlock, c, epi);
      break;
    case 2:
      score_block<R, 2>(rows, kt + c * kBlock, c, epi);
      break;
    case 1:
      score_block<R, 1>(rows, kt + c * kBlock, c, epi);
      break;
    default:
      break;
  }
}

// x_r . key for rows r < n of x (ld apart) and nkb blocks of 16 keys, into the epilogue.
template <class Epilogue>
HD_HEAD16_TARGET void scores(const bf16_t* x, int64_t ld, int64_t n, const uint32_t* kt,
                             int64_t nkb, Epilogue& epi) {
  const bf16_t* rows[4];
  int64_t r = 0;
  for (; r + 4 <= n; r += 4) {
    for (int i = 0; i < 4; ++i) rows[i] = x + (r + i) * ld;
    epi.row0 = r;
    score_rows<4>(rows, kt, nkb, epi);
  }
  for (; r < n; ++r) {
    rows[0] = x + r * ld;
    epi.row0 = r;
    score_rows<1>(rows, kt, nkb, epi);
  }
}

// Forward: S = scale x.k + bias, causally hidden keys -inf, and each row's running max.
struct MaskedScores {
  float* S;
  int64_t lds;
  const float* bias;
  float scale;
  int64_t hidden0;  // first hidden column of row 0 (past the tile when nothing is hidden)
  int64_t row0 = 0;
  __m512 vmax[4];
  HD_HEAD16_TARGET inline void operator()(int r, int64_t col, __m512 acc) {
    const int64_t i = row0 + r;
    __m512 x = _mm512_fmadd_ps(acc, _mm512_set1_ps(scale), _mm512_loadu_ps(bias + col));
    x = hide_from(x, hidden0 + i - col);
    _mm512_storeu_ps(S + i * lds + col, x);
    vmax[i] = _mm512_max_ps(vmax[i], x);
  }
};

// Backward: P = exp(scale x.k + bias - L), 0 for hidden keys.
struct Probabilities {
  float* S;
  int64_t lds;
  const float* bias;
  float scale;
  int64_t hidden0;
  const float* L;
  int64_t row0 = 0;
  HD_HEAD16_TARGET inline void operator()(int r, int64_t col, __m512 acc) {
    const int64_t i = row0 + r;
    __m512 x = _mm512_fmadd_ps(acc, _mm512_set1_ps(scale), _mm512_loadu_ps(bias + col));
    x = hide_from(x, hidden0 + i - col);
    // L = +inf for a row with no visible key: P = 0.
    _mm512_storeu_ps(S + i * lds + col, exp_nonpositive(_mm512_sub_ps(x, _mm512_set1_ps(L[i]))));
  }
};

// Backward: dS = P (dP - D) scale from the dO.v products, in f32 and in bf16.
struct ScoreGrads {
  const float* P;
  float* dS;
  bf16_t* ds16;
  int64_t lds;
  const float* D;
  float scale;
  int64_t row0 = 0;
  HD_HEAD16_TARGET inline void operator()(int r, int64_t col, __m512 acc) {
    const int64_t i = row0 + r, at = i * lds + col;
    const __m512 g = _mm512_sub_ps(acc, _mm512_set1_ps(D[i]));
    const __m512 ds =
        _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(P + at), g), _mm512_set1_ps(scale));
    _mm512_storeu_ps(dS + at, ds);
    store_bf16(ds16 + at, ds);
  }
};

// One key tile of the online softmax for rows [0, n) of a forward group (n <= 4), whose masked
// scores and running maxima MaskedScores left: P16 <- exp(S - m') in bf16 with m' the new
// running max; m, l (the running sum) and the output rows O updated.
HD_HEAD16_TARGET void softmax_tile_rows(const MaskedScores& ms, int64_t n, int64_t nkp, bf16_t* p16,
                                        float* m, float* l, float* O) {
  for (int64_t r = 0; r < n; ++r) {
    const float* row = ms.S + r * ms.lds;
    bf16_t* prow = p16 + r * ms.lds;
    const float mnew = std::max(m[r], _mm512_reduce_max_ps(ms.vmax[r]));
    if (mnew == -kInf) {  // nothing visible to this row yet: contributes nothing
      std::fill_n(prow, nkp, bf16_t{0});
      continue;
    }
    const __m512 shift = _mm512_set1_ps(mnew);
    __m512 sum = _mm512_setzero_ps();
    for (int64_t c = 0; c < nkp; c += 16) {
      const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(row + c), shift));
      sum = _mm512_add_ps(sum, e);
      store_bf16(prow + c, e);
    }
    const float alpha = std::exp(m[r] - mnew);  // 0 on the first visible tile (m = -inf)
    l[r] = l[r] * alpha + _mm512_reduce_add_ps(sum);
    m[r] = mnew;
    float* o = O + r * kD;
    _mm512_storeu_ps(o, _mm512_mul_ps(_mm512_loadu_ps(o), _mm512_set1_ps(alpha)));
  }
}

// acc[r] += sum over pairs jp < npairs of a16[r] pair jp . xp[jp] (a vector of 16 dims per pair)
// for R rows of a bf16 tile (lda apart); npairs % 4 == 0. Four partial sums per row keep the
// dependent dot-product chains short; they are added in a fixed order.
template <int R>
HD_HEAD16_TARGET void pair_rows(const bf16_t* a16, int64_t lda, int64_t npairs, const uint32_t* xp,
                                float* acc) {
  __m512 s[R][4];
  for (int r = 0; r < R; ++r)
    for (int u = 0; u < 4; ++u) s[r][u] = _mm512_setzero_ps();
  for (int64_t jp = 0; jp < npairs; jp += 4) {
    for (int u = 0; u < 4; ++u) {
      const __m512i x = _mm512_loadu_si512(xp + (jp + u) * kD);
      for (int r = 0; r < R; ++r)
        s[r][u] = dot_pairs(s[r][u], broadcast_pair(a16 + r * lda, jp + u), x);
    }
  }
  for (int r = 0; r < R; ++r) {
    const __m512 t =
        _mm512_add_ps(_mm512_add_ps(s[r][0], s[r][1]), _mm512_add_ps(s[r][2], s[r][3]));
    _mm512_storeu_ps(acc + r * kD, _mm512_add_ps(_mm512_loadu_ps(acc + r * kD), t));
  }
}

// acc (n rows of 16) += A16 X for a bf16 tile A16 [n, 2 npairs] and X packed as key pairs.
HD_HEAD16_TARGET void pair_product(const bf16_t* a16, int64_t lda, int64_t n, int64_t npairs,
                                   const uint32_t* xp, float* acc) {
  int64_t r = 0;
  for (; r + 4 <= n; r += 4) pair_rows<4>(a16 + r * lda, lda, npairs, xp, acc + r * kD);
  for (; r < n; ++r) pair_rows<1>(a16 + r * lda, lda, npairs, xp, acc + r * kD);
}

// Word k of the interleave: even k from the low half (row 2i), odd k from the high (row 2i + 1).
constexpr std::array<uint16_t, 32> kInterleave = [] {
  std::array<uint16_t, 32> idx{};
  for (int k = 0; k < 32; ++k) idx[size_t(k)] = uint16_t(k % 2 == 0 ? k / 2 : 16 + k / 2);
  return idx;
}();

// accT[d][16 jb + l] += sum over rows i of A[i][16 jb + l] X[i][d]: the key-major accumulation of
// dV^T = (P^T dO)^T and dK^T = (dS^T Q)^T. A: an f32 tile of 2 npairs rows (lda apart, rows past
// the queries zero), rounded to bf16 two rows at a time and interleaved into row pairs; xp: X's
// rows in pairs (pack_row_pairs).
HD_HEAD16_TARGET void transposed_accumulate(const float* A, int64_t lda, int64_t npairs,
                                            int64_t nkb, const uint32_t* xp, float* accT,
                                            int64_t ldt) {
  const __m512i interleave = _mm512_loadu_si512(kInterleave.data());
  for (int64_t jb = 0; jb < nkb; ++jb) {
    __m512 s[kD];
    for (int64_t d = 0; d < kD; ++d) s[d] = _mm512_setzero_ps();
    for (int64_t ip = 0; ip < npairs; ++ip) {
      const __m512 a0 = _mm512_loadu_ps(A + 2 * ip * lda + jb * 16);
      const __m512 a1 = _mm512_loadu_ps(A + (2 * ip + 1) * lda + jb * 16);
      const __m512i x = _mm512_permutexvar_epi16(interleave, (__m512i)_mm512_cvtne2ps_pbh(a1, a0));
      const uint32_t* xr = xp + ip * kD;
      for (int64_t d = 0; d < kD; ++d) s[d] = dot_pairs(s[d], x, _mm512_set1_epi32(int(xr[d])));
    }
    for (int64_t d = 0; d < kD; ++d) {
      float* t = accT + d * ldt + jb * 16;
      _mm512_storeu_ps(t, _mm512_add_ps(_mm512_loadu_ps(t), s[d]));
    }
  }
}

// ---- task drivers (baseline code) ----

// Output rows [B, H, Nq, 16], unit last stride (contiguous or heads-last).
struct OutRows {
  bf16_t* base;
  int64_t sb, sh, ld;
  explicit OutRows(Tensor& t)
      : base(t.data<bf16_t>()),
        sb(t.stride(0)),
        sh(t.stride(1)),
        ld(t.size(2) > 1 ? t.stride(2) : kD) {}
};

uint32_t* as_words(Tensor& t) {
  return reinterpret_cast<uint32_t*>(t.data<int32_t>());
}

// Queries [i0, i0 + nq) of matrix (b, h), in groups of 4 rows: per key tile, the group's scores,
// their online softmax and its P V product, with the group's [4, tile] scores and probabilities
// in L1; then the normalised rows and their logsumexp. bias: the matrix's key bias (key_bias).
HD_HEAD16_TARGET void forward_tile(const Problem& P, int64_t b, int64_t h, int64_t i0, int64_t nq,
                                   const uint32_t* kt, const uint32_t* vp, const float* bias,
                                   float* S, bf16_t* P16, float* O, float* m, float* l,
                                   const OutRows& out, float* lse) {
  std::fill_n(m, nq, -kInf);
  std::fill_n(l, nq, 0.0f);
  std::fill_n(O, nq * kD, 0.0f);
  const bf16_t* Q = P.q.at(b, h) + i0 * P.q.ld;
  for (int64_t g0 = 0; g0 < nq; g0 += 4) {
    const int64_t n = std::min<int64_t>(4, nq - g0);
    for (int64_t j0 = 0; j0 < P.Nt && !P.hidden_tile(j0, i0 + g0, n); j0 += kKTile) {
      const int64_t nkp = round_up16(std::min(kKTile, P.Nt - j0));
      MaskedScores ms{S, nkp, bias + j0, P.scale, P.causal_end(i0 + g0) - j0};
      for (__m512& v : ms.vmax) v = _mm512_set1_ps(-kInf);
      scores(Q + g0 * P.q.ld, P.q.ld, n, kt + j0 * kPairs, nkp / 16, ms);
      softmax_tile_rows(ms, n, nkp, P16, m + g0, l + g0, O + g0 * kD);
      pair_product(P16, nkp, n, nkp / 2, vp + j0 * kPairs, O + g0 * kD);
    }
  }
  bf16_t* rows = out.base + b * out.sb + h * out.sh + i0 * out.ld;
  for (int64_t r = 0; r < nq; ++r) {
    float* o = O + r * kD;
    if (l[r] == 0.0f) {  // no visible key: zeros, and +inf so backward's P = exp(S - L) = 0
      std::fill_n(o, kD, 0.0f);
      lse[i0 + r] = kInf;
    } else {
      const float inv = 1.0f / l[r];
      for (int64_t d = 0; d < kD; ++d) o[d] *= inv;
      lse[i0 + r] = m[r] + std::log(l[r]);
    }
    round_row16(o, rows + r * out.ld);
  }
}

}  // namespace

bool attention_head16_applies(DType dtype, int64_t Dh, int64_t Dv, const AttentionBlocks& blocks) {
  if (dtype != DType::bf16 || Dh != kD || Dv != kD || blocks.head16 == 0) return false;
  if (blocks.head16 < 0 && (blocks.q > 0 || blocks.k > 0 || blocks.bf16_tiles >= 0)) return false;
  return vector_isa().avx512_bf16;
}

void attention_head16_forward(const AttentionArgs& args, Tensor& out, Tensor& lse) {
  const Problem P(args);
  const int64_t BH = P.B * P.H, qtiles = (P.Nq + kQTile - 1) / kQTile;
  // K with keys on lanes and V in key pairs, per matrix: read by every query tile.
  const int64_t words = P.Ntp * kPairs;
  Tensor packed = Tensor::empty({BH, 2, std::max<int64_t>(words, 1)}, DType::i32);
  uint32_t* kv = as_words(packed);
  parallel_for(0, BH, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t bh = lo; bh < hi; ++bh) {
      const int64_t b = bh / P.H, h = bh % P.H;
      pack_keys_on_lanes(P, true, b, h, kv + 2 * bh * words);
      pack_row_pairs([&](int64_t j) { return P.key_row(false, b, h, j); }, P.Nt, P.Ntp,
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
    Tensor f32 = Tensor::empty({4 * kKTile + kQTile * kD + 2 * kQTile}, DType::f32);
    Tensor b16 = Tensor::empty({4 * kKTile}, DType::bf16);
    float* S = f32.data<float>();
    float* O = S + 4 * kKTile;
    float* m = O + kQTile * kD;
    float* l = m + kQTile;
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t bh = t / qtiles, i0 = (t % qtiles) * kQTile, b = bh / P.H;
      forward_tile(P, b, bh % P.H, i0, std::min(kQTile, P.Nq - i0), kv + 2 * bh * words,
                   kv + (2 * bh + 1) * words, biases.data<float>() + b * P.Ntp, S,
                   b16.data<bf16_t>(), O, m, l, rows, L + bh * P.Nq);
    }
  });
}

namespace {

// One matrix's backward: per query tile, per key tile, S -> P, dP = dO V^T, dS; dQ accumulated
// for the tile's rows, dK^T and dV^T for the whole matrix (transposed into rows at the end).
struct BackwardWorkspace {
  Tensor words, f32, b16;
  uint32_t *kt, *kp, *vt, *qp, *dop;
  float *dkT, *dvT, *S, *dP, *dq, *bias, *D;
  bf16_t* ds16;
  explicit BackwardWorkspace(int64_t Ntp)
      : words(Tensor::empty({3 * Ntp * kPairs + kQTile * kD}, DType::i32)),
        f32(Tensor::empty({2 * kD * Ntp + 2 * kQTile * kKTile + kQTile * kD + Ntp + kQTile},
                          DType::f32)),
        b16(Tensor::empty({kQTile * kKTile}, DType::bf16)) {
    kt = as_words(words);
    kp = kt + Ntp * kPairs;
    vt = kp + Ntp * kPairs;
    qp = vt + Ntp * kPairs;
    dop = qp + kQTile / 2 * kD;
    dkT = f32.data<float>();
    dvT = dkT + kD * Ntp;
    S = dvT + kD * Ntp;
    dP = S + kQTile * kKTile;
    dq = dP + kQTile * kKTile;
    bias = dq + kQTile * kD;
    D = bias + Ntp;
    ds16 = b16.data<bf16_t>();
  }
};

// rows[j - j0] <- column j of accT [16, ld] for keys j in [j0, j1), rounded.
HD_HEAD16_TARGET void transpose_rounded(const float* accT, int64_t ld, int64_t j0, int64_t j1,
                                        bf16_t* rows) {
  alignas(64) float row[kD];
  for (int64_t j = j0; j < j1; ++j) {
    for (int64_t d = 0; d < kD; ++d) row[d] = accT[d * ld + j];
    round_row16(row, rows + (j - j0) * kD);
  }
}

void backward_matrix(const Problem& P, const Rows& out, const Rows& dout, const float* lse,
                     int64_t bh, BackwardWorkspace& w, bf16_t* dq, bf16_t* dk, bf16_t* dv,
                     bf16_t* dpk, bf16_t* dpv) {
  const int64_t b = bh / P.H, h = bh % P.H;
  pack_keys_on_lanes(P, true, b, h, w.kt);
  pack_keys_on_lanes(P, false, b, h, w.vt);
  pack_row_pairs([&](int64_t j) { return P.key_row(true, b, h, j); }, P.Nt, P.Ntp, w.kp);
  key_bias(P, b, 0, P.Ntp, w.bias);
  std::fill_n(w.dkT, kD * P.Ntp, 0.0f);
  std::fill_n(w.dvT, kD * P.Ntp, 0.0f);
  const bf16_t* Q = P.q.at(b, h);
  const bf16_t* dO = dout.at(b, h);
  const bf16_t* O = out.at(b, h);
  for (int64_t i0 = 0; i0 < P.Nq; i0 += kQTile) {
    const int64_t nq = std::min(kQTile, P.Nq - i0), nq_even = nq + (nq & 1);
    const bf16_t* q_rows = Q + i0 * P.q.ld;
    const bf16_t* do_rows = dO + i0 * dout.ld;
    pack_row_pairs([&](int64_t r) { return q_rows + r * P.q.ld; }, nq, nq_even, w.qp);
    pack_row_pairs([&](int64_t r) { return do_rows + r * dout.ld; }, nq, nq_even, w.dop);
    for (int64_t r = 0; r < nq; ++r) {  // D = rowsum(dO * O), FlashAttention-2's trick
      const bf16_t* o = O + (i0 + r) * out.ld;
      float s = 0;
      for (int64_t d = 0; d < kD; ++d)
        s += bf16_to_float(do_rows[r * dout.ld + d]) * bf16_to_float(o[d]);
      w.D[r] = s;
    }
    std::fill_n(w.dq, nq * kD, 0.0f);
    const float* L = lse + bh * P.Nq + i0;
    for (int64_t j0 = 0; j0 < P.Nt && !P.hidden_tile(j0, i0, nq); j0 += kKTile) {
      const int64_t nkp = round_up16(std::min(kKTile, P.Nt - j0)), nkb = nkp / 16;
      Probabilities probs{w.S, nkp, w.bias + j0, P.scale, P.causal_end(i0) - j0, L};
      scores(q_rows, P.q.ld, nq, w.kt + j0 * kPairs, nkb, probs);
      ScoreGrads grads{w.S, w.dP, w.ds16, nkp, w.D, P.scale};
      scores(do_rows, dout.ld, nq, w.vt + j0 * kPairs, nkb, grads);
      if (nq < nq_even) {  // the pad row of the last query pair: no probability, no gradient
        std::fill_n(w.S + nq * nkp, nkp, 0.0f);
        std::fill_n(w.dP + nq * nkp, nkp, 0.0f);
      }
      pair_product(w.ds16, nkp, nq, nkp / 2, w.kp + j0 * kPairs, w.dq);             // dQ += dS K
      transposed_accumulate(w.S, nkp, nq_even / 2, nkb, w.dop, w.dvT + j0, P.Ntp);  // dV += P^T dO
      transposed_accumulate(w.dP, nkp, nq_even / 2, nkb, w.qp, w.dkT + j0, P.Ntp);  // dK += dS^T Q
    }
    round_rows(w.dq, nq, dq + (bh * P.Nq + i0) * kD, kD);
  }
  // dK^T and dV^T [16, Ntp] -> the rows of the prefix's and the own keys' gradients.
  transpose_rounded(w.dkT, P.Ntp, 0, P.Np, dpk + bh * P.Np * kD);
  transpose_rounded(w.dkT, P.Ntp, P.Np, P.Nt, dk + bh * P.Nk * kD);
  transpose_rounded(w.dvT, P.Ntp, 0, P.Np, dpv + bh * P.Np * kD);
  transpose_rounded(w.dvT, P.Ntp, P.Np, P.Nt, dv + bh * P.Nk * kD);
}

}  // namespace

void attention_head16_backward(const AttentionArgs& args, const Tensor& out, const Tensor& lse,
                               const Tensor& grad_out, Tensor& dq, Tensor& dk, Tensor& dv,
                               Tensor& dprefix_k, Tensor& dprefix_v) {
  const Problem P(args);
  const Rows o(out), g(grad_out);
  const float* L = lse.data<float>();
  bf16_t* pdq = dq.data<bf16_t>();
  bf16_t* pdk = dk.data<bf16_t>();
  bf16_t* pdv = dv.data<bf16_t>();
  bf16_t* pdpk = P.Np > 0 ? dprefix_k.data<bf16_t>() : nullptr;
  bf16_t* pdpv = P.Np > 0 ? dprefix_v.data<bf16_t>() : nullptr;
  parallel_for(0, P.B * P.H, 1, [&](int64_t lo, int64_t hi) {
    BackwardWorkspace w(P.Ntp);
    for (int64_t bh = lo; bh < hi; ++bh)
      backward_matrix(P, o, g, L, bh, w, pdq, pdk, pdv, pdpk, pdpv);
  });
}

}  // namespace hd::cpu
