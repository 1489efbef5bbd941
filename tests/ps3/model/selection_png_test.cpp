// The selection picture (ps3/selection_png.h): size, that selected cells and only they change
// the downscaled image, the GT box, the legend, the PNG round trip and errors.
#include <gtest/gtest.h>

#include <filesystem>

#include "autograd/error.h"
#include "ops/factory.h"
#include "ops/shape.h"
#include "ps3/data/resize.h"
#include "ps3/selection_png.h"

namespace hd::ps3 {
namespace {

data::Image test_image(int64_t h, int64_t w) {
  data::Image img(h, w);
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t c = 0; c < 3; ++c)
        img.row(y)[x * 3 + c] = uint8_t(60 + (x * 7 + y * 3 + c * 40) % 120);
  return img;
}

// A [g, g] 0/1 map with the given cells on.
Tensor map_with(int64_t g, const std::vector<std::pair<int64_t, int64_t>>& cells) {
  std::vector<float> v(size_t(g * g), 0.0f);
  for (auto [r, c] : cells) v[size_t(r * g + c)] = 1.0f;
  return from_vector(v, {g, g});
}

bool same_pixel(const data::Image& a, const data::Image& b, int64_t y, int64_t x) {
  return std::equal(a.row(y) + x * 3, a.row(y) + x * 3 + 3, b.row(y) + x * 3);
}

TEST(SelectionPng, SelectedCellsAndOnlyTheyChange) {
  const data::Image img = test_image(400, 600);  // H 400, W 600 -> 200 x 300 at max side 300
  const std::vector<Tensor> maps = {map_with(4, {{0, 0}, {2, 3}}), map_with(8, {{5, 1}})};
  SelectionPicture pic = draw_selection(img, maps, std::nullopt, 300);
  ASSERT_EQ(pic.image_height, 200);
  ASSERT_EQ(pic.image_width, 300);
  ASSERT_EQ(pic.image.height, 216);  // + the legend strip
  ASSERT_EQ(pic.image.width, 300);
  const data::Image plain = data::resize_aa_bicubic(img, 0, 0, 400, 600, 200, 300);

  // Cell (r, c) of grid g covers rows [r*200/g, (r+1)*200/g) and columns [c*300/g, ...).
  auto inside = [](int64_t y, int64_t x, int64_t g, int64_t r, int64_t c) {
    return y >= r * 200 / g && y < (r + 1) * 200 / g && x >= c * 300 / g && x < (c + 1) * 300 / g;
  };
  int64_t changed = 0, kept = 0;
  for (int64_t y = 0; y < 200; ++y)
    for (int64_t x = 0; x < 300; ++x) {
      const bool selected = inside(y, x, 4, 0, 0) || inside(y, x, 4, 2, 3) || inside(y, x, 8, 5, 1);
      if (selected) {
        ASSERT_FALSE(same_pixel(pic.image, plain, y, x))
            << "selected pixel (" << x << ", " << y << ")";
        ++changed;
      } else {
        ASSERT_TRUE(same_pixel(pic.image, plain, y, x))
            << "unselected pixel (" << x << ", " << y << ")";
        ++kept;
      }
    }
  EXPECT_EQ(changed, 2 * 50 * 75 + 25 * 38);  // two 50 x 75 cells and one 25 x 38 (no overlap)
  EXPECT_EQ(kept, 200 * 300 - changed);

  // Each scale in its own colour: the inside of a coarse cell leans to scale 0's colour (blue),
  // the fine cell to scale 1's (green); outlines are the pure colour.
  const uint8_t* coarse = pic.image.row(20) + 30 * 3;
  const uint8_t* fine = pic.image.row(5 * 25 + 10) + (37 + 15) * 3;
  const uint8_t* p_coarse = plain.row(20) + 30 * 3;
  const uint8_t* p_fine = plain.row(5 * 25 + 10) + (37 + 15) * 3;
  EXPECT_GT(coarse[2] - p_coarse[2], 20);  // more blue
  EXPECT_GT(fine[1] - p_fine[1], 20);      // more green
  const auto blue = selection_color(0);
  EXPECT_TRUE(std::equal(blue.begin(), blue.end(), pic.image.row(0)));  // cell (0, 0)'s corner
}

TEST(SelectionPng, GtBoxAndLegend) {
  const data::Image img = test_image(100, 100);
  const std::vector<Tensor> maps = {map_with(2, {}), map_with(4, {})};
  SelectionPicture none = draw_selection(img, maps, std::nullopt);
  SelectionPicture boxed = draw_selection(img, maps, data::Box{20, 30, 60, 80});
  EXPECT_EQ(boxed.image_height, 100);  // never enlarged
  // Without selected cells or a box the image part is the image itself.
  for (int64_t y = 0; y < 100; ++y)
    ASSERT_TRUE(std::equal(img.row(y), img.row(y) + 300, none.image.row(y)));
  // The box: a black rim on its outer edge, yellow inside the rim, untouched inside and outside.
  auto px = [&](int64_t y, int64_t x) { return boxed.image.row(y) + x * 3; };
  EXPECT_EQ(px(30, 40)[0] + px(30, 40)[1] + px(30, 40)[2], 0);  // top edge: rim
  EXPECT_EQ(px(32, 40)[0], 255);                                // then yellow
  EXPECT_EQ(px(32, 40)[1], 230);
  EXPECT_TRUE(same_pixel(boxed.image, img, 55, 40));  // inside the box
  EXPECT_TRUE(same_pixel(boxed.image, img, 10, 10));  // outside
  // The legend strip holds each scale's colour (a swatch) and the box's.
  auto has_color = [&](const SelectionPicture& p, std::array<uint8_t, 3> c) {
    for (int64_t y = p.image_height; y < p.image.height; ++y)
      for (int64_t x = 0; x < p.image.width; ++x)
        if (std::equal(c.begin(), c.end(), p.image.row(y) + x * 3)) return true;
    return false;
  };
  EXPECT_TRUE(has_color(boxed, selection_color(0)));
  EXPECT_TRUE(has_color(boxed, selection_color(1)));
  EXPECT_TRUE(has_color(boxed, {255, 230, 0}));
  EXPECT_FALSE(has_color(none, {255, 230, 0}));
}

TEST(SelectionPng, WritesADecodablePng) {
  const auto dir = std::filesystem::temp_directory_path() / "hd_selection_png";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "sel.png").string();
  const data::Image img = test_image(300, 200);
  const std::vector<Tensor> maps = {reshape(map_with(3, {{1, 1}}), {1, 3, 3})};  // [1, g, g] too
  write_selection_png(img, maps, data::Box{10, 10, 50, 90}, path, 150);
  const data::Image back = data::decode_image(data::read_file(path), path);
  SelectionPicture pic = draw_selection(img, maps, data::Box{10, 10, 50, 90}, 150);
  EXPECT_EQ(back.height, 150 + 16);
  EXPECT_EQ(back.width, 100);
  EXPECT_EQ(back.pixels, pic.image.pixels);
  std::filesystem::remove_all(dir);
}

TEST(SelectionPng, ErrorsNameTheProblem) {
  const data::Image img = test_image(20, 20);
  try {
    draw_selection(img, {map_with(2, {}), from_vector(std::vector<float>(6, 0.0f), {2, 3})},
                   std::nullopt);
    FAIL() << "a non-square map was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("selection map 1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(write_selection_png(img, {}, std::nullopt, "/nonexistent/dir/x.png"), Error);
}

}  // namespace
}  // namespace hd::ps3
