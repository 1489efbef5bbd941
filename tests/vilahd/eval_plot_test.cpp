// The evaluation plot: each swept mode is a line through its accuracies at the right heights, the
// flat modes and chance are horizontal lines, and the PNG reads back as the drawn picture.
#include <gtest/gtest.h>

#include <filesystem>

#include "ps3/data/image.h"
#include "vilahd/eval_plot.h"

namespace hd::vilahd {
namespace {

McModeResult mode(const std::string& name, int64_t look_close, double accuracy) {
  McModeResult r;
  r.mode.name = name;
  r.mode.num_look_close = look_close;
  r.accuracy = accuracy;
  return r;
}

bool pixel_is(const data::Image& img, int64_t x, int64_t y, uint8_t r, uint8_t g, uint8_t b) {
  const uint8_t* p = img.row(y) + x * 3;
  return p[0] == r && p[1] == g && p[2] == b;
}

// Rows in column x with colour (r, g, b) between the plot's top (44) and bottom (360).
std::vector<int64_t> rows_with(const data::Image& img, int64_t x, uint8_t r, uint8_t g, uint8_t b) {
  std::vector<int64_t> out;
  for (int64_t y = 44; y <= 360; ++y)
    if (pixel_is(img, x, y, r, g, b)) out.push_back(y);
  return out;
}

TEST(EvalPlot, LinesSitAtTheirAccuracies) {
  // Plot area: x in [64, 500], y = 360 - accuracy * 316; three resolutions at the centres of
  // equal thirds: x = 64 + (i + 0.5) * 436 / 3.
  std::vector<McModeResult> results = {
      mode("low-res only", 0, 0.30),   mode("bottom-up", 1, 0.5),  // unswept: not drawn
      mode("top-down @756", 1, 0.25),  mode("top-down @1512", 1, 0.5),
      mode("top-down @3780", 1, 0.75),
  };
  const data::Image img = draw_accuracy_plot(results, 0.25, "test");
  ASSERT_EQ(img.width, 720);
  ASSERT_EQ(img.height, 420);
  auto y_of = [](double acc) { return 360 - acc * 316; };
  const double xs[] = {64 + 0.5 * 436 / 3, 64 + 1.5 * 436 / 3, 64 + 2.5 * 436 / 3};
  const double accs[] = {0.25, 0.5, 0.75};
  for (int i = 0; i < 3; ++i) {
    // The marker of the first line (blue 31,119,180) covers +-4 px around the point.
    std::vector<int64_t> rows = rows_with(img, int64_t(xs[i]), 31, 119, 180);
    ASSERT_FALSE(rows.empty()) << i;
    const double centre = 0.5 * double(rows.front() + rows.back());
    EXPECT_NEAR(centre, y_of(accs[i]), 3) << i;
  }
  // Flat low-res line (grey) at 0.30 across the plot, chance (red, dashed) at 0.25 somewhere.
  for (int64_t x : {70, 300, 495}) {
    std::vector<int64_t> grey = rows_with(img, x, 110, 110, 110);
    ASSERT_FALSE(grey.empty()) << x;
    EXPECT_NEAR(double(grey.front()), y_of(0.30), 2) << x;
  }
  int red_columns = 0;
  for (int64_t x = 64; x <= 500; ++x)
    if (!rows_with(img, x, 214, 39, 40).empty()) {
      ++red_columns;
      EXPECT_NEAR(double(rows_with(img, x, 214, 39, 40).front()), y_of(0.25), 2) << x;
    }
  EXPECT_GT(red_columns, 150);  // dashed: about half of the 437 columns
  EXPECT_LT(red_columns, 300);
  // The legend names the line: a blue swatch on the right.
  EXPECT_FALSE(rows_with(img, 520, 31, 119, 180).empty());
}

TEST(EvalPlot, WritesAPngThatReadsBack) {
  const auto path = std::filesystem::temp_directory_path() / "hd_eval_plot_test.png";
  std::vector<McModeResult> results = {mode("bottom-up @756", 1, 0.4),
                                       mode("bottom-up @3780", 1, 0.6)};
  write_accuracy_plot(results, 0.25, "two points", path.string());
  const data::Image back = data::decode_image(data::read_file(path.string()), path.string());
  EXPECT_EQ(back.pixels, draw_accuracy_plot(results, 0.25, "two points").pixels);
  std::filesystem::remove(path);
  EXPECT_THROW(write_accuracy_plot(results, 0.25, "x", "/nonexistent-dir/plot.png"),
               std::exception);
}

}  // namespace
}  // namespace hd::vilahd
