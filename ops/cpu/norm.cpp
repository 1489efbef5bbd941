#include "ops/cpu/norm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "ops/cpu/fold_rows.h"
#include "ops/cpu/isa.h"
#include "ops/cpu/vec_math.h"

#include "autograd/thread_pool.h"

namespace hd::cpu {
namespace {

// Sixteen independent accumulators: GCC will not reorder a single float accumulator without
// -ffast-math, so the reordering is written out (fixed order, thread-count independent).
// Sixteen is one AVX-512 register of f32 or two AVX2 ones. Multiply-adds in reductions are
// spelled std::fma: GCC fuses a * b + c only where the vector code's shape allows, which
// differed between the AVX2 and AVX-512 instantiations ([Note: AVX-512 kernels]).
constexpr int64_t kLanes = 16;
// Rows per block of the weight/bias gradient partials (fixed, so the sum order is fixed).
constexpr int64_t kBlockRows = 64;

// sum((x - c)^2)
template <class T>
T lane_sq_dev(const T* x, T c, int64_t n) {
  T acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int64_t k = 0; k < kLanes; ++k) acc[k] = std::fma(x[i + k] - c, x[i + k] - c, acc[k]);
  T r = fold_lanes(acc);
  for (; i < n; ++i) r = std::fma(x[i] - c, x[i] - c, r);
  return r;
}

// [Note: short rows] Rows of at most kShortRowMax values (a multiple of 16: the PS3 demo's 32
// and 64 channels) take their statistics sixteen rows at a time: each row's lane accumulators
// are built as lane_sum / lane_sq_dev (or the backward's) build them, and the sixteen folds run
// together (ops/cpu/fold_rows.h), the same adds in the same order: the same bits as row by row.
// Row by row, the dependent shuffle-and-add chain of each fold dominated such rows (a [5832, 32]
// bf16 layer norm forward + backward: ~50 ns per row on 2 threads, against ~30 for 192).
constexpr int64_t kRowGroup = 16;
constexpr int64_t kShortRowMax = 128;

bool short_rows(int64_t C) {
  return C % kLanes == 0 && C <= kShortRowMax;
}

// lane_sum of sixteen rows (kSumLanes accumulators each): out[r] = lane_sum(rows[r], C).
HD_VEC_INLINE void lane_sums16(const float* const* rows, int64_t C, float* out) {
  f32x16 pairs[kRowGroup / 2];
  for (int64_t i = 0; i < kRowGroup / 2; ++i) {
    float acc[2][kSumLanes] = {};
    for (int64_t h = 0; h < 2; ++h) {
      const float* x = rows[2 * i + h];
      for (int64_t j = 0; j + kSumLanes <= C; j += kSumLanes)
        for (int64_t k = 0; k < kSumLanes; ++k) acc[h][k] += x[j + k];
    }
    std::memcpy(&pairs[i], acc, sizeof(acc));
  }
  f32x16 sums;
  fold_rows8(pairs, sums);
  std::memcpy(out, &sums, sizeof(sums));
}

// Sixteen rows' kLanes accumulators, acc[r] as the row functions leave them -> their folds.
HD_VEC_INLINE void fold16(const float (&acc)[kRowGroup][kLanes], float* out) {
  f32x16 v[kRowGroup];
  std::memcpy(v, acc, sizeof(v));
  f32x16 folded;
  fold_rows16(v, folded);
  std::memcpy(out, &folded, sizeof(folded));
}

// lane_sq_dev of sixteen rows: out[r] = lane_sq_dev(rows[r], c[r], C).
HD_VEC_INLINE void lane_sq_devs16(const float* const* rows, const float* c, int64_t C, float* out) {
  float acc[kRowGroup][kLanes] = {};
  for (int64_t r = 0; r < kRowGroup; ++r) {
    const float* x = rows[r];
    for (int64_t j = 0; j + kLanes <= C; j += kLanes)
      for (int64_t k = 0; k < kLanes; ++k)
        acc[r][k] = std::fma(x[j + k] - c[r], x[j + k] - c[r], acc[r][k]);
  }
  fold16(acc, out);
}

// 1 / sqrt(mean square deviation + eps), one expression for both paths.
template <class T>
HD_VEC_INLINE T inverse_std(T sq_dev, T inv_c, T eps) {
  return T(1) / std::sqrt(std::fma(sq_dev, inv_c, eps));
}

// 16-bit storage (bf16, f16) is read and written in place, with every value widened to f32 in a
// per-thread row buffer: the two-pass statistics and the gradient's row sums read each row two
// or three times, and widening it once keeps those passes on f32 in L1. This replaced f32
// copies of x, gy, y and gx made around the kernel (four whole-tensor passes and allocations
// per norm, ~30 % of a bf16 layer norm's time; ops/cpu_half.h's pattern).
template <class E, class T>
HD_VEC_INLINE const T* widen_row(const E* src, T* buf, int64_t n) {
  if constexpr (std::is_same_v<E, T>) {
    return src;
  } else {
    for (int64_t j = 0; j < n; ++j) buf[j] = ElementTraits<E>::load(src[j]);
    return buf;
  }
}

// Where a row's output is computed: dst itself for f32/f64, else the f32 buffer narrow_row stores.
template <class E, class T>
HD_VEC_INLINE T* row_out(E* dst, T* buf) {
  if constexpr (std::is_same_v<E, T>) {
    return dst;
  } else {
    return buf;
  }
}
template <class E, class T>
HD_VEC_INLINE void narrow_row(const T* buf, E* dst, int64_t n) {
  if constexpr (!std::is_same_v<E, T>) {
    for (int64_t j = 0; j < n; ++j) dst[j] = ElementTraits<E>::store(buf[j]);
  }
}

template <class E, class T = typename ElementTraits<E>::compute>
void forward_kernel(bool center, const E* x, const E* w16, const E* b16, T eps, E* y, T* mean,
                    T* rstd, int64_t rows, int64_t C) {
  const T inv_c = T(1) / T(C);
  std::vector<T> params(size_t(2 * C));  // widened weight and bias (16-bit storage)
  const T* w = w16 ? widen_row(w16, params.data(), C) : nullptr;
  const T* b = b16 ? widen_row(b16, params.data() + C, C) : nullptr;
  const bool grouped = std::is_same_v<T, float> && short_rows(C);  // [Note: short rows]
  parallel_for(0, rows, std::max<int64_t>(1, 16384 / C), [&](int64_t r0, int64_t r1) {
    // The widened x rows (sixteen of them for a row group) and the f32 y row.
    const int64_t slots = grouped ? kRowGroup : 1;
    std::vector<T> bufs(size_t((slots + 1) * C));
    T* y_buf = bufs.data() + slots * C;
    auto output_row = [&](int64_t r, const T* xr, T mu, T rs) {
      if (center) mean[r] = mu;
      rstd[r] = rs;
      T* yr = row_out(y + r * C, y_buf);
      if (w && b) {
        for (int64_t j = 0; j < C; ++j) yr[j] = (xr[j] - mu) * rs * w[j] + b[j];
      } else if (w) {
        for (int64_t j = 0; j < C; ++j) yr[j] = (xr[j] - mu) * rs * w[j];
      } else if (b) {
        for (int64_t j = 0; j < C; ++j) yr[j] = (xr[j] - mu) * rs + b[j];
      } else {
        for (int64_t j = 0; j < C; ++j) yr[j] = (xr[j] - mu) * rs;
      }
      narrow_row(yr, y + r * C, C);
    };
    run_vectorised([&] {  // [Note: AVX-512 kernels]
      int64_t r = r0;
      if constexpr (std::is_same_v<T, float>) {
        for (; grouped && r + kRowGroup <= r1; r += kRowGroup) {
          const T* xr[kRowGroup];
          for (int64_t i = 0; i < kRowGroup; ++i)
            xr[i] = widen_row(x + (r + i) * C, bufs.data() + i * C, C);
          T mu[kRowGroup] = {}, sq[kRowGroup];
          if (center) {
            lane_sums16(xr, C, mu);
            for (int64_t i = 0; i < kRowGroup; ++i) mu[i] *= inv_c;
          }
          lane_sq_devs16(xr, mu, C, sq);
          for (int64_t i = 0; i < kRowGroup; ++i)
            output_row(r + i, xr[i], mu[i], inverse_std(sq[i], inv_c, eps));
        }
      }
      for (; r < r1; ++r) {
        const T* xr = widen_row(x + r * C, bufs.data(), C);
        // Two passes (mean, then squared deviations): the row is in L1 and this is far more
        // accurate than E[x^2] - E[x]^2 for rows with a large mean.
        const T mu = center ? lane_sum(xr, C) * inv_c : T(0);
        output_row(r, xr, mu, inverse_std(lane_sq_dev(xr, mu, C), inv_c, eps));
      }
    });
  });
}

// With xhat = (x - mean) * rstd and h = gy * w:
//   gx = rstd * (h - mean(h) - xhat * mean(h * xhat))   (mean(h) term only when centering)
//   gw = sum_rows gy * xhat,  gb = sum_rows gy
template <class E, class T = typename ElementTraits<E>::compute>
void backward_kernel(bool center, const E* gy, const E* x, const T* mean, const T* rstd,
                     const E* w16, E* gx, E* gw, E* gb, int64_t rows, int64_t C) {
  const T inv_c = T(1) / T(C);
  const int64_t blocks = (rows + kBlockRows - 1) / kBlockRows;
  const bool want_w = gw != nullptr, want_b = gb != nullptr;
  std::vector<T> w_buf(static_cast<size_t>(C));
  const T* w = w16 ? widen_row(w16, w_buf.data(), C) : nullptr;
  std::vector<T> pw(want_w ? size_t(blocks * C) : 0), pb(want_b ? size_t(blocks * C) : 0);
  const bool grouped = std::is_same_v<T, float> && short_rows(C);  // [Note: short rows]
  parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    // Per row: h, xhat, and (16-bit storage) the widened x and gy rows; sixteen of each for a
    // row group; the f32 gx row.
    const int64_t slots = grouped ? kRowGroup : 1;
    std::vector<T> bufs(size_t((4 * slots + 1) * C));
    T* const h_rows = bufs.data();
    T* const xh_rows = h_rows + slots * C;
    T* const x_rows = xh_rows + slots * C;
    T* const g_rows = x_rows + slots * C;
    T* const out_buf = g_rows + slots * C;
    // Row i of a group (or 0 alone): widen x and gy, then xhat and h.
    auto prepare_row = [&](int64_t r, int64_t i, const T*& xr, const T*& gr) {
      xr = widen_row(x + r * C, x_rows + i * C, C);
      gr = widen_row(gy + r * C, g_rows + i * C, C);
      T* h = h_rows + i * C;
      T* xh = xh_rows + i * C;
      const T mu = center ? mean[r] : T(0), rs = rstd[r];
      for (int64_t j = 0; j < C; ++j) {
        xh[j] = (xr[j] - mu) * rs;
        h[j] = w ? gr[j] * w[j] : gr[j];
      }
    };
    // Given the row's sums of h and h * xhat: gx, and the row's share of gw and gb.
    auto finish_row = [&](int64_t r, int64_t i, const T* gr, T s_h, T s_hx, T* bw, T* bb) {
      const T* h = h_rows + i * C;
      const T* xh = xh_rows + i * C;
      T* out = row_out(gx + r * C, out_buf);
      const T a = center ? s_h * inv_c : T(0), c = s_hx * inv_c, rs = rstd[r];
      for (int64_t jj = 0; jj < C; ++jj) out[jj] = rs * std::fma(-xh[jj], c, h[jj] - a);
      narrow_row(out, gx + r * C, C);
      if (bw)
        for (int64_t jj = 0; jj < C; ++jj) bw[jj] += gr[jj] * xh[jj];
      if (bb)
        for (int64_t jj = 0; jj < C; ++jj) bb[jj] += gr[jj];
    };
    run_vectorised([&] {  // [Note: AVX-512 kernels]
      for (int64_t blk = b0; blk < b1; ++blk) {
        T* bw = want_w ? pw.data() + blk * C : nullptr;
        T* bb = want_b ? pb.data() + blk * C : nullptr;
        if (bw) std::fill(bw, bw + C, T(0));
        if (bb) std::fill(bb, bb + C, T(0));
        const int64_t r_end = std::min(rows, (blk + 1) * kBlockRows);
        int64_t r = blk * kBlockRows;
        if constexpr (std::is_same_v<T, float>) {
          for (; grouped && r + kRowGroup <= r_end; r += kRowGroup) {
            const T* xr[kRowGroup];
            const T* gr[kRowGroup];
            T sh[kRowGroup][kLanes] = {}, shx[kRowGroup][kLanes] = {};
            for (int64_t i = 0; i < kRowGroup; ++i) {
              prepare_row(r + i, i, xr[i], gr[i]);
              const T* h = h_rows + i * C;
              const T* xh = xh_rows + i * C;
              for (int64_t j = 0; j + kLanes <= C; j += kLanes) {
                for (int64_t k = 0; k < kLanes; ++k) {
                  sh[i][k] += h[j + k];
                  shx[i][k] = std::fma(h[j + k], xh[j + k], shx[i][k]);
                }
              }
            }
            T s_h[kRowGroup], s_hx[kRowGroup];
            fold16(sh, s_h);
            fold16(shx, s_hx);
            for (int64_t i = 0; i < kRowGroup; ++i)
              finish_row(r + i, i, gr[i], s_h[i], s_hx[i], bw, bb);
          }
        }
        for (; r < r_end; ++r) {
          const T *xr, *gr;
          prepare_row(r, 0, xr, gr);
          const T* h = h_rows;
          const T* xh = xh_rows;
          T sh[kLanes] = {}, shx[kLanes] = {};
          int64_t j = 0;
          for (; j + kLanes <= C; j += kLanes) {
            for (int64_t k = 0; k < kLanes; ++k) {
              sh[k] += h[j + k];
              shx[k] = std::fma(h[j + k], xh[j + k], shx[k]);
            }
          }
          T s_h = fold_lanes(sh), s_hx = fold_lanes(shx);
          for (; j < C; ++j) {
            s_h += h[j];
            s_hx = std::fma(h[j], xh[j], s_hx);
          }
          finish_row(r, 0, gr, s_h, s_hx, bw, bb);
        }
      }
    });
  });
  // Block partials in block order, accumulated in double; rounded to T first, then (16-bit
  // storage) to E, as the f32 kernel's result would be.
  auto reduce_partials = [&](const std::vector<T>& p, E* dst) {
    std::vector<double> acc(size_t(C), 0.0);
    for (int64_t blk = 0; blk < blocks; ++blk)
      for (int64_t j = 0; j < C; ++j) acc[size_t(j)] += double(p[size_t(blk * C + j)]);
    for (int64_t j = 0; j < C; ++j) dst[j] = ElementTraits<E>::store(T(acc[size_t(j)]));
  };
  if (want_w) reduce_partials(pw, gw);
  if (want_b) reduce_partials(pb, gb);
}

template <class T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

}  // namespace

void norm_forward(bool center, const Tensor& x, const Tensor& weight, const Tensor& bias,
                  double eps, Tensor& y, Tensor& mean, Tensor& rstd) {
  const char* op = center ? "layer_norm" : "rms_norm";
  HD_CHECK(x.is_contiguous() && y.is_contiguous(), op, ": kernel expects contiguous tensors");
  const int64_t C = x.dim() == 0 ? 1 : x.size(-1);
  const int64_t rows = C == 0 ? 0 : x.numel() / C;
  if (rows == 0) return;
  visit_floating_storage(x.dtype(), op, [&]<class E>() {
    using T = typename ElementTraits<E>::compute;
    forward_kernel<E>(center, x.data<E>(), ptr_or_null<E>(weight), ptr_or_null<E>(bias), T(eps),
                      y.data<E>(), center ? mean.data<T>() : nullptr, rstd.data<T>(), rows, C);
  });
}

void norm_backward(bool center, const Tensor& gy, const Tensor& x, const Tensor& mean,
                   const Tensor& rstd, const Tensor& weight, Tensor& gx, Tensor* gw, Tensor* gb) {
  const char* op = center ? "layer_norm_backward" : "rms_norm_backward";
  HD_CHECK(x.is_contiguous() && gy.is_contiguous() && gx.is_contiguous(), op,
           ": kernel expects contiguous tensors");
  const int64_t C = x.dim() == 0 ? 1 : x.size(-1);
  const int64_t rows = C == 0 ? 0 : x.numel() / C;
  visit_floating_storage(x.dtype(), op, [&]<class E>() {
    using T = typename ElementTraits<E>::compute;
    if (rows == 0) {
      if (gw) std::fill(gw->data<E>(), gw->data<E>() + C, ElementTraits<E>::store(T(0)));
      if (gb) std::fill(gb->data<E>(), gb->data<E>() + C, ElementTraits<E>::store(T(0)));
      return;
    }
    backward_kernel<E>(center, gy.data<E>(), x.data<E>(), center ? mean.data<T>() : nullptr,
                       rstd.data<T>(), ptr_or_null<E>(weight), gx.data<E>(),
                       gw ? gw->data<E>() : nullptr, gb ? gb->data<E>() : nullptr, rows, C);
  });
}

}  // namespace hd::cpu
