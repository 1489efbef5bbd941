// The 7-tap depthwise kernels of depthwise_avx512.h. Every function carries HD_DW7_TARGET and is
// reached only where vector_isa().avx512 says the CPU has AVX-512 (ops/cpu/conv.cpp checks);
// they take raw pointers, so no inline function shared with other files is emitted with
// AVX-512 code.
#include "ops/cpu/depthwise_avx512.h"

#include <immintrin.h>

#include <algorithm>

#define HD_DW7_TARGET __attribute__((target("avx512f,avx512vl,fma")))

namespace hd::cpu::depthwise7 {
namespace {

constexpr int64_t kLanes = 16;
constexpr int kTaps = 7;

// Output rows oy (and oy + 1 when `pair`), NV vectors from column x0. Input row oy + j feeds
// tap row j of output oy and tap row j - 1 of output oy + 1: one load, two multiply-adds.
template <int NV>
HD_DW7_TARGET void rows_block(const float* padded, int64_t row_len, const float* taps, int64_t kh,
                              int64_t oy, int64_t x0, bool pair, float* out, int64_t out_ld) {
  __m512 a0[NV], a1[NV];
  for (int v = 0; v < NV; ++v) a0[v] = a1[v] = _mm512_setzero_ps();
  const int64_t last = pair ? kh : kh - 1;  // input rows oy .. oy + last
  for (int64_t j = 0; j <= last; ++j) {
    const float* row = padded + (oy + j) * row_len + x0;
    const bool feeds_first = j < kh, feeds_second = pair && j >= 1;
    for (int kx = 0; kx < kTaps; ++kx) {
      __m512 x[NV];
      for (int v = 0; v < NV; ++v) x[v] = _mm512_loadu_ps(row + v * kLanes + kx);
      if (feeds_first) {
        const __m512 w = _mm512_set1_ps(taps[j * kTaps + kx]);
        for (int v = 0; v < NV; ++v) a0[v] = _mm512_fmadd_ps(w, x[v], a0[v]);
      }
      if (feeds_second) {
        const __m512 w = _mm512_set1_ps(taps[(j - 1) * kTaps + kx]);
        for (int v = 0; v < NV; ++v) a1[v] = _mm512_fmadd_ps(w, x[v], a1[v]);
      }
    }
  }
  for (int v = 0; v < NV; ++v) _mm512_storeu_ps(out + oy * out_ld + x0 + v * kLanes, a0[v]);
  if (pair) {
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(out + (oy + 1) * out_ld + x0 + v * kLanes, a1[v]);
  }
}

HD_DW7_TARGET void rows_block_any(int nv, const float* padded, int64_t row_len, const float* taps,
                                  int64_t kh, int64_t oy, int64_t x0, bool pair, float* out,
                                  int64_t out_ld) {
  switch (nv) {
    case 4:
      return rows_block<4>(padded, row_len, taps, kh, oy, x0, pair, out, out_ld);
    case 3:
      return rows_block<3>(padded, row_len, taps, kh, oy, x0, pair, out, out_ld);
    case 2:
      return rows_block<2>(padded, row_len, taps, kh, oy, x0, pair, out, out_ld);
    default:
      return rows_block<1>(padded, row_len, taps, kh, oy, x0, pair, out, out_ld);
  }
}

}  // namespace

HD_DW7_TARGET void correlate_rows(const float* padded, int64_t row_len, const float* taps,
                                  int64_t kh, int64_t oh, int64_t ow, float* out, int64_t out_ld) {
  const int64_t vectors = (ow + kLanes - 1) / kLanes;
  for (int64_t oy = 0; oy < oh; oy += 2) {
    const bool pair = oy + 1 < oh;
    for (int64_t v0 = 0; v0 < vectors; v0 += 4) {
      const int nv = int(std::min<int64_t>(4, vectors - v0));
      rows_block_any(nv, padded, row_len, taps, kh, oy, v0 * kLanes, pair, out, out_ld);
    }
  }
}

HD_DW7_TARGET void weight_lanes_row(const float* grad, int64_t grad_ld, const float* x,
                                    int64_t row_len, int64_t ky, int64_t oh, int64_t width,
                                    float* acc) {
  __m512 lo[kTaps], hi[kTaps];  // lanes 0-15 and 16-31 of each tap's 32
  for (int kx = 0; kx < kTaps; ++kx) {
    lo[kx] = _mm512_loadu_ps(acc + kx * 32);
    hi[kx] = _mm512_loadu_ps(acc + kx * 32 + kLanes);
  }
  for (int64_t oy = 0; oy < oh; ++oy) {
    const float* g = grad + oy * grad_ld;
    const float* row = x + (oy + ky) * row_len;
    for (int64_t ox0 = 0; ox0 < width; ox0 += 32) {
      const __m512 g0 = _mm512_loadu_ps(g + ox0), g1 = _mm512_loadu_ps(g + ox0 + kLanes);
      for (int kx = 0; kx < kTaps; ++kx) {
        lo[kx] = _mm512_fmadd_ps(g0, _mm512_loadu_ps(row + ox0 + kx), lo[kx]);
        hi[kx] = _mm512_fmadd_ps(g1, _mm512_loadu_ps(row + ox0 + kLanes + kx), hi[kx]);
      }
    }
  }
  for (int kx = 0; kx < kTaps; ++kx) {
    _mm512_storeu_ps(acc + kx * 32, lo[kx]);
    _mm512_storeu_ps(acc + kx * 32 + kLanes, hi[kx]);
  }
}

}  // namespace hd::cpu::depthwise7
