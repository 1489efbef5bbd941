#include "ps3/data/resize.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "autograd/error.h"
#include "ops/cpu/isa.h"

namespace hd::data {

const Taps& taps(int64_t in, int64_t out, ResampleMode mode, bool antialias) {
  static std::mutex mu;
  static std::map<std::tuple<int64_t, int64_t, int, bool>, std::unique_ptr<Taps>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[{in, out, int(mode), antialias}];
  if (slot) return *slot;
  Tensor dense = resample_weights(in, out, mode, antialias, DType::f32);
  const float* m = dense.data<float>();
  auto t = std::make_unique<Taps>();
  t->in = in;
  t->out = out;
  t->first.resize(size_t(out));
  t->count.resize(size_t(out));
  for (int64_t i = 0; i < out; ++i) {
    int64_t lo = in, hi = -1;
    for (int64_t j = 0; j < in; ++j)
      if (m[i * in + j] != 0.0f) lo = std::min(lo, j), hi = std::max(hi, j);
    if (hi < 0) lo = hi = 0;  // an all-zero row cannot happen for these rules; stay safe
    t->first[size_t(i)] = lo;
    t->count[size_t(i)] = int(hi - lo + 1);
    t->max_taps = std::max(t->max_taps, int(hi - lo + 1));
  }
  t->w.assign(size_t(out * t->max_taps), 0.0f);
  for (int64_t i = 0; i < out; ++i)
    for (int k = 0; k < t->count[size_t(i)]; ++k)
      t->w[size_t(i * t->max_taps + k)] = m[i * in + t->first[size_t(i)] + k];
  slot = std::move(t);
  return *slot;
}

namespace {

// Pillow's antialiased bicubic, as libImaging/Resample.c computes it for 8-bit images: float
// weights (support 2 x the downscale factor, normalised to sum 1) converted to fixed point with
// 22 fractional bits, rounded half away from zero; each output is an int32 sum starting at
// 1 << 21 (so the final shift rounds), shifted right by 22 and clamped to 0..255. Matching this
// bit for bit matters: a +-1 on 0.03-0.3 % of the uint8 values (float weights and lround) moved
// features by up to 9e-4 relative against the reference.
constexpr int kPrecisionBits = 32 - 8 - 2;

// A product rounded to double before it is used. GCC contracts a * b + c into an FMA under
// -march=x86-64-v3 (C++ gets -ffp-contract=fast even with -std=c++20), while Pillow's
// coefficients are plain double arithmetic (Debian builds it for baseline x86-64, no FMA). On the
// fixture sizes the fused version happened to give the same 22-bit coefficients, but one unrounded
// product can move a weight across a rounding boundary, so the guard stays (the taps are computed
// once per size pair; the cost is nil).
inline double product(double a, double b) {
  volatile double p = a * b;
  return p;
}

// Resample.c bicubic_filter (a = -0.5), operation for operation.
double bicubic(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return product(product(product(a + 2.0, x) - (a + 3.0), x), x) + 1;
  if (x < 2.0) return product(product(product(x - 5, x) + 8, x) - 4, a);
  return 0.0;
}

// One axis's fixed-point taps: output i = sum_k k[i*ksize+k] * input[first[i]+k], k < count[i].
struct PillowTaps {
  int ksize = 0;
  std::vector<int64_t> first;
  std::vector<int> count;
  std::vector<int32_t> k;
};

// Resample.c precompute_coeffs + normalize_coeffs_8bpc for in -> out (box = the whole input).
std::unique_ptr<PillowTaps> pillow_taps(int64_t in, int64_t out) {
  const double scale = double(in) / double(out);
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = product(2.0, filterscale);  // bicubic support 2
  auto t = std::make_unique<PillowTaps>();
  t->ksize = int(std::ceil(support)) * 2 + 1;
  t->first.resize(size_t(out));
  t->count.resize(size_t(out));
  t->k.assign(size_t(out * t->ksize), 0);
  std::vector<double> w(size_t(t->ksize));
  for (int64_t xx = 0; xx < out; ++xx) {
    const double center = product(double(xx) + 0.5, scale);  // in0 = 0
    const double ss = 1.0 / filterscale;
    int64_t xmin = int64_t(center - support + 0.5);  // C's (int): truncation, then clamp
    if (xmin < 0) xmin = 0;
    int64_t xmax = int64_t(center + support + 0.5);
    if (xmax > in) xmax = in;
    xmax -= xmin;
    double ww = 0.0;
    for (int64_t x = 0; x < xmax; ++x) {
      w[size_t(x)] = bicubic(product(double(x + xmin) - center + 0.5, ss));
      ww += w[size_t(x)];
    }
    for (int64_t x = 0; x < xmax; ++x) {
      const double v = ww != 0.0 ? w[size_t(x)] / ww : w[size_t(x)];
      const double f = v * double(1 << kPrecisionBits);  // exact: a power of two
      t->k[size_t(xx * t->ksize + x)] = int32_t(v < 0 ? -0.5 + f : 0.5 + f);
    }
    t->first[size_t(xx)] = xmin;
    t->count[size_t(xx)] = int(xmax);
  }
  return t;
}

// Cached (thread-safe) like taps(): the loader resizes to the same S from a few source sizes.
const PillowTaps& cached_pillow_taps(int64_t in, int64_t out) {
  static std::mutex mu;
  static std::map<std::pair<int64_t, int64_t>, std::unique_ptr<PillowTaps>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[{in, out}];
  if (!slot) slot = pillow_taps(in, out);
  return *slot;
}

// Resample.c clip8: the int32 sum (1 << 21 included) to uint8.
inline uint8_t clip8(int32_t v) {
  return static_cast<uint8_t>(std::clamp(v >> kPrecisionBits, 0, 255));
}

}  // namespace

Image resize_aa_bicubic(const Image& src, int64_t y0, int64_t x0, int64_t h, int64_t w,
                        int64_t out_h, int64_t out_w) {
  HD_CHECK(y0 >= 0 && x0 >= 0 && h >= 1 && w >= 1 && y0 + h <= src.height && x0 + w <= src.width,
           "resize_aa_bicubic: crop (", y0, ", ", x0, ", ", h, ", ", w, ") outside image ",
           src.height, "x", src.width);
  HD_CHECK(out_h >= 1 && out_w >= 1, "resize_aa_bicubic: output size ", out_h, "x", out_w,
           " must be positive");
  // As Pillow on the cropped image (torchvision crops, then resizes): an axis whose size does not
  // change is not filtered, and the horizontal pass runs only over the rows the vertical pass
  // reads (Resample.c's ybox_first..ybox_last).
  const bool need_h = out_w != w, need_v = out_h != h;
  const PillowTaps* tv = need_v ? &cached_pillow_taps(h, out_h) : nullptr;
  const int64_t r0 = tv ? tv->first[0] : 0;
  const int64_t r1 = tv ? tv->first[size_t(out_h - 1)] + tv->count[size_t(out_h - 1)] : h;
  constexpr int32_t kHalf = 1 << (kPrecisionBits - 1);

  // Horizontal pass over crop rows [r0, r1) -> (r1 - r0) x out_w; mid row i is crop row r0 + i.
  Image mid(r1 - r0, out_w);
  if (!need_h) {
    for (int64_t y = r0; y < r1; ++y) std::copy_n(src.row(y0 + y) + x0 * 3, w * 3, mid.row(y - r0));
  } else {
    const PillowTaps& t = cached_pillow_taps(w, out_w);
    for (int64_t y = r0; y < r1; ++y) {
      const uint8_t* s = src.row(y0 + y) + x0 * 3;
      uint8_t* d = mid.row(y - r0);
      for (int64_t x = 0; x < out_w; ++x) {
        int32_t a0 = kHalf, a1 = kHalf, a2 = kHalf;
        const int32_t* k = &t.k[size_t(x * t.ksize)];
        const uint8_t* p = s + t.first[size_t(x)] * 3;
        for (int j = 0; j < t.count[size_t(x)]; ++j, p += 3)
          a0 += p[0] * k[j], a1 += p[1] * k[j], a2 += p[2] * k[j];
        d[x * 3] = clip8(a0), d[x * 3 + 1] = clip8(a1), d[x * 3 + 2] = clip8(a2);
      }
    }
  }
  if (!need_v) return mid;
  // Vertical pass: accumulate whole rows (contiguous int32 multiply-adds, vectorised). Integer
  // sums do not depend on the order, so this equals Pillow's column-by-column loop.
  Image out(out_h, out_w);
  std::vector<int32_t> acc(static_cast<size_t>(out_w * 3));
  for (int64_t y = 0; y < out_h; ++y) {
    std::fill(acc.begin(), acc.end(), kHalf);
    for (int j = 0; j < tv->count[size_t(y)]; ++j) {
      const int32_t kj = tv->k[size_t(y * tv->ksize + j)];
      const uint8_t* s = mid.row(tv->first[size_t(y)] + j - r0);
      for (int64_t i = 0; i < out_w * 3; ++i) acc[size_t(i)] += s[i] * kj;
    }
    uint8_t* d = out.row(y);
    for (int64_t i = 0; i < out_w * 3; ++i) d[i] = clip8(acc[size_t(i)]);
  }
  return out;
}

void resample_region(const Image& src, int64_t out_h, int64_t out_w, int64_t y0, int64_t y1,
                     int64_t x0, int64_t x1, Normalize norm, float* dst) {
  HD_CHECK(0 <= y0 && y0 < y1 && y1 <= out_h && 0 <= x0 && x0 < x1 && x1 <= out_w,
           "resample_region: region [", y0, ", ", y1, ") x [", x0, ", ", x1, ") outside ", out_h,
           "x", out_w);
  const Taps& ty = taps(src.height, out_h, ResampleMode::bicubic, false);
  const Taps& tx = taps(src.width, out_w, ResampleMode::bicubic, false);
  // Source columns this region reads.
  int64_t c0 = tx.first[size_t(x0)];
  int64_t c1 = 0;
  for (int64_t x = x0; x < x1; ++x) c1 = std::max(c1, tx.first[size_t(x)] + tx.count[size_t(x)]);
  int64_t nc = c1 - c0;
  int64_t rh = y1 - y0, rw = x1 - x0;
  // 4 spare columns of zeros: the horizontal pass below always runs 4 taps (non-AA bicubic has at
  // most 4; unused ones have weight 0), a fixed trip count the compiler unrolls.
  std::vector<float> row(static_cast<size_t>((nc + 4) * 3), 0.0f);
  const bool four = tx.max_taps == 4;
  for (int64_t y = y0; y < y1; ++y) {
    // Vertical taps first, over only the needed columns: one contiguous, vectorised loop.
    std::fill(row.begin(), row.begin() + nc * 3, 0.0f);
    for (int k = 0; k < ty.count[size_t(y)]; ++k) {
      float wk = ty.w[size_t(y * ty.max_taps + k)];
      const uint8_t* s = src.row(ty.first[size_t(y)] + k) + c0 * 3;
      for (int64_t i = 0; i < nc * 3; ++i) row[size_t(i)] += wk * s[i];
    }
    float* d0 = dst + (y - y0) * rw;
    float* d1 = d0 + rh * rw;
    float* d2 = d1 + rh * rw;
    for (int64_t x = x0; x < x1; ++x) {
      const float* wt = &tx.w[size_t(x * tx.max_taps)];
      const float* p = row.data() + (tx.first[size_t(x)] - c0) * 3;
      float a0 = 0, a1 = 0, a2 = 0;
      if (four) {
        for (int k = 0; k < 4; ++k)
          a0 += wt[k] * p[3 * k], a1 += wt[k] * p[3 * k + 1], a2 += wt[k] * p[3 * k + 2];
      } else {
        for (int k = 0; k < tx.count[size_t(x)]; ++k, p += 3)
          a0 += wt[k] * p[0], a1 += wt[k] * p[1], a2 += wt[k] * p[2];
      }
      d0[x - x0] = a0 * norm.scale + norm.bias;
      d1[x - x0] = a1 * norm.scale + norm.bias;
      d2[x - x0] = a2 * norm.scale + norm.bias;
    }
  }
}

void resample_region(const Image& src, int64_t out_h, int64_t out_w, int64_t y0, int64_t y1,
                     int64_t x0, int64_t x1, Normalize norm, bf16_t* dst) {
  // Bands of rows through the float version, so every value is the float one rounded; a band's
  // floats stay in cache on their way to bf16.
  constexpr int64_t kBandRows = 16;
  const int64_t rh = y1 - y0, rw = x1 - x0;
  std::vector<float> band(size_t(3 * kBandRows * std::max<int64_t>(rw, 0)));
  for (int64_t b0 = y0; b0 < y1; b0 += kBandRows) {
    const int64_t n = std::min(kBandRows, y1 - b0);
    resample_region(src, out_h, out_w, b0, b0 + n, x0, x1, norm, band.data());
    for (int64_t c = 0; c < 3; ++c) {
      cpu::round_to_bf16(band.data() + c * n * rw, dst + c * rh * rw + (b0 - y0) * rw, n * rw);
    }
  }
}

}  // namespace hd::data
