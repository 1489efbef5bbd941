#include "ps3/data/geometry.h"

#include <algorithm>
#include <cmath>

#include "autograd/error.h"
#include "autograd/random.h"

namespace hd::data {

Crop random_resized_crop(int64_t height, int64_t width, uint64_t key) {
  Generator g(key, 0x43524f50ull);  // "CROP"
  double area = double(height) * double(width);
  for (uint64_t t = 0; t < 10; ++t) {
    auto w = g.block(t);
    double target = area * (0.9 + 0.1 * uniform01_f64(w[0], w[1]));
    double log_ratio = std::log(3.0 / 4.0) +
                       (std::log(4.0 / 3.0) - std::log(3.0 / 4.0)) * uniform01_f64(w[2], w[3]);
    double ratio = std::exp(log_ratio);
    int64_t cw = std::llround(std::sqrt(target * ratio)),
            ch = std::llround(std::sqrt(target / ratio));
    if (cw > 0 && cw <= width && ch > 0 && ch <= height) {
      auto p = g.block(t + 100);
      int64_t y0 = int64_t(uniform01_f64(p[0], p[1]) * double(height - ch + 1));
      int64_t x0 = int64_t(uniform01_f64(p[2], p[3]) * double(width - cw + 1));
      return {y0, x0, ch, cw};
    }
  }
  // Fallback: central crop, aspect clamped to [3/4, 4/3].
  double in_ratio = double(width) / double(height);
  int64_t cw = width, ch = height;
  if (in_ratio < 3.0 / 4.0)
    ch = std::llround(double(width) / (3.0 / 4.0));
  else if (in_ratio > 4.0 / 3.0)
    cw = std::llround(double(height) * (4.0 / 3.0));
  return {(height - ch) / 2, (width - cw) / 2, ch, cw};
}

std::optional<Box> transform_box(const Box& b, const Crop& c, int64_t size, std::string& why) {
  if (!(b.x2 > b.x1 && b.y2 > b.y1)) {
    why = (b.x2 < b.x1 || b.y2 < b.y1) ? "inverted box" : "empty box";
    return std::nullopt;
  }
  float sx = float(size) / float(c.w), sy = float(size) / float(c.h);
  Box t{(b.x1 - float(c.x0)) * sx, (b.y1 - float(c.y0)) * sy, (b.x2 - float(c.x0)) * sx,
        (b.y2 - float(c.y0)) * sy};
  float s = float(size);
  if (t.x2 <= 0 || t.y2 <= 0 || t.x1 >= s || t.y1 >= s) {
    why = "box entirely outside the image";
    return std::nullopt;
  }
  t.x1 = std::clamp(t.x1, 0.0f, s), t.x2 = std::clamp(t.x2, 0.0f, s);
  t.y1 = std::clamp(t.y1, 0.0f, s), t.y2 = std::clamp(t.y2, 0.0f, s);
  return t;
}

void gt_map(const std::vector<Box>& boxes, int64_t size, int64_t out, float* dst) {
  std::fill(dst, dst + out * out, 0.0f);
  for (const Box& b : boxes) {
    // Inclusive pixel range of the box in the S x S map, clipped to the map.
    int64_t r0 = std::clamp<int64_t>(int64_t(std::floor(b.y1)), 0, size - 1);
    int64_t r1 = std::clamp<int64_t>(int64_t(std::ceil(b.y2)), 0, size - 1);
    int64_t c0 = std::clamp<int64_t>(int64_t(std::floor(b.x1)), 0, size - 1);
    int64_t c1 = std::clamp<int64_t>(int64_t(std::ceil(b.x2)), 0, size - 1);
    // Cells whose window [floor(i*S/out), ceil((i+1)*S/out)) meets [r0, r1].
    auto cells = [&](int64_t p0, int64_t p1, int64_t& i0, int64_t& i1) {
      i0 = out, i1 = -1;
      for (int64_t i = 0; i < out; ++i) {
        int64_t lo = i * size / out, hi = ((i + 1) * size + out - 1) / out;
        if (lo <= p1 && p0 < hi) i0 = std::min(i0, i), i1 = std::max(i1, i);
      }
    };
    int64_t y0, y1, x0, x1;
    cells(r0, r1, y0, y1);
    cells(c0, c1, x0, x1);
    for (int64_t y = y0; y <= y1; ++y) std::fill(dst + y * out + x0, dst + y * out + x1 + 1, 1.0f);
  }
}

void extract_patches(const Image& image, int64_t scale, const std::vector<int64_t>& indices,
                     Normalize norm, float* dst) {
  HD_CHECK(scale % kPatch == 0, "extract_patches: scale ", scale, " is not a multiple of ", kPatch);
  int64_t grid = scale / kPatch;
  for (size_t i = 0; i < indices.size(); ++i) {
    int64_t p = indices[i];
    HD_CHECK(p >= 0 && p < grid * grid, "extract_patches: patch index ", p, " outside the ", grid,
             "x", grid, " grid of scale ", scale);
    int64_t y0 = (p / grid) * kPatch, x0 = (p % grid) * kPatch;
    resample_region(image, scale, scale, y0, y0 + kPatch, x0, x0 + kPatch, norm,
                    dst + int64_t(i) * 3 * kPatch * kPatch);
  }
}

}  // namespace hd::data
