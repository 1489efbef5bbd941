// resize_aa_bicubic against Pillow bit for bit (fixture: tests/fixtures/pillow_resize.json, made
// by tests/fixtures/make_pillow_resize.py with Pillow's Image.resize(BICUBIC), which is what the
// reference's torchvision Resize runs on a PIL image).
//
// The inputs are formulas (the same in the script), so no input image is committed. Every output
// byte is checked through per-row FNV-1a 64 hashes (a failure names the first rows that differ)
// and the hash of the row hashes, and a strided sample of values is compared one by one (a failure
// names the pixel, the channel and both values).
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "ps3/data/resize.h"

namespace hd::data {
namespace {

constexpr uint64_t kFnvOffset = 0xCBF29CE484222325ull, kFnvPrime = 0x100000001B3ull;

uint64_t fnv1a64(const uint8_t* p, size_t n, uint64_t h = kFnvOffset) {
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * kFnvPrime;
  return h;
}

std::string hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// make_pillow_resize.py noise_image: hash noise left of x = 500, wrapped gradients right of it.
Image noise_image(int64_t w, int64_t h) {
  Image img(h, w);
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t c = 0; c < 3; ++c) {
        uint64_t v;
        if (x < 500) {
          const uint64_t m = 0xFFFFFFFFull;
          uint64_t k = ((uint64_t(x) * 73856093) & m) ^ ((uint64_t(y) * 19349663) & m) ^
                       ((uint64_t(c) * 83492791) & m);
          k = ((k ^ (k >> 13)) * 0x5BD1E995ull) & m;
          v = (k ^ (k >> 15)) & 255;
        } else {
          v = uint64_t(x * 3 + y * 2 + c * 50) & 255;
        }
        img.row(y)[x * 3 + c] = uint8_t(v);
      }
  return img;
}

// make_pillow_resize.py xor_image.
Image xor_image(int64_t w, int64_t h) {
  Image img(h, w);
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t c = 0; c < 3; ++c)
        img.row(y)[x * 3 + c] = uint8_t(((x * 7 + y * 13 + c * 101) ^ (x * y)) & 255);
  return img;
}

const nlohmann::json& fixture() {
  static const nlohmann::json j = [] {
    const std::string path = std::string(HD_FIXTURE_DIR) + "/pillow_resize.json";
    std::ifstream f(path);
    if (!f) throw std::runtime_error("cannot read " + path + " (make_pillow_resize.py writes it)");
    std::stringstream ss;
    ss << f.rdbuf();
    return nlohmann::json::parse(ss.str());
  }();
  return j;
}

const nlohmann::json& find_case(const std::string& name) {
  for (const auto& c : fixture()["cases"])
    if (c["name"] == name) return c;
  throw std::runtime_error("pillow_resize.json has no case " + name);
}

void expect_equals_pillow(const std::string& name) {
  const nlohmann::json& c = find_case(name);
  static const Image noise = noise_image(1000, 700);
  const Image src = c["input"] == "noise" ? noise : xor_image(3780, 3780);
  int64_t x0 = 0, y0 = 0, w = src.width, h = src.height;
  if (!c["crop"].is_null()) {  // Pillow's (left, upper, right, lower)
    x0 = c["crop"][0], y0 = c["crop"][1];
    w = int64_t(c["crop"][2]) - x0, h = int64_t(c["crop"][3]) - y0;
  }
  const int64_t out_w = c["out_width"], out_h = c["out_height"];
  const Image out = resize_aa_bicubic(src, y0, x0, h, w, out_h, out_w);
  ASSERT_EQ(out.height, out_h);
  ASSERT_EQ(out.width, out_w);

  // Every byte: row hashes, then the hash of the row hashes.
  const auto& rows = c["row_fnv1a64"];
  ASSERT_EQ(int64_t(rows.size()), out_h);
  std::vector<uint8_t> hashes;
  int64_t bad_rows = 0;
  for (int64_t y = 0; y < out_h; ++y) {
    uint64_t rh = fnv1a64(out.row(y), size_t(out_w * 3));
    for (int b = 0; b < 8; ++b) hashes.push_back(uint8_t(rh >> (8 * b)));
    if (hex(rh) != rows[size_t(y)].get<std::string>() && ++bad_rows <= 5)
      ADD_FAILURE() << name << ": output row " << y << " differs from Pillow's";
  }
  EXPECT_EQ(bad_rows, 0) << name << ": rows that differ from Pillow's, of " << out_h;
  EXPECT_EQ(hex(fnv1a64(hashes.data(), hashes.size())), c["fnv1a64"].get<std::string>())
      << name << ": hash of the whole output";

  // The sampled values, by pixel.
  int64_t bad = 0;
  for (const auto& s : c["samples"]) {
    const int64_t i = s[0], want = s[1];
    const int64_t got = out.pixels[size_t(i)];
    if (got != want && ++bad <= 10)
      ADD_FAILURE() << name << ": pixel (x " << (i / 3) % out_w << ", y " << i / 3 / out_w
                    << ") channel " << i % 3 << " is " << got << ", Pillow " << want;
  }
  EXPECT_EQ(bad, 0) << name << ": sampled values that differ, of " << c["samples"].size();
}

TEST(PillowResize, FixtureIsFromPillow) {
  EXPECT_FALSE(fixture()["pillow_version"].get<std::string>().empty());
  EXPECT_EQ(fixture()["cases"].size(), 5u);
}
TEST(PillowResize, Upsample1000x700To1512) {
  expect_equals_pillow("noise_1000x700_to_1512");
}
TEST(PillowResize, Upsample1000x700To3780) {
  expect_equals_pillow("noise_1000x700_to_3780");
}
TEST(PillowResize, Downsample3780To1512) {
  expect_equals_pillow("xor_3780_to_1512");
}
TEST(PillowResize, CropThenResizeTo1512) {
  expect_equals_pillow("noise_crop_to_1512");
}
TEST(PillowResize, NonSquareDownsample) {
  expect_equals_pillow("noise_1000x700_to_517x333");
}

// The inputs really are the script's: a few values computed by hand from the formulas.
TEST(PillowResize, InputFormulas) {
  Image n = noise_image(1000, 700), x = xor_image(3780, 3780);
  EXPECT_EQ(n.row(0)[0], 0);                                 // hash(0, 0, 0) = 0
  EXPECT_EQ(n.row(3)[600 * 3 + 2], (1800 + 6 + 100) & 255);  // gradient side
  EXPECT_EQ(x.row(5)[4 * 3 + 1], ((28 + 65 + 101) ^ 20) & 255);
}

}  // namespace
}  // namespace hd::data
