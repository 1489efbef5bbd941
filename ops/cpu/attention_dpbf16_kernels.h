// The AVX-512 + AVX512_BF16 building blocks of the bf16 dot-product attention kernel
// (attention_dpbf16.h has the layouts and why): dot products of bf16 pairs in three register
// blockings, the epilogues that turn score blocks into masked scores, P or dS, the online
// softmax of a row group, exp, and the bf16 rounding of results. Included by
// attention_dpbf16.cpp only.
//
// Every function here carries HD_DPBF16_TARGET and is reached only where
// vector_isa().avx512_bf16 says the CPU has these instructions; they take raw pointers, so no
// inline function shared with other files is ever emitted with AVX-512 code.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "autograd/dtype.h"

#define HD_DPBF16_TARGET \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")))

// GCC 12 reports its own _mm512_reduce_* helpers as reading an uninitialised vector (they start
// from _mm512_undefined); the warning is about its header, not this code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace hd::cpu::dpbf16 {

constexpr int64_t kLanes = 16;  // f32 lanes of an AVX-512 vector
constexpr float kInf = std::numeric_limits<float>::infinity();

// Head dims 2p and 2p + 1 of a row: one vdpbf16ps operand lane.
inline uint32_t pair_at(const bf16_t* row, int64_t p) {
  uint32_t v;
  std::memcpy(&v, row + 2 * p, sizeof(v));
  return v;
}

HD_DPBF16_TARGET inline __m512 dot_pairs(__m512 acc, __m512i a, __m512i b) {
  return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
}

HD_DPBF16_TARGET inline __m512i broadcast_pair(const bf16_t* row, int64_t p) {
  return _mm512_set1_epi32(int(pair_at(row, p)));
}

// 16 bf16 -> 16 bf16 words in a 256-bit store (round to nearest even; denormals flush to zero,
// irrelevant for probabilities and dS that enter a product).
HD_DPBF16_TARGET inline void store_bf16(bf16_t* dst, __m512 x) {
  const __m256bh y = _mm512_cvtneps_pbh(x);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), (__m256i)y);
}

// One row of 16 results rounded to bf16 with round_to_bf16's bits (ops/cpu/isa.h): the CPU's
// rounding, or the software one for a row holding a denormal (which the instruction would
// flush). Inline, because the outputs come 16 values at a time: calling round_to_bf16 per row
// cost ~4 % of the demo step.
HD_DPBF16_TARGET inline void round_row16(const float* src, bf16_t* dst) {
  const __m512 x = _mm512_loadu_ps(src);
  const __m512 ax = _mm512_abs_ps(x);
  if (_mm512_cmp_ps_mask(ax, _mm512_set1_ps(FLT_MIN), _CMP_LT_OQ) &
      _mm512_cmp_ps_mask(ax, _mm512_setzero_ps(), _CMP_NEQ_OQ)) {
    for (int64_t k = 0; k < kLanes; ++k) dst[k] = float_to_bf16(src[k]);
    return;
  }
  store_bf16(dst, x);
}

// rows[r * ld] <- src rows r < n (D values each), rounded.
template <int D>
HD_DPBF16_TARGET inline void round_rows(const float* src, int64_t n, bf16_t* rows, int64_t ld) {
  for (int64_t r = 0; r < n; ++r)
    for (int64_t v = 0; v < D; v += kLanes) round_row16(src + r * D + v, rows + r * ld + v);
}

// exp(x) for x <= 0 (scores minus their max or logsumexp), 0 below -87.3 and for -inf:
// x = (n + f) ln 2 with |f| <= 1/2, 2^f by a degree-4 polynomial fitted for the least maximum
// relative error on [-1/2, 1/2] (2.7e-6 in f32, against bf16's rounding of P and dS at 3.9e-3;
// the degree-6 Taylor polynomial before it, at 1.2e-7, cost two more multiply-adds per 16
// scores in the forward's softmax pass and the backward's P, ~3 % of the kernel), 2^n applied
// by vscalefps. The coefficients come from bench/fit_exp2_polynomial.py.
HD_DPBF16_TARGET inline __m512 exp_nonpositive(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.33654f);
  const __m512 t = _mm512_mul_ps(_mm512_max_ps(x, lo), _mm512_set1_ps(1.44269504088896341f));
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, n);
  __m512 p = _mm512_set1_ps(0.009570101276040077f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.05591785907745361f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.240247443318367f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.6931217908859253f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.9999992847442627f));
  return _mm512_maskz_scalef_ps(_mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ), p, n);
}

// x with its lanes from `first` on set to -inf (causality hides keys from there on).
HD_DPBF16_TARGET inline __m512 hide_from(__m512 x, int64_t first) {
  if (first >= 16) return x;
  const __mmask16 lanes = __mmask16(0xFFFFu << std::max<int64_t>(first, 0));
  return _mm512_mask_mov_ps(x, lanes, _mm512_set1_ps(-kInf));
}

// Score products go through score_rows with an epilogue: epi(r, col, acc) receives the raw dot
// products of row row0 + r (epi.row0, set by scores()) with keys [col, col + 16) of the tile,
// and does the pass that used to re-read the tile: the masked scores and their running max
// (forward), P (backward), dS (backward). One write of the tile instead of a write and a
// read-modify-write. Epilogues are structs, not lambdas, so they carry the target attribute.

// Keys [16 c0, 16 (c0 + C)) of the tile for R rows of head dim D (kt: the keys-on-lanes packing
// at block c0, D / 2 vectors per block).
template <int D, int R, int C, class Epilogue>
HD_DPBF16_TARGET inline void score_block(const bf16_t* const* rows, const uint32_t* kt, int64_t c0,
                                         Epilogue& epi) {
  constexpr int64_t kPairs = D / 2;
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

template <int D, int R, class Epilogue>
HD_DPBF16_TARGET inline void score_rows(const bf16_t* const* rows, const uint32_t* kt, int64_t nkb,
                                        Epilogue& epi) {
  constexpr int64_t kBlock = D / 2 * 16;  // packed values per block of 16 keys
  int64_t c = 0;
  for (; c + 4 <= nkb; c += 4) score_block<D, R, 4>(rows, kt + c * kBlock, c, epi);
  switch (nkb - c) {
    case 3:
      score_block<D, R, 3>(rows, kt + c * kBlock, c, epi);
      break;
    case 2:
      score_block<D, R, 2>(rows, kt + c * kBlock, c, epi);
      break;
    case 1:
      score_block<D, R, 1>(rows, kt + c * kBlock, c, epi);
      break;
    default:
      break;
  }
}

// x_r . key for rows r < n of x (ld apart) and nkb blocks of 16 keys, into the epilogue.
template <int D, class Epilogue>
HD_DPBF16_TARGET inline void scores(const bf16_t* x, int64_t ld, int64_t n, const uint32_t* kt,
                                    int64_t nkb, Epilogue& epi) {
  const bf16_t* rows[4];
  int64_t r = 0;
  for (; r + 4 <= n; r += 4) {
    for (int i = 0; i < 4; ++i) rows[i] = x + (r + i) * ld;
    epi.row0 = r;
    score_rows<D, 4>(rows, kt, nkb, epi);
  }
  for (; r < n; ++r) {
    rows[0] = x + r * ld;
    epi.row0 = r;
    score_rows<D, 1>(rows, kt, nkb, epi);
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
  HD_DPBF16_TARGET inline void operator()(int r, int64_t col, __m512 acc) {
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
  HD_DPBF16_TARGET inline void operator()(int r, int64_t col, __m512 acc) {
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
  HD_DPBF16_TARGET inline void operator()(int r, int64_t col, __m512 acc) {
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
template <int D>
HD_DPBF16_TARGET inline void softmax_tile_rows(const MaskedScores& ms, int64_t n, int64_t nkp,
                                               bf16_t* p16, float* m, float* l, float* O) {
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
    for (int64_t v = 0; v < D; v += kLanes) {
      float* o = O + r * D + v;
      _mm512_storeu_ps(o, _mm512_mul_ps(_mm512_loadu_ps(o), _mm512_set1_ps(alpha)));
    }
  }
}

// acc[r] += sum over pairs jp < npairs of a16[r] pair jp . xp[jp] (D dims per pair, D / 16
// vectors) for R rows of a bf16 tile (lda apart); npairs % 4 == 0. With 16-wide heads each row
// keeps four partial sums, so the dependent dot-product chains stay short; they are added in a
// fixed order. Wider heads have D / 16 independent vectors per row already.
template <int D, int R>
HD_DPBF16_TARGET inline void pair_rows(const bf16_t* a16, int64_t lda, int64_t npairs,
                                       const uint32_t* xp, float* acc) {
  constexpr int V = D / kLanes, U = V == 1 ? 4 : 1;
  __m512 s[R][U][V];
  for (int r = 0; r < R; ++r)
    for (int u = 0; u < U; ++u)
      for (int v = 0; v < V; ++v) s[r][u][v] = _mm512_setzero_ps();
  for (int64_t jp = 0; jp < npairs; jp += U) {
    for (int u = 0; u < U; ++u) {
      __m512i x[V];
      for (int v = 0; v < V; ++v) x[v] = _mm512_loadu_si512(xp + (jp + u) * D + v * kLanes);
      for (int r = 0; r < R; ++r) {
        const __m512i a = broadcast_pair(a16 + r * lda, jp + u);
        for (int v = 0; v < V; ++v) s[r][u][v] = dot_pairs(s[r][u][v], a, x[v]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < V; ++v) {
      __m512 t = s[r][0][v];
      if constexpr (U == 4) {
        t = _mm512_add_ps(_mm512_add_ps(s[r][0][v], s[r][1][v]),
                          _mm512_add_ps(s[r][2][v], s[r][3][v]));
      }
      float* o = acc + r * D + v * kLanes;
      _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), t));
    }
  }
}

// acc (n rows of D) += A16 X for a bf16 tile A16 [n, 2 npairs] and X packed as key pairs.
template <int D>
HD_DPBF16_TARGET inline void pair_product(const bf16_t* a16, int64_t lda, int64_t n, int64_t npairs,
                                          const uint32_t* xp, float* acc) {
  int64_t r = 0;
  for (; r + 4 <= n; r += 4) pair_rows<D, 4>(a16 + r * lda, lda, npairs, xp, acc + r * D);
  for (; r < n; ++r) pair_rows<D, 1>(a16 + r * lda, lda, npairs, xp, acc + r * D);
}

// Word k of the interleave: even k from the low half (row 2i), odd k from the high (row 2i + 1).
constexpr std::array<uint16_t, 32> kInterleave = [] {
  std::array<uint16_t, 32> idx{};
  for (int k = 0; k < 32; ++k) idx[size_t(k)] = uint16_t(k % 2 == 0 ? k / 2 : 16 + k / 2);
  return idx;
}();

// The bf16 pair of rows 2 ip and 2 ip + 1 of an f32 tile A (lda apart), keys [16 jb, 16 jb + 16):
// each lane holds (A[2 ip][key], A[2 ip + 1][key]) rounded, the operand whose products sum over
// the two rows (queries) for 16 keys.
HD_DPBF16_TARGET inline __m512i row_pair(const float* A, int64_t lda, int64_t ip, int64_t jb,
                                         __m512i interleave) {
  const __m512 a0 = _mm512_loadu_ps(A + 2 * ip * lda + jb * 16);
  const __m512 a1 = _mm512_loadu_ps(A + (2 * ip + 1) * lda + jb * 16);
  return _mm512_permutexvar_epi16(interleave, (__m512i)_mm512_cvtne2ps_pbh(a1, a0));
}

// 16-wide heads: accT[d][16 jb + l] += sum over rows i of A[i][16 jb + l] X[i][d], the key-major
// accumulation of dV^T = (P^T dO)^T and dK^T = (dS^T Q)^T, 16 accumulators (one per dim) for 16
// keys. A: an f32 tile of 2 npairs rows (lda apart, rows past the queries zero); xp: X's rows in
// pairs (pack_row_pairs).
HD_DPBF16_TARGET inline void transposed_accumulate(const float* A, int64_t lda, int64_t npairs,
                                                   int64_t nkb, const uint32_t* xp, float* accT,
                                                   int64_t ldt) {
  constexpr int64_t kD = 16;
  const __m512i interleave = _mm512_loadu_si512(kInterleave.data());
  for (int64_t jb = 0; jb < nkb; ++jb) {
    __m512 s[kD];
    for (int64_t d = 0; d < kD; ++d) s[d] = _mm512_setzero_ps();
    for (int64_t ip = 0; ip < npairs; ++ip) {
      const __m512i x = row_pair(A, lda, ip, jb, interleave);
      const uint32_t* xr = xp + ip * kD;
      for (int64_t d = 0; d < kD; ++d) s[d] = dot_pairs(s[d], x, _mm512_set1_epi32(int(xr[d])));
    }
    for (int64_t d = 0; d < kD; ++d) {
      float* t = accT + d * ldt + jb * 16;
      _mm512_storeu_ps(t, _mm512_add_ps(_mm512_loadu_ps(t), s[d]));
    }
  }
}

// rows[(j - j0) * rows_ld] <- column j of accT [16, ld] for keys j in [j0, j1), rounded (16-wide
// heads).
HD_DPBF16_TARGET inline void transpose_rounded(const float* accT, int64_t ld, int64_t j0,
                                               int64_t j1, bf16_t* rows, int64_t rows_ld) {
  alignas(64) float row[kLanes];
  for (int64_t j = j0; j < j1; ++j) {
    for (int64_t d = 0; d < kLanes; ++d) row[d] = accT[d * ld + j];
    round_row16(row, rows + (j - j0) * rows_ld);
  }
}

// Wider heads (D = 32, 64: D accumulators of 16 keys would not fit in registers): the tile's
// row pairs, interleaved once (pairs[ip * lda + key], a word per key: the same row stride as the
// f32 tile, so one workspace layout serves both) ...
HD_DPBF16_TARGET inline void interleave_row_pairs(const float* A, int64_t lda, int64_t npairs,
                                                  int64_t nkb, uint32_t* pairs) {
  const __m512i interleave = _mm512_loadu_si512(kInterleave.data());
  for (int64_t ip = 0; ip < npairs; ++ip) {
    for (int64_t jb = 0; jb < nkb; ++jb) {
      _mm512_storeu_si512(pairs + ip * lda + jb * 16, row_pair(A, lda, ip, jb, interleave));
    }
  }
}

// ... then acc[key][d] += sum over row pairs ip of pairs[ip][key] . xp[ip][d], dims on the lanes:
// dV = P^T dO and dK = dS^T Q in rows, for keys [0, nk) (nk % (16 / (D / 16)) == 0), a group of
// keys' D-wide rows held in 16 registers through all row pairs.
template <int D>
HD_DPBF16_TARGET inline void pair_columns(const uint32_t* pairs, int64_t ldp, int64_t npairs,
                                          int64_t nk, const uint32_t* xp, float* acc) {
  constexpr int V = D / kLanes, G = 16 / V;  // vectors per row, keys per group
  for (int64_t j0 = 0; j0 < nk; j0 += G) {
    __m512 s[G][V];
    for (int g = 0; g < G; ++g)
      for (int v = 0; v < V; ++v) s[g][v] = _mm512_setzero_ps();
    for (int64_t ip = 0; ip < npairs; ++ip) {
      __m512i x[V];
      for (int v = 0; v < V; ++v) x[v] = _mm512_loadu_si512(xp + ip * D + v * kLanes);
      const uint32_t* pr = pairs + ip * ldp + j0;
      for (int g = 0; g < G; ++g) {
        const __m512i a = _mm512_set1_epi32(int(pr[g]));
        for (int v = 0; v < V; ++v) s[g][v] = dot_pairs(s[g][v], a, x[v]);
      }
    }
    for (int g = 0; g < G; ++g) {
      for (int v = 0; v < V; ++v) {
        float* o = acc + (j0 + g) * D + v * kLanes;
        _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), s[g][v]));
      }
    }
  }
}

}  // namespace hd::cpu::dpbf16

#pragma GCC diagnostic pop
