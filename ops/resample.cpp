// Resampling frontends. The linear modes are separable, so each is a pair of per-axis weight
// matrices [out, in] built on the host and applied with two matmuls (gradients come from
// MatmulBackward). Weights are computed in the tensor's compute type (float for f32, double for
// f64) following PyTorch 1.13's CPU code step by step, so f32 results match it to rounding.
#include "ops/resample.h"

#include <cmath>
#include <vector>

#include "autograd/node.h"
#include "ops/cpu/resample.h"
#include "ops/cpu_half.h"
#include "ops/cuda/kernels.h"
#include "ops/dispatch.h"
#include "ops/factory.h"
#include "ops/index.h"
#include "ops/linalg.h"
#include "ops/shape.h"

namespace hd {
namespace {

const char* mode_name(ResampleMode m) {
  switch (m) {
    case ResampleMode::nearest:
      return "nearest";
    case ResampleMode::bilinear:
      return "bilinear";
    case ResampleMode::bicubic:
      return "bicubic";
    case ResampleMode::area:
      return "area";
  }
  return "?";
}

// Keys cubic convolution, |x| <= 1 and 1 < |x| < 2 branches (PyTorch's cubic_convolution1/2).
template <class T>
T cubic1(T x, T a) {
  return ((a + 2) * x - (a + 3)) * x * x + 1;
}
template <class T>
T cubic2(T x, T a) {
  return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
}

// Filters of the antialiased path (PyTorch's aa_filter for linear and cubic, a = -0.5).
template <class T>
T triangle_filter(T x) {
  x = std::abs(x);
  return x < 1 ? 1 - x : T(0);
}
template <class T>
T cubic_aa_filter(T x) {
  const T a = T(-0.5);
  x = std::abs(x);
  if (x < 1) return cubic1(x, a);
  if (x < 2) return cubic2(x, a);
  return T(0);
}

// Row i of the matrix gets weights w at columns j (clamped taps add up on border columns).
template <class T>
std::vector<T> build_weights(int64_t in, int64_t out, ResampleMode mode, bool antialias) {
  std::vector<T> m(size_t(in * out), T(0));
  auto at = [&](int64_t i, int64_t j) -> T& { return m[size_t(i * in + j)]; };
  // area_pixel_compute_scale without align_corners or an explicit scale factor.
  const T scale = T(in) / T(out);
  for (int64_t i = 0; i < out; ++i) {
    if (mode == ResampleMode::nearest) {
      // Legacy rule, in float as PyTorch computes it (the 2x case is special-cased there too).
      int64_t src;
      if (out == in)
        src = i;
      else if (out == 2 * in)
        src = i >> 1;
      else
        src = std::min(int64_t(std::floor(float(i) * (float(in) / float(out)))), in - 1);
      at(i, src) = T(1);
    } else if (mode == ResampleMode::area) {
      // Adaptive average pooling window [floor(i * in / out), ceil((i + 1) * in / out)).
      int64_t lo = i * in / out, hi = ((i + 1) * in + out - 1) / out;
      for (int64_t j = lo; j < hi; ++j) at(i, j) = T(1) / T(hi - lo);
    } else if (antialias) {
      // _compute_indices_weights_aa: the filter is stretched by the downsampling factor, taps
      // outside the input are dropped and the rest renormalised.
      bool cubic = mode == ResampleMode::bicubic;
      T support = (cubic ? T(2) : T(1)) * (scale >= 1 ? scale : T(1));
      T invscale = scale >= 1 ? T(1) / scale : T(1);
      T center = scale * (T(i) + T(0.5));
      int64_t xmin = std::max<int64_t>(int64_t(center - support + T(0.5)), 0);
      int64_t xmax = std::min<int64_t>(int64_t(center + support + T(0.5)), in);
      std::vector<T> w;
      T total = 0;
      for (int64_t j = xmin; j < xmax; ++j) {
        T arg = (T(j) - center + T(0.5)) * invscale;
        w.push_back(cubic ? cubic_aa_filter(arg) : triangle_filter(arg));
        total += w.back();
      }
      for (int64_t j = xmin; j < xmax; ++j) {
        at(i, j) = total != 0 ? w[size_t(j - xmin)] / total : w[size_t(j - xmin)];
      }
    } else if (mode == ResampleMode::bilinear) {
      // align_corners=False source index, clamped at 0 for linear (not for cubic).
      T real = std::max(scale * (T(i) + T(0.5)) - T(0.5), T(0));
      int64_t i0 = int64_t(real);
      int64_t i1 = i0 + (i0 < in - 1 ? 1 : 0);
      T l1 = std::min(std::max(real - T(i0), T(0)), T(1));
      at(i, i0) += T(1) - l1;
      at(i, i1) += l1;
    } else {
      // Bicubic, Keys a = -0.75; the 4 taps are clamped into the image, so border columns
      // collect the weight of taps that fall outside.
      const T a = T(-0.75);
      T real = scale * (T(i) + T(0.5)) - T(0.5);
      int64_t i0 = int64_t(std::floor(real));
      T t = real - T(i0);
      T c[4] = {cubic2(t + 1, a), cubic1(t, a), cubic1(1 - t, a), cubic2(2 - t, a)};
      for (int64_t k = 0; k < 4; ++k) {
        at(i, std::clamp<int64_t>(i0 - 1 + k, 0, in - 1)) += c[k];
      }
    }
  }
  return m;
}

struct AdaptiveMaxPoolBackward final : Node {
  Shape in_shape;
  SavedTensor indices;  // [planes, oh * ow], flat positions within each plane
  std::string name() const override { return "AdaptiveMaxPool2dBackward"; }
  void release_saved() override { indices.reset(); }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    // Windows overlap for non-integer ratios, so the scatter adds (one element can be the max
    // of several windows).
    Tensor idx = indices.unpack(*this);
    int64_t hw = in_shape[in_shape.size() - 2] * in_shape.back();
    Tensor gx = zeros({idx.size(0), hw}, g[0].dtype(), g[0].device());
    indexing::scatter_add_into(gx, 1, idx, reshape(g[0], idx.shape()));
    return {reshape(gx, in_shape)};
  }
};

void check_resample_input(const char* op, const Tensor& x, int64_t out_h, int64_t out_w) {
  HD_CHECK(x.defined() && x.dim() >= 2, op, ": input must be [..., H, W], got ",
           x.defined() ? x.str() : std::string("undefined"));
  HD_CHECK(out_h >= 1 && out_w >= 1, op, ": output size ", out_h, "x", out_w,
           " must be positive (input ", x.shape(), ")");
  HD_CHECK(x.size(-2) >= 1 && x.size(-1) >= 1, op, ": empty spatial dims in ", x.shape());
  HD_CHECK(is_floating(x.dtype()), op, ": needs a floating-point tensor, got ", x.str());
}

}  // namespace

Tensor resample_weights(int64_t in, int64_t out, ResampleMode mode, bool antialias, DType dtype) {
  HD_CHECK(in >= 1 && out >= 1, "resample_weights: sizes must be positive, got in ", in, ", out ",
           out);
  HD_CHECK(!antialias || mode == ResampleMode::bilinear || mode == ResampleMode::bicubic,
           "resample_weights: antialias is only defined for bilinear and bicubic, not ",
           mode_name(mode));
  if (dtype == DType::f64)
    return from_vector(build_weights<double>(in, out, mode, antialias), {out, in});
  HD_CHECK(is_floating(dtype), "resample_weights: dtype must be floating, got ", dtype_name(dtype));
  return from_vector(build_weights<float>(in, out, mode, antialias), {out, in}, dtype);
}

Tensor interpolate(const Tensor& x, int64_t out_h, int64_t out_w, ResampleMode mode,
                   bool antialias) {
  check_resample_input("interpolate", x, out_h, out_w);
  HD_CHECK(!antialias || mode == ResampleMode::bilinear || mode == ResampleMode::bicubic,
           "interpolate: antialias is only supported for bilinear and bicubic, not ",
           mode_name(mode));
  // bf16/f16 are resampled in f32 and rounded back (the notes: interpolations run in fp32).
  if (x.dtype() != DType::f32 && x.dtype() != DType::f64) {
    return to(interpolate(to(x, DType::f32), out_h, out_w, mode, antialias), x.dtype());
  }
  int64_t h = x.size(-2), w = x.size(-1);
  int64_t rank = x.dim();
  if (mode == ResampleMode::nearest) {
    // A selection, not a blend: index_select keeps values bit-exact and its gradient adds.
    Tensor out = x;
    auto axis = [&](int64_t d, int64_t in, int64_t outn) {
      if (in == outn) return;
      std::vector<int64_t> src(static_cast<size_t>(outn));
      std::vector<float> wts = build_weights<float>(in, outn, mode, false);
      for (int64_t i = 0; i < outn; ++i)
        for (int64_t j = 0; j < in; ++j)
          if (wts[size_t(i * in + j)] != 0) src[size_t(i)] = j;
      out = index_select(out, d, from_vector<int64_t>(src, {outn}, DType::i64, x.device()));
    };
    axis(rank - 1, w, out_w);
    axis(rank - 2, h, out_h);
    return out;
  }
  // Identity axes (in == out) are skipped: every linear rule reduces to the identity there.
  bool do_w = w != out_w, do_h = h != out_h;
  Tensor out = x;
  auto apply_w = [&] {
    if (do_w)
      out = matmul(
          out,
          transpose(to(resample_weights(w, out_w, mode, antialias, x.dtype()), x.device()), 0, 1));
  };
  auto apply_h = [&] {
    if (do_h)
      out = matmul(to(resample_weights(h, out_h, mode, antialias, x.dtype()), x.device()), out);
  };
  // Contract the axis that shrinks the tensor most first (fewer flops in the second matmul).
  double cost_w_first = double(h) * w * out_w + double(out_h) * h * out_w;
  double cost_h_first = double(out_h) * h * w + double(out_h) * w * out_w;
  if (cost_w_first <= cost_h_first) {
    apply_w();
    apply_h();
  } else {
    apply_h();
    apply_w();
  }
  if (!do_w && !do_h) out = clone(x);  // a fresh tensor, as for every other size
  return out;
}

Tensor adaptive_avg_pool2d(const Tensor& x, int64_t out_h, int64_t out_w) {
  check_resample_input("adaptive_avg_pool2d", x, out_h, out_w);
  return interpolate(x, out_h, out_w, ResampleMode::area, false);
}

ValuesIndices adaptive_max_pool2d(const Tensor& x, int64_t out_h, int64_t out_w) {
  if (is_cpu_half(x)) {  // ops/cpu_half.h (a max is exact in f32; the kernel is f32/f64)
    ValuesIndices r = adaptive_max_pool2d(half_to_f32(x), out_h, out_w);
    return {to(r.values, x.dtype()), r.indices};
  }
  check_resample_input("adaptive_max_pool2d", x, out_h, out_w);
  int64_t h = x.size(-2), w = x.size(-1);
  int64_t planes = x.numel() / (h * w);
  Tensor xc = contiguous(x.detach());
  Shape out_shape = x.shape();
  out_shape[out_shape.size() - 2] = out_h;
  out_shape.back() = out_w;
  Tensor values = Tensor::empty(out_shape, x.dtype(), x.device());
  Tensor indices = Tensor::empty(out_shape, DType::i64, x.device());
  dispatch(
      x, "adaptive_max_pool2d",
      [&] { cpu::adaptive_max_pool2d(xc, planes, h, w, out_h, out_w, values, indices); },
      HD_CUDA_KERNEL(cuda::adaptive_max_pool2d(xc, planes, h, w, out_h, out_w, values, indices)));
  if (auto node = make_grad_node<AdaptiveMaxPoolBackward>({&x})) {
    node->in_shape = x.shape();
    node->indices = SavedTensor(indices.as_strided({planes, out_h * out_w}, {out_h * out_w, 1}, 0));
    set_history(values, node);
  }
  return {values, indices};
}

}  // namespace hd
