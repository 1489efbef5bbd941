#include "vilahd/eval_plot.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <map>

#include "autograd/error.h"
#include "ps3/data/bitmap_font.h"

namespace hd::vilahd {

namespace {

using Rgb = std::array<uint8_t, 3>;

class Canvas {
 public:
  Canvas(int64_t w, int64_t h) : img_(h, w) {
    for (int64_t y = 0; y < h; ++y) std::fill(img_.row(y), img_.row(y) + w * 3, uint8_t(255));
  }
  data::Image& image() { return img_; }

  void dot(int64_t x, int64_t y, Rgb c) {
    if (x < 0 || y < 0 || x >= img_.width || y >= img_.height) return;
    uint8_t* p = img_.row(y) + x * 3;
    p[0] = c[0], p[1] = c[1], p[2] = c[2];
  }
  void rect(int64_t x0, int64_t y0, int64_t x1, int64_t y1, Rgb c) {
    for (int64_t y = y0; y < y1; ++y)
      for (int64_t x = x0; x < x1; ++x) dot(x, y, c);
  }
  // A line `width` px thick; `dash` > 0 draws dash-long pieces with dash-long gaps.
  void line(double x0, double y0, double x1, double y1, Rgb c, int width = 2, int dash = 0) {
    const double len = std::max(std::abs(x1 - x0), std::abs(y1 - y0));
    const int64_t n = std::max<int64_t>(1, int64_t(std::ceil(len)));
    for (int64_t i = 0; i <= n; ++i) {
      if (dash > 0 && (i / dash) % 2 == 1) continue;
      const double t = double(i) / double(n);
      const int64_t x = int64_t(std::lround(x0 + t * (x1 - x0)) - width / 2);
      const int64_t y = int64_t(std::lround(y0 + t * (y1 - y0)) - width / 2);
      rect(x, y, x + width, y + width, c);
    }
  }
  // Text with its top-left corner at (x, y), `scale` px per font pixel; returns the width drawn.
  int64_t text(const std::string& s, int64_t x, int64_t y, Rgb c, int64_t scale = 1) {
    int64_t cx = x;
    for (char ch : s) {
      if (const data::Glyph5x7* g = data::glyph_5x7(ch))
        for (int64_t gy = 0; gy < 7; ++gy)
          for (int64_t gx = 0; gx < 5; ++gx)
            if ((*g)[size_t(gy)][gx] == '#')
              rect(cx + gx * scale, y + gy * scale, cx + (gx + 1) * scale, y + (gy + 1) * scale, c);
      cx += 6 * scale;
    }
    return cx - x;
  }

 private:
  data::Image img_;
};

const Rgb kLineColours[] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {148, 103, 189}};
const Rgb kFlat = {110, 110, 110}, kChance = {214, 39, 40}, kAxis = {40, 40, 40},
          kGrid = {225, 225, 225};

// "top-down @1512" -> {"top-down", 1512}; no " @<number>" suffix -> resolution 0.
std::pair<std::string, int64_t> split_mode_name(const std::string& name) {
  const size_t at = name.rfind(" @");
  if (at == std::string::npos || at + 2 >= name.size()) return {name, 0};
  for (size_t i = at + 2; i < name.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(name[i]))) return {name, 0};
  return {name.substr(0, at), std::stoll(name.substr(at + 2))};
}

}  // namespace

data::Image draw_accuracy_plot(const std::vector<McModeResult>& results, double chance,
                               const std::string& title) {
  // Lines in first-seen order, each a map resolution -> accuracy.
  std::vector<std::pair<std::string, std::map<int64_t, double>>> lines;
  std::vector<std::pair<std::string, double>> flats;
  std::vector<int64_t> resolutions;
  for (const McModeResult& r : results) {
    auto [line, res] = split_mode_name(r.mode.name);
    if (res == 0) {
      if (r.mode.num_look_close == 0) flats.push_back({r.mode.name, r.accuracy});
      continue;
    }
    auto it =
        std::find_if(lines.begin(), lines.end(), [&](const auto& l) { return l.first == line; });
    if (it == lines.end()) lines.push_back({line, {}}), it = lines.end() - 1;
    it->second[res] = r.accuracy;
    if (std::find(resolutions.begin(), resolutions.end(), res) == resolutions.end())
      resolutions.push_back(res);
  }
  std::sort(resolutions.begin(), resolutions.end());

  const int64_t W = 720, H = 420, left = 64, right = 500, top = 44, bottom = 360;
  Canvas cv(W, H);
  cv.text(title, left, 14, kAxis, 2);
  auto y_of = [&](double acc) { return double(bottom) - acc * double(bottom - top); };
  // Resolutions evenly spaced (they are roughly doubling steps), with a margin at both ends.
  auto x_of = [&](size_t i) {
    const double n = double(std::max<size_t>(resolutions.size(), 1));
    return double(left) + (double(i) + 0.5) * double(right - left) / n;
  };
  for (int pct = 0; pct <= 100; pct += 25) {
    const double y = y_of(pct / 100.0);
    cv.line(left, y, right, y, kGrid, 1);
    const std::string label = std::to_string(pct) + "%";
    cv.text(label, left - 8 - 6 * int64_t(label.size()), int64_t(y) - 3, kAxis);
  }
  cv.line(left, top, left, bottom, kAxis, 1);
  cv.line(left, bottom, right, bottom, kAxis, 1);
  for (size_t i = 0; i < resolutions.size(); ++i) {
    const std::string label = std::to_string(resolutions[i]);
    cv.line(x_of(i), bottom, x_of(i), bottom + 5, kAxis, 1);
    cv.text(label, int64_t(x_of(i)) - 3 * int64_t(label.size()), bottom + 10, kAxis);
  }
  cv.text("image resolution (px), same high-res token budget", left + 40, bottom + 30, kAxis);
  cv.text("accuracy", 8, top - 14, kAxis);

  // Legend entries, drawn top to bottom on the right.
  int64_t legend_y = top + 4;
  auto legend = [&](const std::string& label, Rgb c, int dash) {
    cv.line(right + 16, legend_y + 3, right + 40, legend_y + 3, c, 2, dash);
    cv.text(label, right + 48, legend_y, kAxis);
    legend_y += 18;
  };
  for (size_t k = 0; k < lines.size(); ++k) {
    const Rgb c = kLineColours[k % std::size(kLineColours)];
    double px = -1, py = -1;
    for (size_t i = 0; i < resolutions.size(); ++i) {
      const auto it = lines[k].second.find(resolutions[i]);
      if (it == lines[k].second.end()) continue;
      const double x = x_of(i), y = y_of(it->second);
      if (px >= 0) cv.line(px, py, x, y, c, 3);
      cv.rect(int64_t(x) - 4, int64_t(y) - 4, int64_t(x) + 5, int64_t(y) + 5, c);
      px = x, py = y;
    }
    legend(lines[k].first, c, 0);
  }
  for (const auto& [name, acc] : flats) {
    cv.line(left, y_of(acc), right, y_of(acc), kFlat, 2);
    legend(name + " (378)", kFlat, 0);
  }
  cv.line(left, y_of(chance), right, y_of(chance), kChance, 2, 6);
  legend("chance", kChance, 6);
  return std::move(cv.image());
}

void write_accuracy_plot(const std::vector<McModeResult>& results, double chance,
                         const std::string& title, const std::string& path) {
  data::write_file(path, data::encode_png(draw_accuracy_plot(results, chance, title), 6));
}

}  // namespace hd::vilahd
