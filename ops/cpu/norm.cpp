#include "ops/cpu/norm.h"

#include "ops/cpu/vec_math.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "autograd/thread_pool.h"

namespace hd::cpu {
namespace {

// Eight independent accumulators: GCC will not reorder a single float accumulator without
// -ffast-math, so the reordering is written out (fixed order, thread-count independent).
constexpr int64_t kLanes = 8;
// Rows per block of the weight/bias gradient partials (fixed, so the sum order is fixed).
constexpr int64_t kBlockRows = 64;

// sum((x - c)^2)
template <class T>
T lane_sq_dev(const T* x, T c, int64_t n) {
  T acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int64_t k = 0; k < kLanes; ++k) acc[k] += (x[i + k] - c) * (x[i + k] - c);
  T r = T(0);
  for (int64_t k = 0; k < kLanes; ++k) r += acc[k];
  for (; i < n; ++i) r += (x[i] - c) * (x[i] - c);
  return r;
}

template <class T>
void forward_kernel(bool center, const T* x, const T* w, const T* b, T eps, T* y, T* mean, T* rstd,
                    int64_t rows, int64_t C) {
  const T inv_c = T(1) / T(C);
  parallel_for(0, rows, std::max<int64_t>(1, 16384 / C), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * C;
      T* yr = y + r * C;
      // Two passes (mean, then squared deviations): the row is in L1 and this is far more
      // accurate than E[x^2] - E[x]^2 for rows with a large mean.
      const T mu = center ? lane_sum(xr, C) * inv_c : T(0);
      const T rs = T(1) / std::sqrt(lane_sq_dev(xr, mu, C) * inv_c + eps);
      if (center) mean[r] = mu;
      rstd[r] = rs;
      if (w && b) {
        for (int64_t j = 0; j < C; ++j) yr[j] = (xr[j] - mu) * rs * w[j] + b[j];
      } else if (w) {
        for (int64_t j = 0; j < C; ++j) yr[j] = (xr[j] - mu) * rs * w[j];
      } else if (b) {
        for (int64_t j = 0; j < C; ++j) yr[j] = (xr[j] - mu) * rs + b[j];
      } else {
        for (int64_t j = 0; j < C; ++j) yr[j] = (xr[j] - mu) * rs;
      }
    }
  });
}

// With xhat = (x - mean) * rstd and h = gy * w:
//   gx = rstd * (h - mean(h) - xhat * mean(h * xhat))   (mean(h) term only when centering)
//   gw = sum_rows gy * xhat,  gb = sum_rows gy
template <class T>
void backward_kernel(bool center, const T* gy, const T* x, const T* mean, const T* rstd, const T* w,
                     T* gx, T* gw, T* gb, int64_t rows, int64_t C) {
  const T inv_c = T(1) / T(C);
  const int64_t blocks = (rows + kBlockRows - 1) / kBlockRows;
  const bool want_w = gw != nullptr, want_b = gb != nullptr;
  std::vector<T> pw(want_w ? size_t(blocks * C) : 0), pb(want_b ? size_t(blocks * C) : 0);
  parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    std::vector<T> h_buf(static_cast<size_t>(C)), xh_buf(static_cast<size_t>(C));
    T* h = h_buf.data();
    T* xh = xh_buf.data();
    for (int64_t blk = b0; blk < b1; ++blk) {
      T* bw = want_w ? pw.data() + blk * C : nullptr;
      T* bb = want_b ? pb.data() + blk * C : nullptr;
      if (bw) std::fill(bw, bw + C, T(0));
      if (bb) std::fill(bb, bb + C, T(0));
      const int64_t r_end = std::min(rows, (blk + 1) * kBlockRows);
      for (int64_t r = blk * kBlockRows; r < r_end; ++r) {
        const T* xr = x + r * C;
        const T* gr = gy + r * C;
        T* out = gx + r * C;
        const T mu = center ? mean[r] : T(0), rs = rstd[r];
        T sh[kLanes] = {}, shx[kLanes] = {};
        for (int64_t j = 0; j < C; ++j) {
          xh[j] = (xr[j] - mu) * rs;
          h[j] = w ? gr[j] * w[j] : gr[j];
        }
        int64_t j = 0;
        for (; j + kLanes <= C; j += kLanes) {
          for (int64_t k = 0; k < kLanes; ++k) {
            sh[k] += h[j + k];
            shx[k] += h[j + k] * xh[j + k];
          }
        }
        T s_h = T(0), s_hx = T(0);
        for (int64_t k = 0; k < kLanes; ++k) {
          s_h += sh[k];
          s_hx += shx[k];
        }
        for (; j < C; ++j) {
          s_h += h[j];
          s_hx += h[j] * xh[j];
        }
        const T a = center ? s_h * inv_c : T(0), c = s_hx * inv_c;
        for (int64_t jj = 0; jj < C; ++jj) out[jj] = rs * (h[jj] - a - xh[jj] * c);
        if (bw)
          for (int64_t jj = 0; jj < C; ++jj) bw[jj] += gr[jj] * xh[jj];
        if (bb)
          for (int64_t jj = 0; jj < C; ++jj) bb[jj] += gr[jj];
      }
    }
  });
  // Block partials in block order, accumulated in double.
  auto reduce_partials = [&](const std::vector<T>& p, T* dst) {
    std::vector<double> acc(size_t(C), 0.0);
    for (int64_t blk = 0; blk < blocks; ++blk)
      for (int64_t j = 0; j < C; ++j) acc[size_t(j)] += double(p[size_t(blk * C + j)]);
    for (int64_t j = 0; j < C; ++j) dst[j] = T(acc[size_t(j)]);
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
  visit_float(x.dtype(), op, [&]<class T>() {
    forward_kernel<T>(center, x.data<T>(), ptr_or_null<T>(weight), ptr_or_null<T>(bias), T(eps),
                      y.data<T>(), center ? mean.data<T>() : nullptr, rstd.data<T>(), rows, C);
  });
}

void norm_backward(bool center, const Tensor& gy, const Tensor& x, const Tensor& mean,
                   const Tensor& rstd, const Tensor& weight, Tensor& gx, Tensor* gw, Tensor* gb) {
  const char* op = center ? "layer_norm_backward" : "rms_norm_backward";
  HD_CHECK(x.is_contiguous() && gy.is_contiguous() && gx.is_contiguous(), op,
           ": kernel expects contiguous tensors");
  const int64_t C = x.dim() == 0 ? 1 : x.size(-1);
  const int64_t rows = C == 0 ? 0 : x.numel() / C;
  visit_float(x.dtype(), op, [&]<class T>() {
    if (rows == 0) {
      if (gw) std::fill(gw->data<T>(), gw->data<T>() + C, T(0));
      if (gb) std::fill(gb->data<T>(), gb->data<T>() + C, T(0));
      return;
    }
    backward_kernel<T>(center, gy.data<T>(), x.data<T>(), center ? mean.data<T>() : nullptr,
                       rstd.data<T>(), ptr_or_null<T>(weight), gx.data<T>(),
                       gw ? gw->data<T>() : nullptr, gb ? gb->data<T>() : nullptr, rows, C);
  });
}

}  // namespace hd::cpu
