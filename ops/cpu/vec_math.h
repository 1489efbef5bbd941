// Scalar math written so GCC auto-vectorises it (no libm calls in hot loops).
//
// Why: softmax, GELU and sigmoid run over hundreds of millions of elements per training step;
// libm's expf/erff are scalar calls that stop vectorisation and cost ~10x. These routines are
// branch-free (selects only) and accurate to a few ulp in f32; the f64 overloads call libm,
// because f64 is used for gradient checks where accuracy matters more than speed.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace hd::cpu {

// Always inlined: a call in a loop body stops vectorisation (GCC declined to inline these into
// large templated kernels on its own).
#define HD_VEC_INLINE inline __attribute__((always_inline))

// exp(x), Cephes-style: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial, 2^n from bits.
HD_VEC_INLINE float vexp(float x) {
  float xc = x < -87.33654f ? -87.33654f : (x > 88.3762626f ? 88.3762626f : x);
  float n = std::floor(xc * 1.44269504088896341f + 0.5f);
  float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  float scale = std::bit_cast<float>(int32_t(int32_t(n) + 127) << 23);
  float y = p * scale;
  y = x < -87.33654f ? 0.0f : y;
  y = x > 88.7228391f ? INFINITY : y;
  return x != x ? x : y;
}
HD_VEC_INLINE double vexp(double x) {
  return std::exp(x);
}

// erf(x): rational minimax approximation on [-4, 4] (outside, |erf| rounds to 1 in f32).
HD_VEC_INLINE float verf(float x) {
  float xc = x < -4.0f ? -4.0f : (x > 4.0f ? 4.0f : x);
  float x2 = xc * xc;
  float p = -2.72614225801306e-10f;
  p = p * x2 + 2.77068142495902e-08f;
  p = p * x2 + -2.10102402082508e-06f;
  p = p * x2 + -5.69250639462346e-05f;
  p = p * x2 + -7.34990630326855e-04f;
  p = p * x2 + -2.95459980854025e-03f;
  p = p * x2 + -1.60960333262415e-02f;
  p = p * xc;
  float q = -1.45660718464996e-05f;
  q = q * x2 + -2.13374055278905e-04f;
  q = q * x2 + -1.68282697438203e-03f;
  q = q * x2 + -7.37332916720468e-03f;
  q = q * x2 + -1.42647390514189e-02f;
  return x != x ? x : p / q;
}
HD_VEC_INLINE double verf(double x) {
  return std::erf(x);
}

template <class T>
HD_VEC_INLINE T vsigmoid(T x) {
  return T(1) / (T(1) + vexp(-x));
}
// tanh via exp: 1 - 2/(e^{2x}+1); absolute error ~1e-7 in f32 (used inside GELU-tanh).
HD_VEC_INLINE float vtanh(float x) {
  return 1.0f - 2.0f / (vexp(2.0f * x) + 1.0f);
}
HD_VEC_INLINE double vtanh(double x) {
  return std::tanh(x);
}

// Sum of x[0..n) with eight independent accumulators (one AVX2 register of f32): without
// -ffast-math GCC may not reorder a single-accumulator float reduction, so the reordering is
// spelled out. The order is fixed, so results do not depend on the thread count.
constexpr int64_t kSumLanes = 8;
// A reduction's lane accumulators summed pairwise (lane k with lane k + half, halving): a fixed
// order, so the same bits at any vector width, and log2(N) dependent adds where the left-to-
// right sum of 16 lanes was 16 in a row (~50 cycles of latency per row of a norm or softmax).
template <class T, int64_t N>
HD_VEC_INLINE T fold_lanes(T (&acc)[N]) {
  static_assert(N > 0 && (N & (N - 1)) == 0, "fold_lanes: a power of two of lanes");
  for (int64_t half = N / 2; half >= 1; half /= 2) {
    for (int64_t k = 0; k < half; ++k) acc[k] += acc[k + half];
  }
  return acc[0];
}

template <class T>
HD_VEC_INLINE T lane_sum(const T* x, int64_t n) {
  T acc[kSumLanes] = {};
  int64_t i = 0;
  for (; i + kSumLanes <= n; i += kSumLanes)
    for (int64_t k = 0; k < kSumLanes; ++k) acc[k] += x[i + k];
  T r = fold_lanes(acc);
  for (; i < n; ++i) r += x[i];
  return r;
}

}  // namespace hd::cpu
