// CUDA layer_norm / rms_norm over the last dim, forward and backward (contract of
// ops/cpu/norm.h: x contiguous [rows, C], per-row mean/rstd stored in x's dtype and reused by
// the backward). One block per row for the row statistics and gx (two-pass variance, as on the
// CPU: more accurate than E[x^2] - E[x]^2 for rows with a large mean); gw/gb are column sums
// over rows, one thread per column accumulating in f64 (coalesced across the threads of a warp).
#include "ops/cuda/common.cuh"
#include "ops/cuda/kernels.h"

namespace hd::cuda {
namespace {

__device__ inline float m_rsqrt(float v) {
  return 1.0f / sqrtf(v);
}
__device__ inline double m_rsqrt(double v) {
  return 1.0 / sqrt(v);
}

template <class T>
__global__ void norm_forward_kernel(bool center, const T* x, const T* w, const T* b, double eps,
                                    T* y, T* mean, T* rstd, int64_t rows, int64_t C) {
  using A = typename Elem<T>::compute;
  __shared__ A buf[kThreads];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * C;
    A mu = A(0);
    if (center) {
      A s = A(0);
      for (int64_t i = threadIdx.x; i < C; i += blockDim.x) s += A(Elem<T>::load(xr[i]));
      mu = block_sum(s, buf) / A(C);
    }
    A q = A(0);
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
      A d = A(Elem<T>::load(xr[i])) - mu;
      q += d * d;
    }
    A rs = m_rsqrt(block_sum(q, buf) / A(C) + A(eps));
    if (threadIdx.x == 0) {
      if (center) mean[r] = Elem<T>::store(mu);
      rstd[r] = Elem<T>::store(rs);
    }
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
      A v = (A(Elem<T>::load(xr[i])) - mu) * rs;
      if (w) v *= A(Elem<T>::load(w[i]));
      if (b) v += A(Elem<T>::load(b[i]));
      y[r * C + i] = Elem<T>::store(v);
    }
  }
}

// gx = rstd * (gh - mean(gh) - xh * mean(gh * xh)), gh = gy * w, xh = (x - mean) * rstd; the
// mean(gh) term only for layer norm.
template <class T>
__global__ void norm_backward_kernel(bool center, const T* gy, const T* x, const T* mean,
                                     const T* rstd, const T* w, T* gx, int64_t rows, int64_t C) {
  using A = typename Elem<T>::compute;
  __shared__ A buf[kThreads];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const A mu = center ? A(Elem<T>::load(mean[r])) : A(0), rs = Elem<T>::load(rstd[r]);
    const T* xr = x + r * C;
    const T* gr = gy + r * C;
    A s_h = A(0), s_hx = A(0);
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
      A xh = (A(Elem<T>::load(xr[i])) - mu) * rs;
      A gh = A(Elem<T>::load(gr[i])) * (w ? A(Elem<T>::load(w[i])) : A(1));
      s_h += gh;
      s_hx += gh * xh;
    }
    const A a = center ? block_sum(s_h, buf) / A(C) : A(0);
    const A c = block_sum(s_hx, buf) / A(C);
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
      A xh = (A(Elem<T>::load(xr[i])) - mu) * rs;
      A gh = A(Elem<T>::load(gr[i])) * (w ? A(Elem<T>::load(w[i])) : A(1));
      gx[r * C + i] = Elem<T>::store(rs * (gh - a - xh * c));
    }
  }
}

template <class T>
__global__ void norm_param_grads_kernel(bool center, const T* gy, const T* x, const T* mean,
                                        const T* rstd, T* gw, T* gb, int64_t rows, int64_t C) {
  using A = typename Elem<T>::compute;
  int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < C; j += step) {
    double sw = 0, sb = 0;
    for (int64_t r = 0; r < rows; ++r) {
      A g = Elem<T>::load(gy[r * C + j]);
      if (gw) {
        A mu = center ? A(Elem<T>::load(mean[r])) : A(0);
        A xh = (A(Elem<T>::load(x[r * C + j])) - mu) * A(Elem<T>::load(rstd[r]));
        sw += double(g * xh);
      }
      sb += double(g);
    }
    if (gw) gw[j] = Elem<T>::store(A(sw));
    if (gb) gb[j] = Elem<T>::store(A(sb));
  }
}

template <class T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? static_cast<const T*>(t.raw_data()) : nullptr;
}

unsigned row_grid(int64_t rows) {
  return unsigned(rows < 65535 ? rows : 65535);
}

}  // namespace

void norm_forward(bool center, const Tensor& x, const Tensor& weight, const Tensor& bias,
                  double eps, Tensor& y, Tensor& mean, Tensor& rstd) {
  const char* op = center ? "layer_norm" : "rms_norm";
  HD_CHECK(x.is_contiguous() && y.is_contiguous() && x.dim() >= 1, op,
           ": CUDA kernel expects contiguous tensors, got ", x.str());
  const int64_t C = x.size(-1), rows = C > 0 ? x.numel() / C : 0;
  if (rows == 0) return;
  DeviceGuard guard(x.device().index);
  visit_floating(x.dtype(), op, [&]<class T>() {
    norm_forward_kernel<T><<<row_grid(rows), kThreads, 0, stream_of(x)>>>(
        center, static_cast<const T*>(x.raw_data()), ptr_or_null<T>(weight), ptr_or_null<T>(bias),
        eps, static_cast<T*>(y.raw_data()), center ? static_cast<T*>(mean.raw_data()) : nullptr,
        static_cast<T*>(rstd.raw_data()), rows, C);
  });
  check_launch(op, x);
}

void norm_backward(bool center, const Tensor& gy, const Tensor& x, const Tensor& mean,
                   const Tensor& rstd, const Tensor& weight, Tensor& gx, Tensor* gw, Tensor* gb) {
  const char* op = center ? "layer_norm_backward" : "rms_norm_backward";
  HD_CHECK(x.is_contiguous() && gy.is_contiguous() && gx.is_contiguous() && x.dim() >= 1, op,
           ": CUDA kernel expects contiguous tensors, got ", x.str(), " and ", gy.str());
  const int64_t C = x.size(-1), rows = C > 0 ? x.numel() / C : 0;
  DeviceGuard guard(x.device().index);
  visit_floating(x.dtype(), op, [&]<class T>() {
    const T* pg = static_cast<const T*>(gy.raw_data());
    const T* px = static_cast<const T*>(x.raw_data());
    const T* pm = center ? static_cast<const T*>(mean.raw_data()) : nullptr;
    const T* pr = static_cast<const T*>(rstd.raw_data());
    if (rows > 0) {
      norm_backward_kernel<T><<<row_grid(rows), kThreads, 0, stream_of(x)>>>(
          center, pg, px, pm, pr, ptr_or_null<T>(weight), static_cast<T*>(gx.raw_data()), rows, C);
    }
    if ((gw || gb) && C > 0) {
      norm_param_grads_kernel<T><<<grid_for(C), kThreads, 0, stream_of(x)>>>(
          center, pg, px, pm, pr, gw ? static_cast<T*>(gw->raw_data()) : nullptr,
          gb ? static_cast<T*>(gb->raw_data()) : nullptr, rows, C);
    }
  });
  check_launch(op, x);
}

}  // namespace hd::cuda
