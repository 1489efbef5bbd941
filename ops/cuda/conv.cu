// CUDA conv2d building blocks (contract of ops/cpu/conv.h; NCHW, contiguous, f32/f64; the
// frontend turns im2col + cuBLAS GEMM into conv2d). Plus adaptive max pooling (resample family
// on the CPU; the kernel sits here so the vision family has one CUDA translation unit per
// concern: this one for windows over images, index.cu for index arithmetic).
//
// Every kernel is one thread per output element in "gather" form: col2im and the depthwise
// input gradient read all the contributions of one input pixel instead of scattering into it,
// so there are no atomics, and the (ky, kx) summation order is the CPU's. cuDNN is not used yet
// (docs/cuda.md): these are simple and obviously correct first.
#include "ops/cpu/conv.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/kernels.h"

namespace hd::cuda {
namespace {

using Geo = cpu::Conv2dGeometry;

#define HD_GRID_LOOP(i, total)                                                  \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (total); \
       i += int64_t(gridDim.x) * blockDim.x)

// cols[b, (c, ky, kx), (oy, ox)] = x[b, c, oy*s - p + ky, ox*s - p + kx] or 0 outside.
template <class T>
__global__ void im2col_kernel(const T* x, T* cols, Geo g) {
  const int64_t npix = g.oh * g.ow, total = g.batch * g.channels * g.kh * g.kw * npix;
  HD_GRID_LOOP(i, total) {
    int64_t ox = i % g.ow, oy = (i / g.ow) % g.oh, r = i / npix;  // r = (b * C + c) * kh*kw + k
    int64_t kx = r % g.kw, ky = (r / g.kw) % g.kh, plane = r / (g.kh * g.kw);
    int64_t iy = oy * g.stride - g.pad + ky, ix = ox * g.stride - g.pad + kx;
    bool inside = iy >= 0 && iy < g.h && ix >= 0 && ix < g.w;
    cols[i] = inside ? x[(plane * g.h + iy) * g.w + ix] : T(0);
  }
}

// out[b, c, iy, ix] = sum over (ky, kx) whose window position hits (iy, ix) of cols[...].
template <class T>
__global__ void col2im_kernel(const T* cols, T* out, Geo g) {
  const int64_t npix = g.oh * g.ow, total = g.batch * g.channels * g.h * g.w;
  HD_GRID_LOOP(i, total) {
    int64_t ix = i % g.w, iy = (i / g.w) % g.h, plane = i / (g.h * g.w);
    T acc = T(0);
    for (int64_t ky = 0; ky < g.kh; ++ky) {
      int64_t ty = iy + g.pad - ky;  // = oy * stride
      if (ty < 0 || ty % g.stride != 0 || ty / g.stride >= g.oh) continue;
      int64_t oy = ty / g.stride;
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        int64_t tx = ix + g.pad - kx;
        if (tx < 0 || tx % g.stride != 0 || tx / g.stride >= g.ow) continue;
        int64_t ox = tx / g.stride;
        acc += cols[((plane * g.kh + ky) * g.kw + kx) * npix + oy * g.ow + ox];
      }
    }
    out[i] = acc;
  }
}

template <class T>
__global__ void dw_forward_kernel(const T* x, const T* w, T* out, Geo g) {
  const int64_t total = g.batch * g.channels * g.oh * g.ow;
  HD_GRID_LOOP(i, total) {
    int64_t ox = i % g.ow, oy = (i / g.ow) % g.oh, plane = i / (g.oh * g.ow);
    const T* wk = w + (plane % g.channels) * g.kh * g.kw;
    T acc = T(0);
    for (int64_t ky = 0; ky < g.kh; ++ky) {
      int64_t iy = oy * g.stride - g.pad + ky;
      if (iy < 0 || iy >= g.h) continue;
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        int64_t ix = ox * g.stride - g.pad + kx;
        if (ix < 0 || ix >= g.w) continue;
        acc += wk[ky * g.kw + kx] * x[(plane * g.h + iy) * g.w + ix];
      }
    }
    out[i] = acc;
  }
}

template <class T>
__global__ void dw_backward_input_kernel(const T* gy, const T* w, T* gx, Geo g) {
  const int64_t total = g.batch * g.channels * g.h * g.w;
  HD_GRID_LOOP(i, total) {
    int64_t ix = i % g.w, iy = (i / g.w) % g.h, plane = i / (g.h * g.w);
    const T* wk = w + (plane % g.channels) * g.kh * g.kw;
    T acc = T(0);
    for (int64_t ky = 0; ky < g.kh; ++ky) {
      int64_t ty = iy + g.pad - ky;
      if (ty < 0 || ty % g.stride != 0 || ty / g.stride >= g.oh) continue;
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        int64_t tx = ix + g.pad - kx;
        if (tx < 0 || tx % g.stride != 0 || tx / g.stride >= g.ow) continue;
        acc += wk[ky * g.kw + kx] * gy[(plane * g.oh + ty / g.stride) * g.ow + tx / g.stride];
      }
    }
    gx[i] = acc;
  }
}

// gw[c, ky, kx] = sum over b, oy, ox of gy[b, c, oy, ox] * x[b, c, iy, ix].
template <class T>
__global__ void dw_backward_weight_kernel(const T* gy, const T* x, T* gw, Geo g) {
  const int64_t total = g.channels * g.kh * g.kw;
  HD_GRID_LOOP(i, total) {
    int64_t kx = i % g.kw, ky = (i / g.kw) % g.kh, c = i / (g.kh * g.kw);
    T acc = T(0);
    for (int64_t b = 0; b < g.batch; ++b) {
      int64_t plane = b * g.channels + c;
      for (int64_t oy = 0; oy < g.oh; ++oy) {
        int64_t iy = oy * g.stride - g.pad + ky;
        if (iy < 0 || iy >= g.h) continue;
        for (int64_t ox = 0; ox < g.ow; ++ox) {
          int64_t ix = ox * g.stride - g.pad + kx;
          if (ix < 0 || ix >= g.w) continue;
          acc += gy[(plane * g.oh + oy) * g.ow + ox] * x[(plane * g.h + iy) * g.w + ix];
        }
      }
    }
    gw[i] = acc;
  }
}

template <class T>
__global__ void adaptive_max_pool_kernel(const T* x, T* values, int64_t* indices, int64_t planes,
                                         int64_t h, int64_t w, int64_t oh, int64_t ow) {
  const int64_t total = planes * oh * ow;
  HD_GRID_LOOP(i, total) {
    int64_t ox = i % ow, oy = (i / ow) % oh, p = i / (oh * ow);
    int64_t y0 = oy * h / oh, y1 = ((oy + 1) * h + oh - 1) / oh;
    int64_t x0 = ox * w / ow, x1 = ((ox + 1) * w + ow - 1) / ow;
    const T* plane = x + p * h * w;
    int64_t best = y0 * w + x0;
    T bv = plane[best];
    for (int64_t y = y0; y < y1; ++y) {
      for (int64_t xx = x0; xx < x1; ++xx) {
        T v = plane[y * w + xx];
        if (v > bv || (v != v && bv == bv)) {
          bv = v;
          best = y * w + xx;
        }
      }
    }
    values[i] = bv;
    indices[i] = best;
  }
}
#undef HD_GRID_LOOP

template <class F>
void run(const char* op, const Tensor& t, int64_t total, F launch) {
  if (total <= 0) return;
  DeviceGuard guard(t.device().index);
  visit_float(t.dtype(), op,
              [&]<class T>() { launch.template operator()<T>(grid_for(total), stream_of(t)); });
  check_launch(op, t);
}

template <class T>
const T* in(const Tensor& t) {
  return static_cast<const T*>(t.raw_data());
}
template <class T>
T* outp(Tensor& t) {
  return static_cast<T*>(t.raw_data());
}

}  // namespace

void im2col(const Tensor& x, const cpu::Conv2dGeometry& g, Tensor& cols) {
  run("im2col", x, g.batch * g.channels * g.kh * g.kw * g.oh * g.ow,
      [&]<class T>(unsigned grid, cudaStream_t s) {
        im2col_kernel<T><<<grid, kThreads, 0, s>>>(in<T>(x), outp<T>(cols), g);
      });
}
void col2im(const Tensor& cols, const cpu::Conv2dGeometry& g, Tensor& out) {
  run("col2im", cols, g.batch * g.channels * g.h * g.w,
      [&]<class T>(unsigned grid, cudaStream_t s) {
        col2im_kernel<T><<<grid, kThreads, 0, s>>>(in<T>(cols), outp<T>(out), g);
      });
}
void depthwise_forward(const Tensor& x, const Tensor& weight, const cpu::Conv2dGeometry& g,
                       Tensor& out) {
  run("depthwise_conv2d", x, g.batch * g.channels * g.oh * g.ow,
      [&]<class T>(unsigned grid, cudaStream_t s) {
        dw_forward_kernel<T><<<grid, kThreads, 0, s>>>(in<T>(x), in<T>(weight), outp<T>(out), g);
      });
}
void depthwise_backward_input(const Tensor& grad_out, const Tensor& weight,
                              const cpu::Conv2dGeometry& g, Tensor& grad_x) {
  run("depthwise_conv2d_backward_input", grad_out, g.batch * g.channels * g.h * g.w,
      [&]<class T>(unsigned grid, cudaStream_t s) {
        dw_backward_input_kernel<T>
            <<<grid, kThreads, 0, s>>>(in<T>(grad_out), in<T>(weight), outp<T>(grad_x), g);
      });
}
void depthwise_backward_weight(const Tensor& grad_out, const Tensor& x,
                               const cpu::Conv2dGeometry& g, Tensor& grad_weight) {
  run("depthwise_conv2d_backward_weight", grad_out, g.channels * g.kh * g.kw,
      [&]<class T>(unsigned grid, cudaStream_t s) {
        dw_backward_weight_kernel<T>
            <<<grid, kThreads, 0, s>>>(in<T>(grad_out), in<T>(x), outp<T>(grad_weight), g);
      });
}
void adaptive_max_pool2d(const Tensor& x, int64_t planes, int64_t h, int64_t w, int64_t oh,
                         int64_t ow, Tensor& values, Tensor& indices) {
  run("adaptive_max_pool2d", x, planes * oh * ow, [&]<class T>(unsigned grid, cudaStream_t s) {
    adaptive_max_pool_kernel<T><<<grid, kThreads, 0, s>>>(
        in<T>(x), outp<T>(values), static_cast<int64_t*>(indices.raw_data()), planes, h, w, oh, ow);
  });
}

}  // namespace hd::cuda
