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

// exp(x) for x <= 0 (scores minus their max or logsumexp), -inf -> 0: vexp's Cephes scheme
// (ops/cpu/vec_math.h) in AVX-512 intrinsics.
HD_HEAD16_TARGET inline __m512 exp_nonpositive(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.33654f);
  const __m512 xc = _mm512_max_ps(x, lo);
  const __m512 n = _mm512_roundscale_ps(
      _mm512_fmadd_ps(xc, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f)),
      _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i e =
      _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  const __m512 y = _mm512_mul_ps(p, _mm512_castsi512_ps(e));
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ), y);
}

// Scores of one column block c..c+C of 16 keys for R rows: S[r][16c + l] = scale * x_r . k_l.
// kt points at the first block in the keys-on-lanes packing.
template <int R, int C>
HD_HEAD16_TARGET inline void score_block(const bf16_t* const* rows, const uint32_t* kt, float scale,
                                         float* S, int64_t lds) {
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
  const __m512 s = _mm512_set1_ps(scale);
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) _mm512_storeu_ps(S + r * lds + c * 16, _mm512_mul_ps(acc[r][c], s));
}

template <int R>
HD_HEAD16_TARGET void score_rows(const bf16_t* const* rows, const uint32_t* kt, int64_t nkb,
                                 float scale, float* S, int64_t lds) {
  constexpr int64_t kBlock = kPairs * 16;  // packed values per block of 16 keys
  int64_t c = 0;
  for (; c + 4 <= nkb; c += 4) score_block<R, 4>(rows, kt + c * kBlock, scale, S + c * 16, lds);
  switch (nkb - c) {
    case 3:
      score_block<R, 3>(rows, kt + c * kBlock, scale, S + c * 16, lds);
      break;
    case 2:
      score_block<R, 2>(rows, kt + c * kBlock, scale, S + c * 16, lds);
      break;
    case 1:
      score_block<R, 1>(rows, kt + c * kBlock, scale, S + c * 16, lds);
      break;
    default:
      break;
  }
}

// S[r][c] = scale * x_r . key c for n rows (ld apart) and nkb blocks of 16 keys.
HD_HEAD16_TARGET void scores(const bf16_t* x, int64_t ld, int64_t n, const uint32_t* kt,
                             int64_t nkb, float scale, float* S, int64_t lds) {
  const bf16_t* rows[4];
  int64_t r = 0;
  for (; r + 4 <= n; r += 4) {
    for (int i = 0; i < 4; ++i) rows[i] = x + (r + i) * ld;
    score_rows<4>(rows, kt, nkb, scale, S + r * lds, lds);
  }
  for (; r < n; ++r) {
    rows[0] = x + r * ld;
    score_rows<1>(rows, kt, nkb, scale, S + r * lds, lds);
  }
}

// Scores of 16 keys starting at column c, plus the bias, with keys from column `hidden`
// (causality) on set to -inf.
HD_HEAD16_TARGET inline __m512 masked_scores(const float* row, const float* bias, int64_t c,
                                             int64_t hidden) {
  __m512 x = _mm512_add_ps(_mm512_loadu_ps(row + c), _mm512_loadu_ps(bias + c));
  if (hidden < c + 16) {
    const int64_t first = std::max<int64_t>(hidden - c, 0);
    const __mmask16 lanes = __mmask16(0xFFFFu << first);
    x = _mm512_mask_mov_ps(x, lanes, _mm512_set1_ps(-kInf));
  }
  return x;
}

// One key tile of the online softmax for one row: row <- masked scores, p16 <- exp(row - m')
// in bf16 with m' the new running max; m, l (the running sum) and the output row o updated.
HD_HEAD16_TARGET void softmax_tile_row(float* row, const float* bias, int64_t nkp, int64_t hidden,
                                       bf16_t* p16, float& m, float& l, float* o) {
  __m512 vmax = _mm512_set1_ps(-kInf);
  for (int64_t c = 0; c < nkp; c += 16) {
    const __m512 x = masked_scores(row, bias, c, hidden);
    _mm512_storeu_ps(row + c, x);
    vmax = _mm512_max_ps(vmax, x);
  }
  const float mnew = std::max(m, _mm512_reduce_max_ps(vmax));
  if (mnew == -kInf) {  // nothing visible to this row yet: contributes nothing
    std::fill_n(p16, nkp, bf16_t{0});
    return;
  }
  const __m512 shift = _mm512_set1_ps(mnew);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t c = 0; c < nkp; c += 16) {
    const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(row + c), shift));
    sum = _mm512_add_ps(sum, e);
    store_bf16(p16 + c, e);
  }
  const float alpha = std::exp(m - mnew);  // 0 on the first visible tile (m = -inf)
  l = l * alpha + _mm512_reduce_add_ps(sum);
  m = mnew;
  _mm512_storeu_ps(o, _mm512_mul_ps(_mm512_loadu_ps(o), _mm512_set1_ps(alpha)));
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

// P = exp(S + bias - L[r]) in place for rows r < nq (causality from column hidden0 + r); rows
// nq..nq_even-1 zeroed.
HD_HEAD16_TARGET void probabilities(float* S, int64_t lds, int64_t nq, int64_t nq_even,
                                    const float* bias, int64_t nkp, int64_t hidden0,
                                    const float* L) {
  for (int64_t r = 0; r < nq; ++r) {
    float* row = S + r * lds;
    const __m512 shift = _mm512_set1_ps(L[r]);  // +inf for a row with no visible key: P = 0
    for (int64_t c = 0; c < nkp; c += 16) {
      const __m512 x = masked_scores(row, bias, c, hidden0 + r);
      _mm512_storeu_ps(row + c, exp_nonpositive(_mm512_sub_ps(x, shift)));
    }
  }
  for (int64_t r = nq; r < nq_even; ++r) std::fill_n(S + r * lds, nkp, 0.0f);
}

// dS = P * (dP - D[r]) * scale in place of dP, and its bf16 rows in ds16; rows past nq zeroed.
HD_HEAD16_TARGET void score_grads(const float* P, float* dP, bf16_t* ds16, int64_t lds, int64_t nq,
                                  int64_t nq_even, int64_t nkp, const float* D, float scale) {
  const __m512 s = _mm512_set1_ps(scale);
  for (int64_t r = 0; r < nq; ++r) {
    const __m512 d = _mm512_set1_ps(D[r]);
    for (int64_t c = 0; c < nkp; c += 16) {
      const __m512 p = _mm512_loadu_ps(P + r * lds + c);
      const __m512 g = _mm512_sub_ps(_mm512_loadu_ps(dP + r * lds + c), d);
      const __m512 ds = _mm512_mul_ps(_mm512_mul_ps(p, g), s);
      _mm512_storeu_ps(dP + r * lds + c, ds);
      store_bf16(ds16 + r * lds + c, ds);
    }
  }
  for (int64_t r = nq; r < nq_even; ++r) std::fill_n(dP + r * lds, nkp, 0.0f);
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

// Queries [i0, i0 + nq) of matrix (b, h): online softmax over key tiles, then the normalised
// rows and their logsumexp.
void forward_tile(const Problem& P, int64_t b, int64_t h, int64_t i0, int64_t nq,
                  const uint32_t* kt, const uint32_t* vp, float* S, bf16_t* P16, float* O, float* m,
                  float* l, float* bias, const OutRows& out, float* lse) {
  std::fill_n(m, nq, -kInf);
  std::fill_n(l, nq, 0.0f);
  std::fill_n(O, nq * kD, 0.0f);
  const bf16_t* Q = P.q.at(b, h) + i0 * P.q.ld;
  for (int64_t j0 = 0; j0 < P.Nt && !P.hidden_tile(j0, i0, nq); j0 += kKTile) {
    const int64_t nkp = round_up16(std::min(kKTile, P.Nt - j0));
    key_bias(P, b, j0, nkp, bias);
    scores(Q, P.q.ld, nq, kt + j0 * kPairs, nkp / 16, P.scale, S, nkp);
    for (int64_t r = 0; r < nq; ++r) {
      softmax_tile_row(S + r * nkp, bias, nkp, P.causal_end(i0 + r) - j0, P16 + r * nkp, m[r], l[r],
                       O + r * kD);
    }
    pair_product(P16, nkp, nq, nkp / 2, vp + j0 * kPairs, O);
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
    round_to_bf16(o, rows + r * out.ld, kD);
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
  const OutRows rows(out);
  float* L = lse.data<float>();
  parallel_for(0, BH * qtiles, 1, [&](int64_t lo, int64_t hi) {
    Tensor f32 = Tensor::empty({kQTile * kKTile + kQTile * kD + 2 * kQTile + kKTile}, DType::f32);
    Tensor b16 = Tensor::empty({kQTile * kKTile}, DType::bf16);
    float* S = f32.data<float>();
    float* O = S + kQTile * kKTile;
    float* m = O + kQTile * kD;
    float* l = m + kQTile;
    float* bias = l + kQTile;
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t bh = t / qtiles, i0 = (t % qtiles) * kQTile;
      forward_tile(P, bh / P.H, bh % P.H, i0, std::min(kQTile, P.Nq - i0), kv + 2 * bh * words,
                   kv + (2 * bh + 1) * words, S, b16.data<bf16_t>(), O, m, l, bias, rows,
                   L + bh * P.Nq);
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
        f32(Tensor::empty({2 * kD * Ntp + 2 * kQTile * kKTile + kQTile * kD + kKTile + kQTile},
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
    D = bias + kKTile;
    ds16 = b16.data<bf16_t>();
  }
};

void backward_matrix(const Problem& P, const Rows& out, const Rows& dout, const float* lse,
                     int64_t bh, BackwardWorkspace& w, bf16_t* dq, bf16_t* dk, bf16_t* dv,
                     bf16_t* dpk, bf16_t* dpv) {
  const int64_t b = bh / P.H, h = bh % P.H;
  pack_keys_on_lanes(P, true, b, h, w.kt);
  pack_keys_on_lanes(P, false, b, h, w.vt);
  pack_row_pairs([&](int64_t j) { return P.key_row(true, b, h, j); }, P.Nt, P.Ntp, w.kp);
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
      key_bias(P, b, j0, nkp, w.bias);
      scores(q_rows, P.q.ld, nq, w.kt + j0 * kPairs, nkb, P.scale, w.S, nkp);
      probabilities(w.S, nkp, nq, nq_even, w.bias, nkp, P.causal_end(i0) - j0, L);
      scores(do_rows, dout.ld, nq, w.vt + j0 * kPairs, nkb, 1.0f, w.dP, nkp);
      score_grads(w.S, w.dP, w.ds16, nkp, nq, nq_even, nkp, w.D, P.scale);
      pair_product(w.ds16, nkp, nq, nkp / 2, w.kp + j0 * kPairs, w.dq);             // dQ += dS K
      transposed_accumulate(w.S, nkp, nq_even / 2, nkb, w.dop, w.dvT + j0, P.Ntp);  // dV += P^T dO
      transposed_accumulate(w.dP, nkp, nq_even / 2, nkb, w.qp, w.dkT + j0, P.Ntp);  // dK += dS^T Q
    }
    for (int64_t r = 0; r < nq; ++r)
      round_to_bf16(w.dq + r * kD, dq + (bh * P.Nq + i0 + r) * kD, kD);
  }
  float row[kD];
  for (int64_t j = 0; j < P.Nt; ++j) {
    const bool prefix = j < P.Np;
    const int64_t at = prefix ? (bh * P.Np + j) * kD : (bh * P.Nk + j - P.Np) * kD;
    for (int64_t d = 0; d < kD; ++d) row[d] = w.dkT[d * P.Ntp + j];
    round_to_bf16(row, (prefix ? dpk : dk) + at, kD);
    for (int64_t d = 0; d < kD; ++d) row[d] = w.dvT[d * P.Ntp + j];
    round_to_bf16(row, (prefix ? dpv : dv) + at, kD);
  }
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
