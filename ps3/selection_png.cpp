// draw_selection / write_selection_png: see selection_png.h.
#include "ps3/selection_png.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "autograd/error.h"
#include "ps3/data/resize.h"

namespace hd::ps3 {
namespace {

using Rgb = std::array<uint8_t, 3>;

constexpr Rgb kBoxColor = {255, 230, 0};
constexpr Rgb kRim = {0, 0, 0};
constexpr Rgb kLegendBackground = {32, 32, 32};
constexpr Rgb kText = {240, 240, 240};
constexpr float kFillAlpha = 0.4f;  // translucent: the image stays readable under the cells
// Cells too small for an outline (the 3780 scale's are ~4 px at 1024) get a denser fill instead,
// or they would not be seen.
constexpr float kSmallCellAlpha = 0.6f;
constexpr int64_t kMinOutlinedCell = 6;
constexpr int64_t kPatch = 14;  // every PS3 model's patch: the legend's scale = grid x 14
constexpr int64_t kGlyphScale = 2, kLegendHeight = 16;

void blend(data::Image& img, int64_t y, int64_t x, Rgb c, float alpha) {
  if (y < 0 || x < 0 || y >= img.height || x >= img.width) return;
  uint8_t* p = img.row(y) + x * 3;
  for (int k = 0; k < 3; ++k)
    p[k] = uint8_t(std::lround((1.0f - alpha) * float(p[k]) + alpha * float(c[size_t(k)])));
}

void fill(data::Image& img, int64_t y0, int64_t y1, int64_t x0, int64_t x1, Rgb c,
          float alpha = 1.0f) {
  for (int64_t y = y0; y < y1; ++y)
    for (int64_t x = x0; x < x1; ++x) blend(img, y, x, c, alpha);
}

// A rectangle's border, `t` pixels thick, inside [y0, y1) x [x0, x1).
void outline(data::Image& img, int64_t y0, int64_t y1, int64_t x0, int64_t x1, int64_t t, Rgb c) {
  fill(img, y0, std::min(y1, y0 + t), x0, x1, c);
  fill(img, std::max(y0, y1 - t), y1, x0, x1, c);
  fill(img, y0, y1, x0, std::min(x1, x0 + t), c);
  fill(img, y0, y1, std::max(x0, x1 - t), x1, c);
}

// 3 x 5 glyphs (rows top to bottom, 3 bits each, high bit left) for the legend.
const uint8_t* glyph(char ch) {
  static const uint8_t digits[10][5] = {
      {7, 5, 5, 5, 7}, {2, 6, 2, 2, 7}, {7, 1, 7, 4, 7}, {7, 1, 7, 1, 7}, {5, 5, 7, 1, 1},
      {7, 4, 7, 1, 7}, {7, 4, 7, 5, 7}, {7, 1, 1, 1, 1}, {7, 5, 7, 5, 7}, {7, 5, 7, 1, 7}};
  static const uint8_t g[5] = {7, 4, 5, 5, 7}, t[5] = {7, 2, 2, 2, 2};
  if (ch >= '0' && ch <= '9') return digits[ch - '0'];
  return ch == 'G' ? g : ch == 'T' ? t : nullptr;
}

// Draws `text` with its top-left at (y, x); returns the x after it.
int64_t draw_text(data::Image& img, int64_t y, int64_t x, const std::string& text) {
  for (char ch : text) {
    if (const uint8_t* rows = glyph(ch))
      for (int r = 0; r < 5; ++r)
        for (int c = 0; c < 3; ++c)
          if (rows[r] & (4 >> c))
            fill(img, y + r * kGlyphScale, y + (r + 1) * kGlyphScale, x + c * kGlyphScale,
                 x + (c + 1) * kGlyphScale, kText);
    x += 4 * kGlyphScale;
  }
  return x;
}

// A selection map as a row-major [g * g] 0/1 vector and its g.
std::pair<std::vector<uint8_t>, int64_t> read_map(const Tensor& map, size_t index) {
  Shape s = map.shape();
  if (s.size() == 3 && s[0] == 1) s = {s[1], s[2]};
  HD_CHECK(s.size() == 2 && s[0] == s[1] && s[0] > 0, "draw_selection: selection map ", index,
           " has shape ", shape_str(map.shape()), "; expected [g, g] or [1, g, g]");
  const std::vector<float> v = map.to_vector<float>();  // logical order, any dtype
  std::vector<uint8_t> on(v.size());
  for (size_t i = 0; i < v.size(); ++i) on[i] = v[i] > 0.5f;
  return {on, s[0]};
}

}  // namespace

std::array<uint8_t, 3> selection_color(size_t scale_index) {
  static constexpr Rgb colors[4] = {{30, 110, 255}, {0, 200, 90}, {255, 110, 0}, {220, 0, 220}};
  return colors[scale_index % 4];
}

SelectionPicture draw_selection(const data::Image& image, const std::vector<Tensor>& selection_maps,
                                const std::optional<data::Box>& gt_box, int64_t max_side) {
  HD_CHECK(image.height > 0 && image.width > 0, "draw_selection: empty image");
  HD_CHECK(max_side >= 16, "draw_selection: max_side ", max_side, " must be >= 16");
  const int64_t side = std::max(image.height, image.width);
  const double f = side > max_side ? double(max_side) / double(side) : 1.0;
  const int64_t h = std::max<int64_t>(1, std::lround(double(image.height) * f));
  const int64_t w = std::max<int64_t>(1, std::lround(double(image.width) * f));
  const data::Image small =
      (h == image.height && w == image.width)
          ? image
          : data::resize_aa_bicubic(image, 0, 0, image.height, image.width, h, w);

  SelectionPicture pic{data::Image(h + kLegendHeight, w), h, w};
  for (int64_t y = 0; y < h; ++y) std::copy_n(small.row(y), w * 3, pic.image.row(y));
  data::Image& out = pic.image;

  // Coarsest scale first, so the finer (smaller) cells stay visible on top.
  std::vector<int64_t> grids;
  for (size_t i = 0; i < selection_maps.size(); ++i) {
    auto [on, g] = read_map(selection_maps[i], i);
    grids.push_back(g);
    const Rgb color = selection_color(i);
    for (int64_t r = 0; r < g; ++r)
      for (int64_t c = 0; c < g; ++c) {
        if (!on[size_t(r * g + c)]) continue;
        const int64_t y0 = r * h / g, y1 = (r + 1) * h / g, x0 = c * w / g, x1 = (c + 1) * w / g;
        const bool big = x1 - x0 >= kMinOutlinedCell && y1 - y0 >= kMinOutlinedCell;
        fill(out, y0, y1, x0, x1, color, big ? kFillAlpha : kSmallCellAlpha);
        if (big) outline(out, y0, y1, x0, x1, 1, color);
      }
  }
  if (gt_box) {
    const double sx = double(w) / double(image.width), sy = double(h) / double(image.height);
    int64_t x0 = std::lround(gt_box->x1 * sx), x1 = std::lround(gt_box->x2 * sx);
    int64_t y0 = std::lround(gt_box->y1 * sy), y1 = std::lround(gt_box->y2 * sy);
    x0 = std::clamp<int64_t>(x0, 0, w - 1), x1 = std::clamp<int64_t>(x1, x0 + 1, w);
    y0 = std::clamp<int64_t>(y0, 0, h - 1), y1 = std::clamp<int64_t>(y1, y0 + 1, h);
    outline(out, y0, y1, x0, x1, 4, kRim);  // the rim, then the colour inside it
    outline(out, y0 + 1, y1 - 1, x0 + 1, x1 - 1, 2, kBoxColor);
  }

  // Legend: [swatch] scale, ..., [box] GT.
  fill(out, h, h + kLegendHeight, 0, w, kLegendBackground);
  int64_t x = 4;
  const int64_t ty = h + (kLegendHeight - 5 * kGlyphScale) / 2;
  for (size_t i = 0; i < grids.size(); ++i) {
    fill(out, ty, ty + 10, x, x + 10, selection_color(i));
    x = draw_text(out, ty, x + 14, std::to_string(grids[i] * kPatch)) + 8;
  }
  if (gt_box) {
    outline(out, ty, ty + 10, x, x + 10, 2, kBoxColor);
    draw_text(out, ty, x + 14, "GT");
  }
  return pic;
}

void write_selection_png(const data::Image& image, const std::vector<Tensor>& selection_maps,
                         const std::optional<data::Box>& gt_box, const std::string& path,
                         int64_t max_side) {
  SelectionPicture pic = draw_selection(image, selection_maps, gt_box, max_side);
  try {
    data::write_file(path, data::encode_png(pic.image, 6));
  } catch (const Error& e) {
    throw Error("selection PNG " + path + ": " + e.what());
  }
}

}  // namespace hd::ps3
