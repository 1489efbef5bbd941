// CUDA softmax / log-softmax forward and backward over [outer, n, inner] (contiguous), the
// contract of ops/cpu/softmax.h. Along the last dim (inner == 1, attention scores and logits)
// one block owns a row: block-wide max and sum in the compute type (f32 for f32/bf16/f16, f64
// for f64). Otherwise (softmax over a middle dim) one thread owns a column (o, j) and walks n;
// adjacent threads read adjacent j, so the loads coalesce.
#include "ops/cuda/common.cuh"
#include "ops/cuda/kernels.h"

namespace hd::cuda {
namespace {

template <class T>
__global__ void softmax_rows(const T* x, T* y, int64_t outer, int64_t n, bool log_out) {
  using C = typename Elem<T>::compute;
  __shared__ C buf[kThreads];
  for (int64_t o = blockIdx.x; o < outer; o += gridDim.x) {
    const T* xr = x + o * n;
    T* yr = y + o * n;
    C m = C(-INFINITY);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      C v = Elem<T>::load(xr[i]);
      m = (m < v || v != v) ? v : m;
    }
    m = block_max(m, buf);
    C s = C(0);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += m_exp(C(Elem<T>::load(xr[i])) - m);
    s = block_sum(s, buf);
    const C log_s = m_log(s), inv_s = C(1) / s;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      C v = C(Elem<T>::load(xr[i])) - m;
      yr[i] = Elem<T>::store(log_out ? v - log_s : m_exp(v) * inv_s);
    }
  }
}

template <class T>
__global__ void softmax_cols(const T* x, T* y, int64_t outer, int64_t n, int64_t inner,
                             bool log_out) {
  using C = typename Elem<T>::compute;
  int64_t total = outer * inner, step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < total; p += step) {
    int64_t base = (p / inner) * n * inner + p % inner;
    C m = C(-INFINITY);
    for (int64_t i = 0; i < n; ++i) {
      C v = Elem<T>::load(x[base + i * inner]);
      m = (m < v || v != v) ? v : m;
    }
    C s = C(0);
    for (int64_t i = 0; i < n; ++i) s += m_exp(C(Elem<T>::load(x[base + i * inner])) - m);
    const C log_s = m_log(s), inv_s = C(1) / s;
    for (int64_t i = 0; i < n; ++i) {
      C v = C(Elem<T>::load(x[base + i * inner])) - m;
      y[base + i * inner] = Elem<T>::store(log_out ? v - log_s : m_exp(v) * inv_s);
    }
  }
}

// softmax:     gx = y * (gy - sum(gy * y));   log_softmax: gx = gy - exp(y) * sum(gy)
template <class T>
__global__ void softmax_back_rows(const T* y, const T* gy, T* gx, int64_t outer, int64_t n,
                                  bool log_out) {
  using C = typename Elem<T>::compute;
  __shared__ C buf[kThreads];
  for (int64_t o = blockIdx.x; o < outer; o += gridDim.x) {
    const T* yr = y + o * n;
    const T* gr = gy + o * n;
    T* xr = gx + o * n;
    C s = C(0);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      C g = Elem<T>::load(gr[i]);
      s += log_out ? g : g * C(Elem<T>::load(yr[i]));
    }
    s = block_sum(s, buf);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      C g = Elem<T>::load(gr[i]), v = Elem<T>::load(yr[i]);
      xr[i] = Elem<T>::store(log_out ? g - m_exp(v) * s : v * (g - s));
    }
  }
}

template <class T>
__global__ void softmax_back_cols(const T* y, const T* gy, T* gx, int64_t outer, int64_t n,
                                  int64_t inner, bool log_out) {
  using C = typename Elem<T>::compute;
  int64_t total = outer * inner, step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < total; p += step) {
    int64_t base = (p / inner) * n * inner + p % inner;
    C s = C(0);
    for (int64_t i = 0; i < n; ++i) {
      C g = Elem<T>::load(gy[base + i * inner]);
      s += log_out ? g : g * C(Elem<T>::load(y[base + i * inner]));
    }
    for (int64_t i = 0; i < n; ++i) {
      C g = Elem<T>::load(gy[base + i * inner]), v = Elem<T>::load(y[base + i * inner]);
      gx[base + i * inner] = Elem<T>::store(log_out ? g - m_exp(v) * s : v * (g - s));
    }
  }
}

unsigned row_grid(int64_t outer) {
  return unsigned(outer < 65535 ? outer : 65535);
}

void check_inputs(const char* op, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts) {
    HD_CHECK(t->is_contiguous() && t->device().type == DeviceType::cuda, op,
             ": CUDA kernel expects contiguous CUDA tensors, got ", t->str());
  }
}

}  // namespace

void softmax_forward(const Tensor& x, Tensor& y, int64_t outer, int64_t n, int64_t inner,
                     bool log) {
  const char* op = log ? "log_softmax" : "softmax";
  check_inputs(op, {&x, &y});
  if (outer * n * inner == 0) return;
  DeviceGuard guard(x.device().index);
  visit_floating(x.dtype(), op, [&]<class T>() {
    const T* px = static_cast<const T*>(x.raw_data());
    T* py = static_cast<T*>(y.raw_data());
    if (inner == 1) {
      softmax_rows<T><<<row_grid(outer), kThreads, 0, stream_of(x)>>>(px, py, outer, n, log);
    } else {
      softmax_cols<T>
          <<<grid_for(outer * inner), kThreads, 0, stream_of(x)>>>(px, py, outer, n, inner, log);
    }
  });
  check_launch(op, x);
}

void softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx, int64_t outer, int64_t n,
                      int64_t inner, bool log) {
  const char* op = log ? "log_softmax_backward" : "softmax_backward";
  check_inputs(op, {&y, &gy, &gx});
  if (outer * n * inner == 0) return;
  DeviceGuard guard(y.device().index);
  visit_floating(y.dtype(), op, [&]<class T>() {
    const T* py = static_cast<const T*>(y.raw_data());
    const T* pg = static_cast<const T*>(gy.raw_data());
    T* px = static_cast<T*>(gx.raw_data());
    if (inner == 1) {
      softmax_back_rows<T>
          <<<row_grid(outer), kThreads, 0, stream_of(y)>>>(py, pg, px, outer, n, log);
    } else {
      softmax_back_cols<T><<<grid_for(outer * inner), kThreads, 0, stream_of(y)>>>(
          py, pg, px, outer, n, inner, log);
    }
  });
  check_launch(op, y);
}

}  // namespace hd::cuda
