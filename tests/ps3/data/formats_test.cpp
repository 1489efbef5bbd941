// Codecs, the PS3 folder and tar layouts, SFT / multiple-choice files, and the generator.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "autograd/error.h"
#include "ps3/data/image.h"
#include "ps3/data/records.h"
#include "ps3/data/synth.h"
#include "ps3/data/tar.h"
#include "tests/ps3/data/test_util.h"

namespace hd::data {
namespace {
namespace fs = std::filesystem;
using testing::temp_dir;

Image pattern(int64_t h, int64_t w) {
  Image img(h, w);
  for (size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = uint8_t((i * 7 + i / 1000) & 255);
  return img;
}

TEST(Codec, PngRoundTripIsExact) {
  Image img = pattern(37, 53);
  Image back = decode_image(encode_png(img, 1), "mem");
  EXPECT_EQ(back.height, 37);
  EXPECT_EQ(back.width, 53);
  EXPECT_EQ(back.pixels, img.pixels);
}

TEST(Codec, JpegRoundTripIsClose) {
  Image img(64, 80);
  for (int64_t y = 0; y < 64; ++y)
    for (int64_t x = 0; x < 80; ++x)
      img.row(y)[x * 3] = uint8_t(x * 3), img.row(y)[x * 3 + 1] = uint8_t(y * 3),
                     img.row(y)[x * 3 + 2] = 128;
  Image back = decode_image(encode_jpeg(img, 95), "mem");
  ASSERT_EQ(back.pixels.size(), img.pixels.size());
  double err = 0;
  for (size_t i = 0; i < img.pixels.size(); ++i)
    err += std::abs(int(back.pixels[i]) - int(img.pixels[i]));
  EXPECT_LT(err / double(img.pixels.size()), 2.0);
}

TEST(Codec, TruncatedFilesAreErrors) {
  Image img = synth_image(0, 140, 1).image;
  auto jpg = encode_jpeg(img, 90), png = encode_png(img, 1);
  for (double keep : {0.1, 0.5, 0.9, 0.99}) {
    auto j = jpg, p = png;
    j.resize(size_t(double(j.size()) * keep));
    p.resize(size_t(double(p.size()) * keep));
    EXPECT_THROW(decode_image(j, "cut.jpg"), Error) << keep;
    EXPECT_THROW(decode_image(p, "cut.png"), Error) << keep;
  }
}

TEST(Codec, Decodes4096Square) {
  Image img(4096, 4096);
  for (int64_t y = 0; y < 4096; ++y) img.row(y)[y * 3] = 255;  // a diagonal
  auto bytes = encode_jpeg(img, 90);
  EXPECT_EQ(image_size(bytes, "mem"), std::make_pair(int64_t(4096), int64_t(4096)));
  Image back = decode_image(bytes, "mem");
  EXPECT_EQ(back.height, 4096);
  EXPECT_GT(back.row(4000)[4000 * 3], 128);
  Image png = decode_image(encode_png(img, 1), "mem");
  EXPECT_EQ(png.pixels, img.pixels);
}

TEST(Synth, DeterministicBySeedAndIndex) {
  SynthImage a = synth_image(3, 256, 7), b = synth_image(3, 256, 7), c = synth_image(3, 256, 8);
  EXPECT_EQ(a.image.pixels, b.image.pixels);
  EXPECT_EQ(a.global_caption, b.global_caption);
  ASSERT_EQ(a.regions.size(), b.regions.size());
  for (size_t i = 0; i < a.regions.size(); ++i)
    EXPECT_EQ(a.regions[i].caption, b.regions[i].caption);
  EXPECT_NE(a.image.pixels, c.image.pixels);
  EXPECT_GE(a.regions.size(), 1u);
  for (const auto& r : a.regions) {
    EXPECT_LT(r.box.x1, r.box.x2);
    EXPECT_LE(r.box.x2, 256.0f);
    EXPECT_EQ(r.options[size_t(r.answer)], r.detail);
    EXPECT_NE(r.caption.find(r.detail), std::string::npos);
  }
}

// max_regions caps the salient signs per image (min(2, N)..N of them); 5 is the default.
TEST(Synth, MaxRegionsCapsTheSalientSigns) {
  std::vector<size_t> counts_default, counts_3, counts_1;
  for (int64_t index = 0; index < 24; ++index) {
    SynthImage a = synth_image(index, 1260, 3),
               b = synth_image(index, 1260, 3, SynthLayout::kBoards, 5);
    EXPECT_EQ(a.image.pixels, b.image.pixels) << index;
    counts_default.push_back(a.regions.size());
    counts_3.push_back(synth_image(index, 1260, 3, SynthLayout::kBoards, 3).regions.size());
    counts_1.push_back(synth_image(index, 1260, 3, SynthLayout::kBoards, 1).regions.size());
  }
  auto [lo3, hi3] = std::minmax_element(counts_3.begin(), counts_3.end());
  EXPECT_EQ(*lo3, 2u);
  EXPECT_EQ(*hi3, 3u);
  EXPECT_EQ(*std::max_element(counts_default.begin(), counts_default.end()), 5u);
  EXPECT_EQ(counts_1, std::vector<size_t>(24, 1u));
  EXPECT_THROW(synth_image(0, 1260, 3, SynthLayout::kBoards, 0), std::invalid_argument);
  EXPECT_THROW(synth_image(0, 1260, 3, SynthLayout::kBoards, 6), std::invalid_argument);
}

// The patterns layout: each sign's inside is half ink in bands of 3 px at 3780, oriented as its
// caption says; averaged over 10 x 10 blocks (the 378 view) every pattern is the same tint.
TEST(Synth, PatternsAreFineAndOrientedAsCaptioned) {
  int seen = 0;
  for (int64_t index = 0; index < 4; ++index) {
    SynthImage s = synth_image(index, 3780, 5, SynthLayout::kPatterns);
    ASSERT_GE(s.regions.size(), 2u);
    for (const SynthRegion& r : s.regions) {
      ASSERT_EQ(r.kind, "pattern");
      EXPECT_NE(r.caption.find(r.detail == "checkered" ? "checkered" : r.detail + " stripes"),
                std::string::npos)
          << r.caption;
      EXPECT_EQ(r.question.rfind("What pattern is on the ", 0), 0u) << r.question;
      // Inside the 3-px margin; ink and sign colour differ in green for every colour.
      const int64_t x0 = int64_t(r.box.x1) + 3, y0 = int64_t(r.box.y1) + 3;
      // Signs are at least 75 x 41 px: the window and its +-3 px neighbours stay inside.
      const int64_t x1 = x0 + 60, y1 = y0 + 30;
      auto value = [&](int64_t x, int64_t y) { return int(s.image.row(y)[x * 3 + 1]); };
      auto ink_at = [&](int64_t x, int64_t y) {
        return value(x, y) == value(x0, y0);  // (x0, y0) starts an inked band in every pattern
      };
      int64_t ink = 0, same_right = 0, same_below = 0, same_diag = 0, n = 0;
      int darkest = 255, lightest = 0;
      for (int64_t y = y0 + 6; y < y1; ++y)  // whole periods: 24 rows x 60 columns
        for (int64_t x = x0; x < x1; ++x, ++n) {
          ink += ink_at(x, y);
          darkest = std::min(darkest, value(x, y)), lightest = std::max(lightest, value(x, y));
          same_right += ink_at(x, y) == ink_at(x + 3, y);
          same_below += ink_at(x, y) == ink_at(x, y + 3);
          same_diag += ink_at(x, y) == ink_at(x + 3, y - 3);
        }
      EXPECT_NEAR(double(ink) / double(n), 0.5, 0.05) << r.caption;
      const double right = double(same_right) / double(n), below = double(same_below) / double(n),
                   diag = double(same_diag) / double(n);
      if (r.detail == "horizontal") {
        EXPECT_TRUE(right > 0.99 && below < 0.01) << r.caption;
      }
      if (r.detail == "vertical") {
        EXPECT_TRUE(right < 0.01 && below > 0.99) << r.caption;
      }
      if (r.detail == "diagonal") {
        EXPECT_TRUE(diag > 0.99 && right < 0.01) << r.caption;
      }
      if (r.detail == "checkered") {
        EXPECT_TRUE(right < 0.01 && below < 0.01 && diag > 0.99);
      }
      // The 378 view: 10 x 10 block means over the inside vary by under a quarter of the ink
      // contrast (the full contrast at 3780).
      double lo = 255, hi = 0;
      for (int64_t by = y0; by + 10 <= y1; by += 10)
        for (int64_t bx = x0; bx + 10 <= x1; bx += 10) {
          double sum = 0;
          for (int64_t y = by; y < by + 10; ++y)
            for (int64_t x = bx; x < bx + 10; ++x) sum += value(x, y);
          lo = std::min(lo, sum / 100), hi = std::max(hi, sum / 100);
        }
      EXPECT_GT(lightest - darkest, 60) << r.caption;
      EXPECT_LT(hi - lo, 0.25 * (lightest - darkest) + 1) << r.caption;
      ++seen;
    }
  }
  EXPECT_GE(seen, 8);
}

// The one_pattern layout: one coloured sign per image, 151-222 px wide at 3780, its pattern in
// bands of 3 px or 6 px (both sizes occur), oriented as captioned; the 378 view (10 x 10 block
// means) is flat to within a quarter of the contrast for both sizes.
TEST(Synth, OnePatternIsOneLargeSignWithBandsOfTwoSizes) {
  int bands[2] = {0, 0};
  for (int64_t index = 0; index < 12; ++index) {
    SynthImage s = synth_image(index, 3780, 5, SynthLayout::kOnePattern);
    ASSERT_EQ(s.regions.size(), 1u) << "image " << index;
    const SynthRegion& r = s.regions[0];
    ASSERT_EQ(r.kind, "pattern");
    const float w = r.box.x2 - r.box.x1;
    EXPECT_GE(w, 3780 / 25) << "image " << index;
    EXPECT_LT(w, 3780 / 17) << "image " << index;
    const int64_t x0 = int64_t(r.box.x1) + 3, y0 = int64_t(r.box.y1) + 3;
    auto value = [&](int64_t x, int64_t y) { return int(s.image.row(y)[x * 3 + 1]); };
    auto ink_at = [&](int64_t x, int64_t y) { return value(x, y) == value(x0, y0); };
    // The band b for which the pattern's own test holds (ink changes b px across the bands).
    int band_found = 0;
    for (int b : {3, 6}) {
      int64_t right = 0, below = 0, diag = 0, n = 0;
      for (int64_t y = y0 + 2 * b; y < y0 + 2 * b + 48; ++y)
        for (int64_t x = x0; x < x0 + 96; ++x, ++n) {
          right += ink_at(x, y) == ink_at(x + b, y);
          below += ink_at(x, y) == ink_at(x, y + b);
          diag += ink_at(x, y) == ink_at(x + b, y - b);
        }
      const double fr = double(right) / double(n), fb = double(below) / double(n),
                   fd = double(diag) / double(n);
      const bool ok = r.detail == "horizontal" ? fr > 0.99 && fb < 0.01
                      : r.detail == "vertical" ? fr < 0.01 && fb > 0.99
                      : r.detail == "diagonal" ? fd > 0.99 && fr < 0.01
                                               : fr < 0.01 && fb < 0.01 && fd > 0.99;
      if (ok) band_found = b;
    }
    ASSERT_NE(band_found, 0) << r.caption << " (image " << index << "): no band of 3 or 6 px";
    ++bands[band_found == 6];
    double lo = 255, hi = 0;
    int darkest = 255, lightest = 0;
    for (int64_t by = y0; by + 10 <= y0 + 70; by += 10)
      for (int64_t bx = x0; bx + 10 <= x0 + 140; bx += 10) {
        double sum = 0;
        for (int64_t y = by; y < by + 10; ++y)
          for (int64_t x = bx; x < bx + 10; ++x) {
            sum += value(x, y);
            darkest = std::min(darkest, value(x, y)), lightest = std::max(lightest, value(x, y));
          }
        lo = std::min(lo, sum / 100), hi = std::max(hi, sum / 100);
      }
    EXPECT_LT(hi - lo, 0.25 * (lightest - darkest) + 1) << r.caption << " band " << band_found;
  }
  EXPECT_GE(bands[0], 2);
  EXPECT_GE(bands[1], 2);
}

TEST(Synth, DatasetIsIndependentOfThreadCount) {
  SynthOptions o;
  o.images = 6, o.eval_images = 2, o.resolution = 256, o.seed = 3;
  o.out = temp_dir("t1").string(), o.threads = 1;
  synth_dataset(o);
  SynthOptions o2 = o;
  o2.out = temp_dir("t3").string(), o2.threads = 3;
  synth_dataset(o2);
  for (const char* f : {"train/00000004.jpg", "train/00000004.json", "eval/00000007.jpg",
                        "sft.jsonl", "eval_mc.jsonl"})
    EXPECT_EQ(read_file(o.out + "/" + f), read_file(o2.out + "/" + f)) << f;
}

// Folder and tar layouts of the same synthetic data read back to the same records and pixels.
TEST(Layouts, FolderAndTarRoundTrip) {
  SynthOptions o;
  o.images = 7, o.eval_images = 1, o.resolution = 192, o.seed = 11;
  o.out = temp_dir("folder").string();
  synth_dataset(o);
  SynthOptions ot = o;
  ot.out = temp_dir("tar").string(), ot.tar = true, ot.shard_size = 3;
  synth_dataset(ot);
  EXPECT_TRUE(fs::exists(ot.out + "/train/images_00002.tar"));
  EXPECT_TRUE(fs::exists(ot.out + "/train/text_box_00002.tar"));
  BadInputLog log(true);
  Dataset folder = open_dataset(o.out + "/train", log);
  Dataset shards = open_dataset(ot.out + "/train", log);
  ASSERT_EQ(folder.records.size(), 7u);
  ASSERT_EQ(shards.records.size(), 7u);
  for (size_t i = 0; i < 7; ++i) {
    SynthImage s = synth_image(int64_t(i), 192, 11);
    for (const Dataset* d : {&folder, &shards}) {
      const ImageRecord& r = d->records[i];
      EXPECT_EQ(r.global_text, s.global_caption);
      ASSERT_EQ(r.texts.size(), s.regions.size());
      for (size_t k = 0; k < r.texts.size(); ++k) {
        EXPECT_EQ(r.texts[k], s.regions[k].caption);
        EXPECT_EQ(r.boxes[k], s.regions[k].box);
      }
    }
    EXPECT_EQ(read_image_bytes(folder.records[i].source),
              read_image_bytes(shards.records[i].source));
    Image img = decode_image(read_image_bytes(shards.records[i].source), "x");
    EXPECT_EQ(img.height, 192);
  }
  auto sft = read_sft(o.out + "/sft.jsonl", log);
  size_t regions = 0;
  for (const auto& r : folder.records) regions += r.texts.size();
  EXPECT_EQ(sft.size(), regions);
  EXPECT_EQ(sft[0].conversations[0].first, "human");
  EXPECT_EQ(sft[0].conversations[0].second.rfind("<image>\n", 0), 0u);
  auto mc = read_mc(o.out + "/eval_mc.jsonl", log);
  ASSERT_FALSE(mc.empty());
  EXPECT_TRUE(fs::exists(o.out + "/" + mc[0].image));
  EXPECT_TRUE(mc[0].box.has_value());
}

TEST(Layouts, SftJsonArrayAndLinesAgree) {
  auto dir = temp_dir("sft");
  SftRecord r{"a.jpg", Box{1, 2, 30, 40}, {{"human", "<image>\nQ?"}, {"gpt", "A"}}};
  std::ofstream(dir / "x.jsonl") << sft_to_json(r) << "\n" << sft_to_json(r) << "\n";
  std::ofstream(dir / "x.json") << "[" << sft_to_json(r) << ",\n" << sft_to_json(r) << "]";
  BadInputLog log(true);
  auto a = read_sft((dir / "x.jsonl").string(), log), b = read_sft((dir / "x.json").string(), log);
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(a[1].box, r.box);
  EXPECT_EQ(b[1].conversations, r.conversations);
}

TEST(Layouts, TarMemberRandomAccess) {
  auto dir = temp_dir("tar");
  std::string path = (dir / "s.tar").string();
  {
    TarWriter w(path);
    for (int i = 0; i < 5; ++i)
      w.add("member_with_a_rather_long_name_to_force_pax_headers_if_needed_" +
                std::string(60, 'x') + std::to_string(i),
            std::vector<uint8_t>(size_t(1000 + i * 777), uint8_t(i)));
  }
  std::string err;
  auto members = list_tar(path, err);
  EXPECT_TRUE(err.empty()) << err;
  ASSERT_EQ(members.size(), 5u);
  for (int i = 4; i >= 0; --i) {
    auto bytes = read_tar_member(path, members[size_t(i)]);
    EXPECT_EQ(bytes, std::vector<uint8_t>(size_t(1000 + i * 777), uint8_t(i)));
  }
}

}  // namespace
}  // namespace hd::data
