#include "ps3/data/resize.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#include "autograd/error.h"

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
inline uint8_t round_u8(float v) {
  return static_cast<uint8_t>(std::clamp(std::lround(v), 0L, 255L));
}
}  // namespace

Image resize_aa_bicubic(const Image& src, int64_t y0, int64_t x0, int64_t h, int64_t w,
                        int64_t out_h, int64_t out_w) {
  HD_CHECK(y0 >= 0 && x0 >= 0 && h >= 1 && w >= 1 && y0 + h <= src.height && x0 + w <= src.width,
           "resize_aa_bicubic: crop (", y0, ", ", x0, ", ", h, ", ", w, ") outside image ",
           src.height, "x", src.width);
  // Horizontal pass over the crop's rows -> h x out_w.
  Image mid(h, out_w);
  if (w == out_w) {
    for (int64_t y = 0; y < h; ++y) std::copy_n(src.row(y0 + y) + x0 * 3, w * 3, mid.row(y));
  } else {
    const Taps& t = taps(w, out_w, ResampleMode::bicubic, true);
    for (int64_t y = 0; y < h; ++y) {
      const uint8_t* s = src.row(y0 + y) + x0 * 3;
      uint8_t* d = mid.row(y);
      for (int64_t x = 0; x < out_w; ++x) {
        float a0 = 0, a1 = 0, a2 = 0;
        const float* wt = &t.w[size_t(x * t.max_taps)];
        const uint8_t* p = s + t.first[size_t(x)] * 3;
        for (int k = 0; k < t.count[size_t(x)]; ++k, p += 3)
          a0 += wt[k] * p[0], a1 += wt[k] * p[1], a2 += wt[k] * p[2];
        d[x * 3] = round_u8(a0), d[x * 3 + 1] = round_u8(a1), d[x * 3 + 2] = round_u8(a2);
      }
    }
  }
  if (h == out_h) return mid;
  // Vertical pass: accumulate whole rows (contiguous, vectorises).
  const Taps& t = taps(h, out_h, ResampleMode::bicubic, true);
  Image out(out_h, out_w);
  std::vector<float> acc(static_cast<size_t>(out_w * 3));
  for (int64_t y = 0; y < out_h; ++y) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int k = 0; k < t.count[size_t(y)]; ++k) {
      float wk = t.w[size_t(y * t.max_taps + k)];
      const uint8_t* s = mid.row(t.first[size_t(y)] + k);
      for (int64_t i = 0; i < out_w * 3; ++i) acc[size_t(i)] += wk * s[i];
    }
    uint8_t* d = out.row(y);
    for (int64_t i = 0; i < out_w * 3; ++i) d[i] = round_u8(acc[size_t(i)]);
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

}  // namespace hd::data
