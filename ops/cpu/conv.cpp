#include "ops/cpu/conv.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "autograd/thread_pool.h"
#include "ops/cpu/copy_bytes.h"
#include "ops/cpu/depthwise_avx512.h"
#include "ops/cpu/isa.h"

namespace hd::cpu {
namespace {

// Output columns ox whose input column ox * stride - pad + kx lies inside [0, w): [lo, hi).
// Computing the range once per (kx) keeps the inner loops free of bounds tests (and for
// stride 1 they become contiguous axpys the compiler vectorises).
struct Span {
  int64_t lo, hi;
};
Span valid_span(int64_t k, int64_t stride, int64_t pad, int64_t in, int64_t out) {
  int64_t first = pad - k;  // need ox * stride >= first
  int64_t lo = first <= 0 ? 0 : (first + stride - 1) / stride;
  int64_t last = in - 1 + pad - k;  // need ox * stride <= last
  int64_t hi = last < 0 ? 0 : last / stride + 1;
  return {std::min(lo, out), std::max(std::min(hi, out), std::min(lo, out))};
}

// y[0:n] += a * x[0:n]; the buffers never overlap (distinct tensors), and saying so lets the
// compiler vectorise.
template <class T>
inline void axpy(int64_t n, T a, const T* __restrict x, T* __restrict y) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// z[0:n] += x[0:n] * y[0:n] elementwise.
template <class T>
inline void fma_lanes(int64_t n, const T* __restrict x, const T* __restrict y, T* __restrict z) {
  for (int64_t i = 0; i < n; ++i) z[i] += x[i] * y[i];
}

int64_t plane_grain(const Conv2dGeometry& g) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(g.oh * g.ow * g.kh * g.kw, 1));
}

template <class T>
void im2col_t(const Tensor& x, const Conv2dGeometry& g, Tensor& cols) {
  const T* xp = x.data<T>();
  T* cp = cols.data<T>();
  int64_t npix = g.oh * g.ow;
  parallel_for(0, g.batch * g.channels, plane_grain(g), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const T* plane = xp + p * g.h * g.w;
      // Rows (c, ky, kx) of batch b are contiguous in cols: plane p = b * C + c owns kh * kw.
      T* rows = cp + p * g.kh * g.kw * npix;
      for (int64_t ky = 0; ky < g.kh; ++ky) {
        for (int64_t kx = 0; kx < g.kw; ++kx) {
          T* row = rows + (ky * g.kw + kx) * npix;
          Span sx = valid_span(kx, g.stride, g.pad, g.w, g.ow);
          for (int64_t oy = 0; oy < g.oh; ++oy) {
            T* dst = row + oy * g.ow;
            int64_t iy = oy * g.stride - g.pad + ky;
            if (iy < 0 || iy >= g.h) {
              std::fill(dst, dst + g.ow, T(0));
              continue;
            }
            const T* src = plane + iy * g.w - g.pad + kx;
            std::fill(dst, dst + sx.lo, T(0));
            for (int64_t ox = sx.lo; ox < sx.hi; ++ox) dst[ox] = src[ox * g.stride];
            std::fill(dst + sx.hi, dst + g.ow, T(0));
          }
        }
      }
    }
  });
}

template <class T>
void col2im_t(const Tensor& cols, const Conv2dGeometry& g, Tensor& out) {
  const T* cp = cols.data<T>();
  T* op = out.data<T>();
  int64_t npix = g.oh * g.ow;
  parallel_for(0, g.batch * g.channels, plane_grain(g), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      T* plane = op + p * g.h * g.w;
      std::fill(plane, plane + g.h * g.w, T(0));
      const T* rows = cp + p * g.kh * g.kw * npix;
      for (int64_t ky = 0; ky < g.kh; ++ky) {
        for (int64_t kx = 0; kx < g.kw; ++kx) {
          const T* row = rows + (ky * g.kw + kx) * npix;
          Span sx = valid_span(kx, g.stride, g.pad, g.w, g.ow);
          for (int64_t oy = 0; oy < g.oh; ++oy) {
            int64_t iy = oy * g.stride - g.pad + ky;
            if (iy < 0 || iy >= g.h) continue;
            T* dst = plane + iy * g.w - g.pad + kx;
            const T* src = row + oy * g.ow;
            for (int64_t ox = sx.lo; ox < sx.hi; ++ox) dst[ox * g.stride] += src[ox];
          }
        }
      }
    }
  });
}

template <class T>
void dw_forward_t(const Tensor& x, const Tensor& weight, const Conv2dGeometry& g, Tensor& out) {
  const T* xp = x.data<T>();
  const T* wp = weight.data<T>();
  T* op = out.data<T>();
  parallel_for(0, g.batch * g.channels, plane_grain(g), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const T* plane = xp + p * g.h * g.w;
      const T* wk = wp + (p % g.channels) * g.kh * g.kw;
      T* dst_plane = op + p * g.oh * g.ow;
      std::fill(dst_plane, dst_plane + g.oh * g.ow, T(0));
      for (int64_t oy = 0; oy < g.oh; ++oy) {
        T* dst = dst_plane + oy * g.ow;
        for (int64_t ky = 0; ky < g.kh; ++ky) {
          int64_t iy = oy * g.stride - g.pad + ky;
          if (iy < 0 || iy >= g.h) continue;
          for (int64_t kx = 0; kx < g.kw; ++kx) {
            Span sx = valid_span(kx, g.stride, g.pad, g.w, g.ow);
            T wv = wk[ky * g.kw + kx];
            const T* src = plane + iy * g.w - g.pad + kx;
            if (g.stride == 1) {
              axpy(sx.hi - sx.lo, wv, src + sx.lo, dst + sx.lo);
            } else {
              for (int64_t ox = sx.lo; ox < sx.hi; ++ox) dst[ox] += wv * src[ox * g.stride];
            }
          }
        }
      }
    }
  });
}

template <class T>
void dw_backward_input_t(const Tensor& grad_out, const Tensor& weight, const Conv2dGeometry& g,
                         Tensor& grad_x) {
  const T* gp = grad_out.data<T>();
  const T* wp = weight.data<T>();
  T* xp = grad_x.data<T>();
  parallel_for(0, g.batch * g.channels, plane_grain(g), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      T* plane = xp + p * g.h * g.w;
      std::fill(plane, plane + g.h * g.w, T(0));
      const T* wk = wp + (p % g.channels) * g.kh * g.kw;
      const T* gplane = gp + p * g.oh * g.ow;
      for (int64_t oy = 0; oy < g.oh; ++oy) {
        const T* src = gplane + oy * g.ow;
        for (int64_t ky = 0; ky < g.kh; ++ky) {
          int64_t iy = oy * g.stride - g.pad + ky;
          if (iy < 0 || iy >= g.h) continue;
          for (int64_t kx = 0; kx < g.kw; ++kx) {
            Span sx = valid_span(kx, g.stride, g.pad, g.w, g.ow);
            T wv = wk[ky * g.kw + kx];
            T* dst = plane + iy * g.w - g.pad + kx;
            if (g.stride == 1) {
              axpy(sx.hi - sx.lo, wv, src + sx.lo, dst + sx.lo);
            } else {
              for (int64_t ox = sx.lo; ox < sx.hi; ++ox) dst[ox * g.stride] += wv * src[ox];
            }
          }
        }
      }
    }
  });
}

template <class T>
void dw_backward_weight_t(const Tensor& grad_out, const Tensor& x, const Conv2dGeometry& g,
                          Tensor& grad_weight) {
  const T* gp = grad_out.data<T>();
  const T* xp = x.data<T>();
  T* wp = grad_weight.data<T>();
  int64_t taps = g.kh * g.kw;
  // One task per channel: it sums over batches and pixels in a fixed order, so the result is
  // the same for every thread count. Products are accumulated per output column ("lanes", a
  // vectorisable multiply-add) over rows and batches, then each tap's lanes are summed in
  // double.
  int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(g.batch * g.oh * g.ow * taps, 1));
  parallel_for(0, g.channels, grain, [&](int64_t c0, int64_t c1) {
    std::vector<T> lanes(static_cast<size_t>(taps * g.ow));
    for (int64_t c = c0; c < c1; ++c) {
      std::fill(lanes.begin(), lanes.end(), T(0));
      for (int64_t b = 0; b < g.batch; ++b) {
        const T* plane = xp + (b * g.channels + c) * g.h * g.w;
        const T* gplane = gp + (b * g.channels + c) * g.oh * g.ow;
        for (int64_t oy = 0; oy < g.oh; ++oy) {
          const T* gr = gplane + oy * g.ow;
          for (int64_t ky = 0; ky < g.kh; ++ky) {
            int64_t iy = oy * g.stride - g.pad + ky;
            if (iy < 0 || iy >= g.h) continue;
            for (int64_t kx = 0; kx < g.kw; ++kx) {
              Span sx = valid_span(kx, g.stride, g.pad, g.w, g.ow);
              const T* src = plane + iy * g.w - g.pad + kx;
              T* lane = lanes.data() + (ky * g.kw + kx) * g.ow;
              if (g.stride == 1) {
                fma_lanes(sx.hi - sx.lo, gr + sx.lo, src + sx.lo, lane + sx.lo);
              } else {
                for (int64_t ox = sx.lo; ox < sx.hi; ++ox) lane[ox] += gr[ox] * src[ox * g.stride];
              }
            }
          }
        }
      }
      for (int64_t t = 0; t < taps; ++t) {
        double acc = 0;
        for (int64_t ox = 0; ox < g.ow; ++ox) acc += double(lanes[size_t(t * g.ow + ox)]);
        wp[c * taps + t] = T(acc);
      }
    }
  });
}

// ---- Stride 1: the path ConvNeXt's 7x7 takes ----------------------------------------------
//
// Each plane is first copied into a zero-bordered scratch whose rows are padded to whole
// blocks, so the tap loops have no bounds tests and no tails. The sum for a block of
// kBlock outputs stays in registers over all kh * kw taps (four AVX vectors of f32) and is
// stored once; the general path above reads and writes the output row once per tap, which
// halved its throughput. Taps are summed in (ky, kx) order as there, and the backward-input
// pass is the same correlation with the kernel flipped. Multiply-adds are spelled std::fma, the
// bits of the AVX-512 kernels for 7-tap rows (depthwise_avx512.h) that take f32 planes on CPUs
// with AVX-512.
template <class T>
constexpr int64_t kBlock = 128 / sizeof(T);  // 32 floats, 16 doubles

struct PaddedPlane {
  int64_t rows = 0, row_len = 0;  // row_len: whole blocks of outputs plus kw - 1 taps
};

// src [h, w] -> scratch [rows, row_len] with src[y][x] at (y + pad_y, x + pad_x), zero elsewhere;
// 16-bit storage (E) widened to the compute type T on the way, the copy the plane needed anyway.
template <class E, class T>
void pad_plane(const E* src, int64_t h, int64_t w, int64_t pad_y, int64_t pad_x,
               const PaddedPlane& p, std::vector<T>& scratch) {
  scratch.assign(static_cast<size_t>(p.rows * p.row_len), T(0));
  int64_t x0 = std::max<int64_t>(0, -pad_x), x1 = std::min(w, p.row_len - pad_x);
  for (int64_t y = 0; y < h; ++y) {
    int64_t py = y + pad_y;
    if (py < 0 || py >= p.rows || x1 <= x0) continue;
    T* dst = scratch.data() + py * p.row_len + x0 + pad_x;
    if constexpr (std::is_same_v<E, T>) {
      std::copy(src + y * w + x0, src + y * w + x1, dst);
    } else {
      for (int64_t x = x0; x < x1; ++x) dst[x - x0] = ElementTraits<E>::load(src[y * w + x]);
    }
  }
}

// A kernel's taps (or any small tensor) in the compute type.
template <class E, class T>
std::vector<T> widened(const E* src, int64_t n) {
  std::vector<T> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[size_t(i)] = ElementTraits<E>::load(src[i]);
  return out;
}

template <class T>
PaddedPlane padded_geometry(int64_t oh, int64_t ow, int64_t kh, int64_t kw) {
  int64_t blocks = (ow + kBlock<T> - 1) / kBlock<T>;
  return {oh + kh - 1, blocks * kBlock<T> + kw - 1};
}

// Where the AVX-512 7-tap kernels run: f32 planes, 7 taps per row, an AVX-512 CPU.
template <class T>
bool seven_tap_kernels(int64_t kw) {
  return std::is_same_v<T, float> && kw == 7 && vector_isa().avx512;
}

// out[oy][ox] = sum_{ky, kx} taps[ky][kx] * padded[oy + ky][ox + kx], stored as E (rounded once
// for 16-bit storage). rows: the AVX-512 kernel's f32 output plane (whole vectors per row).
template <class T, class E>
void correlate_padded(const T* padded, const PaddedPlane& p, const T* taps, int64_t kh, int64_t kw,
                      int64_t oh, int64_t ow, E* out, std::vector<T>& rows) {
  constexpr int64_t B = kBlock<T>;
  if constexpr (std::is_same_v<T, float>) {
    if (seven_tap_kernels<T>(kw)) {
      const int64_t ld = (ow + 15) / 16 * 16;
      rows.resize(static_cast<size_t>(oh * ld));
      depthwise7::correlate_rows(padded, p.row_len, taps, kh, oh, ow, rows.data(), ld);
      for (int64_t oy = 0; oy < oh; ++oy) {
        const float* src = rows.data() + oy * ld;
        E* dst = out + oy * ow;
        if constexpr (std::is_same_v<E, T>) {
          std::copy(src, src + ow, dst);
        } else if constexpr (std::is_same_v<E, bf16_t>) {
          round_to_bf16(src, dst, ow);  // float_to_bf16's bits, 16 values at a time
        } else {
          for (int64_t i = 0; i < ow; ++i) dst[i] = ElementTraits<E>::store(src[i]);
        }
      }
      return;
    }
  }
  for (int64_t oy = 0; oy < oh; ++oy) {
    for (int64_t ox0 = 0; ox0 < ow; ox0 += B) {
      T acc[B] = {};
      for (int64_t ky = 0; ky < kh; ++ky) {
        const T* row = padded + (oy + ky) * p.row_len + ox0;
        for (int64_t kx = 0; kx < kw; ++kx) {
          const T wv = taps[ky * kw + kx];
          const T* src = row + kx;
          for (int64_t i = 0; i < B; ++i) acc[i] = std::fma(wv, src[i], acc[i]);
        }
      }
      const int64_t n = std::min(B, ow - ox0);
      if constexpr (std::is_same_v<E, T>) {
        std::copy(acc, acc + n, out + oy * ow + ox0);
      } else {
        for (int64_t i = 0; i < n; ++i) out[oy * ow + ox0 + i] = ElementTraits<E>::store(acc[i]);
      }
    }
  }
}

// E: the tensors' storage type; T: the compute type (f32 for bf16).
template <class E, class T = typename ElementTraits<E>::compute>
void dw_forward_stride1(const Tensor& x, const Tensor& weight, const Conv2dGeometry& g,
                        Tensor& out) {
  const E* xp = x.data<E>();
  const std::vector<T> taps = widened<E, T>(weight.data<E>(), weight.numel());
  const T* wp = taps.data();
  E* op = out.data<E>();
  const PaddedPlane p = padded_geometry<T>(g.oh, g.ow, g.kh, g.kw);
  parallel_for(0, g.batch * g.channels, plane_grain(g), [&](int64_t p0, int64_t p1) {
    std::vector<T> scratch, rows;
    for (int64_t plane = p0; plane < p1; ++plane) {
      pad_plane(xp + plane * g.h * g.w, g.h, g.w, g.pad, g.pad, p, scratch);
      correlate_padded(scratch.data(), p, wp + (plane % g.channels) * g.kh * g.kw, g.kh, g.kw, g.oh,
                       g.ow, op + plane * g.oh * g.ow, rows);
    }
  });
}

// grad_x[iy][ix] = sum_{ky, kx} w[ky][kx] * grad_out[iy + pad - ky][ix + pad - kx]: the forward
// correlation of grad_out with the flipped kernel and padding k - 1 - pad.
template <class E, class T = typename ElementTraits<E>::compute>
void dw_backward_input_stride1(const Tensor& grad_out, const Tensor& weight,
                               const Conv2dGeometry& g, Tensor& grad_x) {
  const E* gp = grad_out.data<E>();
  const std::vector<T> all_taps = widened<E, T>(weight.data<E>(), weight.numel());
  const T* wp = all_taps.data();
  E* xp = grad_x.data<E>();
  const int64_t taps = g.kh * g.kw;
  const PaddedPlane p = padded_geometry<T>(g.h, g.w, g.kh, g.kw);
  parallel_for(0, g.batch * g.channels, plane_grain(g), [&](int64_t p0, int64_t p1) {
    std::vector<T> scratch, rows, flipped(static_cast<size_t>(taps));
    for (int64_t plane = p0; plane < p1; ++plane) {
      const T* wk = wp + (plane % g.channels) * taps;
      std::reverse_copy(wk, wk + taps, flipped.begin());
      pad_plane(gp + plane * g.oh * g.ow, g.oh, g.ow, g.kh - 1 - g.pad, g.kw - 1 - g.pad, p,
                scratch);
      correlate_padded(scratch.data(), p, flipped.data(), g.kh, g.kw, g.h, g.w,
                       xp + plane * g.h * g.w, rows);
    }
  });
}

// grad_w[ky][kx] = sum_{b, oy, ox} grad_out[oy][ox] * padded_x[oy + ky][ox + kx]. One task per
// channel (fixed order for every thread count); per tap, kBlock lanes accumulate one plane in
// T and each plane's lanes are added to the tap's total in double.
template <class E, class T = typename ElementTraits<E>::compute>
void dw_backward_weight_stride1(const Tensor& grad_out, const Tensor& x, const Conv2dGeometry& g,
                                Tensor& grad_weight) {
  constexpr int64_t B = kBlock<T>;
  const E* gp = grad_out.data<E>();
  const E* xp = x.data<E>();
  E* wp = grad_weight.data<E>();
  const int64_t taps = g.kh * g.kw;
  const PaddedPlane p = padded_geometry<T>(g.oh, g.ow, g.kh, g.kw);
  const PaddedPlane grad_rows{g.oh, p.row_len - (g.kw - 1)};  // grad_out rows, zero beyond ow
  int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(g.batch * g.oh * g.ow * taps, 1));
  parallel_for(0, g.channels, grain, [&](int64_t c0, int64_t c1) {
    std::vector<T> padded_x, padded_grad;
    std::vector<double> total(static_cast<size_t>(taps));
    for (int64_t c = c0; c < c1; ++c) {
      std::fill(total.begin(), total.end(), 0.0);
      for (int64_t b = 0; b < g.batch; ++b) {
        const int64_t plane = b * g.channels + c;
        pad_plane(xp + plane * g.h * g.w, g.h, g.w, g.pad, g.pad, p, padded_x);
        pad_plane(gp + plane * g.oh * g.ow, g.oh, g.ow, 0, 0, grad_rows, padded_grad);
        for (int64_t ky = 0; ky < g.kh; ++ky) {
          if constexpr (std::is_same_v<T, float>) {
            if (seven_tap_kernels<T>(g.kw)) {  // the seven taps of row ky at once
              float lanes[7][B] = {};
              depthwise7::weight_lanes_row(padded_grad.data(), grad_rows.row_len, padded_x.data(),
                                           p.row_len, ky, g.oh, grad_rows.row_len, &lanes[0][0]);
              for (int64_t kx = 0; kx < 7; ++kx) {
                double sum = 0;
                for (int64_t i = 0; i < B; ++i) sum += double(lanes[kx][i]);
                total[size_t(ky * g.kw + kx)] += sum;
              }
              continue;
            }
          }
          for (int64_t kx = 0; kx < g.kw; ++kx) {
            T acc[B] = {};
            for (int64_t oy = 0; oy < g.oh; ++oy) {
              const T* gr = padded_grad.data() + oy * grad_rows.row_len;
              const T* src = padded_x.data() + (oy + ky) * p.row_len + kx;
              for (int64_t ox0 = 0; ox0 < grad_rows.row_len; ox0 += B) {
                for (int64_t i = 0; i < B; ++i)
                  acc[i] = std::fma(gr[ox0 + i], src[ox0 + i], acc[i]);
              }
            }
            double sum = 0;
            for (int64_t i = 0; i < B; ++i) sum += double(acc[i]);
            total[size_t(ky * g.kw + kx)] += sum;
          }
        }
      }
      for (int64_t t = 0; t < taps; ++t)
        wp[c * taps + t] = ElementTraits<E>::store(T(total[size_t(t)]));
    }
  });
}

}  // namespace

void im2col(const Tensor& x, const Conv2dGeometry& g, Tensor& cols) {
  visit_float(x.dtype(), "conv2d", [&]<class T>() { im2col_t<T>(x, g, cols); });
}
void col2im(const Tensor& cols, const Conv2dGeometry& g, Tensor& out) {
  visit_float(cols.dtype(), "conv2d", [&]<class T>() { col2im_t<T>(cols, g, out); });
}
void depthwise_forward(const Tensor& x, const Tensor& weight, const Conv2dGeometry& g,
                       Tensor& out) {
  if (x.dtype() == DType::bf16) {
    HD_CHECK(g.stride == 1, "depthwise_forward: bf16 runs the stride-1 kernel only");
    return dw_forward_stride1<bf16_t>(x, weight, g, out);
  }
  visit_float(x.dtype(), "conv2d", [&]<class T>() {
    if (g.stride == 1) {
      dw_forward_stride1<T>(x, weight, g, out);
    } else {
      dw_forward_t<T>(x, weight, g, out);
    }
  });
}
void gather_patches(const Tensor& x, int64_t k, Tensor& out) {
  const int64_t B = x.size(0), C = x.size(1), oh = x.size(2) / k, ow = x.size(3) / k;
  const int64_t patch = C * k * k, sb = x.stride(0), sc = x.stride(1), sh = x.stride(2);
  HD_CHECK(x.size(3) <= 1 || x.stride(3) == 1, "gather_patches: ", x.str(),
           " needs a unit stride along its width");
  HD_CHECK(out.is_contiguous() && out.shape() == Shape({B, oh * ow, patch}), "gather_patches: out ",
           out.str(), " must be contiguous [", B, ", ", oh * ow, ", ", patch, "]");
  // Two passes per (image, patch row) task: its C * k image rows are read in order (three
  // sequential streams) into a strip that stays in L2, converted on the way where out's dtype
  // differs, and out's block is then written in order, patch by patch, from the strip. Copying
  // in out's order straight from x reads k values from each of C * k image rows in turn, a
  // pattern the prefetchers do not follow. The 1512 px selection image (BM_PatchifyCopy, medians
  // of interleaved runs, 2 threads of a Zen 4 EPYC): f32 11.0 ms as a copy of the permuted view,
  // 4.0 ms here; into bf16 6.7 ms as a cast and a bf16 gather, 3.1 ms here (one pass in x's
  // order with k-value writes into out took 7.6 and 7.8 ms).
  auto rows = [&]<class O, class I>() {
    const I* px = static_cast<const I*>(x.raw_data());
    O* po = static_cast<O*>(out.raw_data());
    const int64_t width = ow * k, strip_rows = C * k;
    parallel_for(0, B * oh, 1, [&](int64_t t0, int64_t t1) {
      std::vector<O> strip(size_t(strip_rows * width));
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t b = t / oh, py = t % oh;
        for (int64_t c = 0; c < C; ++c) {
          for (int64_t ky = 0; ky < k; ++ky) {
            const I* row = px + b * sb + c * sc + (py * k + ky) * sh;
            O* to = strip.data() + (c * k + ky) * width;
            if constexpr (std::is_same_v<O, I>) {
              std::memcpy(to, row, size_t(width) * sizeof(O));
            } else {
              round_to_bf16(row, to, width);
            }
          }
        }
        O* block = po + t * ow * patch;
        for (int64_t p = 0; p < ow; ++p) {
          O* dst = block + p * patch;
          const O* src = strip.data() + p * k;
          for (int64_t r = 0; r < strip_rows; ++r) {
            copy_bytes(dst + r * k, src + r * width, size_t(k) * sizeof(O));
          }
        }
      }
    });
  };
  if (x.dtype() == DType::f32 && out.dtype() == DType::bf16) {
    rows.template operator()<bf16_t, float>();
    return;
  }
  HD_CHECK(x.dtype() == out.dtype(), "gather_patches: converts f32 to bf16 only, not ",
           dtype_name(x.dtype()), " to ", dtype_name(out.dtype()));
  switch (dtype_size(x.dtype())) {
    case 2:
      rows.template operator()<uint16_t, uint16_t>();
      return;
    case 4:
      rows.template operator()<uint32_t, uint32_t>();
      return;
    case 8:
      rows.template operator()<uint64_t, uint64_t>();
      return;
    default:
      throw Error(detail::concat("gather_patches: no kernel for ", x.str()));
  }
}

void depthwise_backward_input(const Tensor& grad_out, const Tensor& weight, const Conv2dGeometry& g,
                              Tensor& grad_x) {
  if (grad_out.dtype() == DType::bf16) {
    HD_CHECK(g.stride == 1, "depthwise_backward_input: bf16 runs the stride-1 kernel only");
    return dw_backward_input_stride1<bf16_t>(grad_out, weight, g, grad_x);
  }
  visit_float(grad_out.dtype(), "conv2d", [&]<class T>() {
    if (g.stride == 1) {
      dw_backward_input_stride1<T>(grad_out, weight, g, grad_x);
    } else {
      dw_backward_input_t<T>(grad_out, weight, g, grad_x);
    }
  });
}
void depthwise_backward_weight(const Tensor& grad_out, const Tensor& x, const Conv2dGeometry& g,
                               Tensor& grad_weight) {
  if (grad_out.dtype() == DType::bf16) {
    HD_CHECK(g.stride == 1, "depthwise_backward_weight: bf16 runs the stride-1 kernel only");
    return dw_backward_weight_stride1<bf16_t>(grad_out, x, g, grad_weight);
  }
  visit_float(grad_out.dtype(), "conv2d", [&]<class T>() {
    if (g.stride == 1) {
      dw_backward_weight_stride1<T>(grad_out, x, g, grad_weight);
    } else {
      dw_backward_weight_t<T>(grad_out, x, g, grad_weight);
    }
  });
}

}  // namespace hd::cpu
