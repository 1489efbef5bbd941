#include "ops/cpu/softmax.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <vector>

#include "autograd/thread_pool.h"

#include "ops/cpu/isa.h"
#include "ops/cpu/vec_math.h"

namespace hd::cpu {
namespace {

// Sixteen independent accumulators (one AVX-512 register of f32, two AVX2 ones): without
// -ffast-math GCC may not reorder a single-accumulator float reduction, so we spell the
// reordering out. The order is fixed, so results do not depend on the thread count. row_dot's
// multiply-adds are spelled std::fma, fused in both vector instantiations alike ([Note: AVX-512
// kernels]).
constexpr int64_t kLanes = 16;

template <class T>
T row_max(const T* x, int64_t n) {
  T m[kLanes];
  for (int64_t k = 0; k < kLanes; ++k) m[k] = -std::numeric_limits<T>::infinity();
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int64_t k = 0; k < kLanes; ++k) m[k] = x[i + k] > m[k] ? x[i + k] : m[k];
  T r = -std::numeric_limits<T>::infinity();
  for (int64_t k = 0; k < kLanes; ++k) r = m[k] > r ? m[k] : r;
  for (; i < n; ++i) r = x[i] > r ? x[i] : r;
  // A NaN is dropped here but still reaches the output through exp(x - max).
  return r;
}

template <class T>
T row_dot(const T* a, const T* b, int64_t n) {
  T acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int64_t k = 0; k < kLanes; ++k) acc[k] = std::fma(a[i + k], b[i + k], acc[k]);
  T r = fold_lanes(acc);
  for (; i < n; ++i) r = std::fma(a[i], b[i], r);
  return r;
}

// Rows per task so that a task touches ~16K elements (amortises the pool's wake-up).
int64_t row_grain(int64_t n) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(n, 1));
}

template <class T>
void forward_last(const T* x, T* y, int64_t rows, int64_t n, bool log) {
  parallel_for(0, rows, row_grain(n), [&](int64_t r0, int64_t r1) {
    run_vectorised([&] {  // [Note: AVX-512 kernels]
      for (int64_t r = r0; r < r1; ++r) {
        const T* xr = x + r * n;
        T* yr = y + r * n;
        const T m = row_max(xr, n);
        for (int64_t i = 0; i < n; ++i) yr[i] = vexp(xr[i] - m);
        const T s = lane_sum(yr, n);
        if (log) {
          // (x - max) - log(sum), not x - (max + log(sum)): the latter rounds log(sum) to the
          // ulp of max, which is coarse for large logits.
          const T ls = std::log(s);
          for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] - m) - ls;
        } else {
          const T inv = T(1) / s;
          for (int64_t i = 0; i < n; ++i) yr[i] *= inv;
        }
      }
    });
  });
}

template <class T>
void backward_last(const T* y, const T* gy, T* gx, int64_t rows, int64_t n, bool log) {
  parallel_for(0, rows, row_grain(n), [&](int64_t r0, int64_t r1) {
    run_vectorised([&] {  // [Note: AVX-512 kernels]
      for (int64_t r = r0; r < r1; ++r) {
        const T* yr = y + r * n;
        const T* gr = gy + r * n;
        T* out = gx + r * n;
        if (log) {
          const T s = lane_sum(gr, n);
          for (int64_t i = 0; i < n; ++i) out[i] = gr[i] - vexp(yr[i]) * s;
        } else {
          const T d = row_dot(gr, yr, n);
          for (int64_t i = 0; i < n; ++i) out[i] = yr[i] * (gr[i] - d);
        }
      }
    });
  });
}

// Softmax along a non-last dim: the reduction runs across rows of `inner` contiguous columns,
// so we keep one running max/sum per column and stream the rows (all loads contiguous).
constexpr int64_t kCols = 256;

template <class Body>
void for_column_blocks(int64_t outer, int64_t n, int64_t inner, Body&& body) {
  int64_t col_blocks = (inner + kCols - 1) / kCols;
  int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(n * std::min(inner, kCols), 1));
  parallel_for(0, outer * col_blocks, grain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      int64_t o = t / col_blocks, c0 = (t % col_blocks) * kCols;
      body(o * n * inner + c0, std::min(kCols, inner - c0));
    }
  });
}

template <class T>
void forward_strided(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool log) {
  for_column_blocks(outer, n, inner, [&](int64_t base, int64_t w) {
    T m[kCols], s[kCols];
    for (int64_t j = 0; j < w; ++j) {
      m[j] = -std::numeric_limits<T>::infinity();
      s[j] = T(0);
    }
    for (int64_t i = 0; i < n; ++i) {
      const T* xr = x + base + i * inner;
      for (int64_t j = 0; j < w; ++j) m[j] = xr[j] > m[j] ? xr[j] : m[j];
    }
    for (int64_t i = 0; i < n; ++i) {
      const T* xr = x + base + i * inner;
      T* yr = y + base + i * inner;
      for (int64_t j = 0; j < w; ++j) {
        yr[j] = vexp(xr[j] - m[j]);
        s[j] += yr[j];
      }
    }
    if (log) {
      for (int64_t j = 0; j < w; ++j) s[j] = std::log(s[j]);
      for (int64_t i = 0; i < n; ++i) {
        const T* xr = x + base + i * inner;
        T* yr = y + base + i * inner;
        for (int64_t j = 0; j < w; ++j) yr[j] = (xr[j] - m[j]) - s[j];
      }
    } else {
      for (int64_t j = 0; j < w; ++j) s[j] = T(1) / s[j];
      for (int64_t i = 0; i < n; ++i) {
        T* yr = y + base + i * inner;
        for (int64_t j = 0; j < w; ++j) yr[j] *= s[j];
      }
    }
  });
}

template <class T>
void backward_strided(const T* y, const T* gy, T* gx, int64_t outer, int64_t n, int64_t inner,
                      bool log) {
  for_column_blocks(outer, n, inner, [&](int64_t base, int64_t w) {
    T acc[kCols];
    for (int64_t j = 0; j < w; ++j) acc[j] = T(0);
    for (int64_t i = 0; i < n; ++i) {
      const T* yr = y + base + i * inner;
      const T* gr = gy + base + i * inner;
      if (log) {
        for (int64_t j = 0; j < w; ++j) acc[j] += gr[j];
      } else {
        for (int64_t j = 0; j < w; ++j) acc[j] += gr[j] * yr[j];
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      const T* yr = y + base + i * inner;
      const T* gr = gy + base + i * inner;
      T* out = gx + base + i * inner;
      if (log) {
        for (int64_t j = 0; j < w; ++j) out[j] = gr[j] - vexp(yr[j]) * acc[j];
      } else {
        for (int64_t j = 0; j < w; ++j) out[j] = yr[j] * (gr[j] - acc[j]);
      }
    }
  });
}

}  // namespace

void softmax_forward(const Tensor& x, Tensor& y, int64_t outer, int64_t n, int64_t inner,
                     bool log) {
  HD_CHECK(x.is_contiguous() && y.is_contiguous(), "softmax: kernel expects contiguous tensors");
  if (outer * n * inner == 0) return;
  visit_float(x.dtype(), log ? "log_softmax" : "softmax", [&]<class T>() {
    if (inner == 1) {
      forward_last(x.data<T>(), y.data<T>(), outer, n, log);
    } else {
      forward_strided(x.data<T>(), y.data<T>(), outer, n, inner, log);
    }
  });
}

void softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx, int64_t outer, int64_t n,
                      int64_t inner, bool log) {
  HD_CHECK(y.is_contiguous() && gy.is_contiguous() && gx.is_contiguous(),
           "softmax_backward: kernel expects contiguous tensors");
  if (outer * n * inner == 0) return;
  visit_float(y.dtype(), log ? "log_softmax_backward" : "softmax_backward", [&]<class T>() {
    if (inner == 1) {
      backward_last(y.data<T>(), gy.data<T>(), gx.data<T>(), outer, n, log);
    } else {
      backward_strided(y.data<T>(), gy.data<T>(), gx.data<T>(), outer, n, inner, log);
    }
  });
}

}  // namespace hd::cpu
