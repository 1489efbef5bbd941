// Resampling views, patches, GT maps, text processing, the tokenizer, and the loader end to end.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <unistd.h>

#include "autograd/error.h"
#include "autograd/pinned_host.h"
#include "ops/factory.h"
#include "ops/resample.h"
#include "ps3/data/geometry.h"
#include "ps3/data/loader.h"
#include "ps3/data/synth.h"
#include "tests/ps3/data/test_util.h"

namespace hd::data {
namespace {
using testing::temp_dir;

// The S x S uint8 image as a normalised [3, S, S] float tensor: the reference the loader avoids.
Tensor to_tensor(const Image& img, Normalize n) {
  std::vector<float> v(size_t(3 * img.height * img.width));
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t y = 0; y < img.height; ++y)
      for (int64_t x = 0; x < img.width; ++x)
        v[size_t((c * img.height + y) * img.width + x)] = img.row(y)[x * 3 + c] * n.scale + n.bias;
  return from_vector(v, {1, 3, img.height, img.width});
}

TEST(Geometry, PatchesEqualCropOfFullyResizedImage) {
  Image img = synth_image(1, 140, 2).image;  // S = 140: scales 28, 56, 140 (grids 2, 4, 10)
  for (int64_t scale : {28, 56, 70, 140}) {
    Tensor full = interpolate(to_tensor(img, {}), scale, scale, ResampleMode::bicubic, false);
    const float* f = full.data<float>();
    int64_t grid = scale / kPatch;
    std::vector<int64_t> idx;
    for (int64_t p = 0; p < grid * grid; p += 3) idx.push_back(p);
    std::vector<float> got(idx.size() * 3 * kPatch * kPatch);
    extract_patches(img, scale, idx, {}, got.data());
    for (size_t i = 0; i < idx.size(); ++i)
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t y = 0; y < kPatch; ++y)
          for (int64_t x = 0; x < kPatch; ++x) {
            int64_t gy = (idx[i] / grid) * kPatch + y, gx = (idx[i] % grid) * kPatch + x;
            ASSERT_NEAR(got[((i * 3 + size_t(c)) * kPatch + size_t(y)) * kPatch + size_t(x)],
                        f[(c * scale + gy) * scale + gx], 2e-5)
                << "scale " << scale << " patch " << idx[i];
          }
  }
}

TEST(Geometry, LowResEqualsInterpolate) {
  Image img = synth_image(4, 200, 2).image;
  Tensor ref = interpolate(to_tensor(img, {}), 60, 60, ResampleMode::bicubic, false);
  std::vector<float> got(3 * 60 * 60);
  resample_region(img, 60, 60, 0, 60, 0, 60, {}, got.data());
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], ref.data<float>()[i], 2e-5) << i;
}

TEST(Geometry, AntialiasedResizeMatchesFloatReference) {
  Image img = synth_image(5, 160, 2).image;
  Image small = resize_aa_bicubic(img, 10, 20, 130, 120, 48, 64);
  // Float reference: crop, then the exact PyTorch AA bicubic weights one axis at a time, rounded
  // and clamped to uint8 between the passes as Pillow (and the uint8 path) does.
  Image crop(130, 120);
  for (int64_t y = 0; y < 130; ++y) std::copy_n(img.row(10 + y) + 60, 360, crop.row(y));
  Tensor mid = interpolate(to_tensor(crop, {1.0f, 0.0f}), 130, 64, ResampleMode::bicubic, true);
  std::vector<float> mid_u8(size_t(mid.numel()));
  for (size_t i = 0; i < mid_u8.size(); ++i)
    mid_u8[i] = std::clamp(std::round(mid.data<float>()[i]), 0.0f, 255.0f);
  Tensor ref =
      interpolate(from_vector(mid_u8, {1, 3, 130, 64}), 48, 64, ResampleMode::bicubic, true);
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t y = 0; y < 48; ++y)
      for (int64_t x = 0; x < 64; ++x)
        ASSERT_NEAR(float(small.row(y)[x * 3 + c]),
                    std::clamp(std::round(ref.data<float>()[(c * 48 + y) * 64 + x]), 0.0f, 255.0f),
                    1.01f);
}

TEST(Geometry, GtMapEqualsAreaResampleOfFullMap) {
  const int64_t S = 98;
  std::vector<Box> boxes = {{10.3f, 20.7f, 30.2f, 25.0f}, {90.5f, 0.0f, 98.0f, 3.2f}};
  std::vector<float> full(S * S);
  gt_map(boxes, S, S, full.data());
  // The §2.1 rule directly: rows floor(y1)..ceil(y2), cols floor(x1)..ceil(x2), inclusive.
  EXPECT_EQ(full[20 * S + 10], 1.0f);
  EXPECT_EQ(full[25 * S + 31], 1.0f);
  EXPECT_EQ(full[26 * S + 20], 0.0f);
  EXPECT_EQ(full[19 * S + 20], 0.0f);
  for (int64_t out : {7, 14, 20, 33}) {
    Tensor ref = interpolate(from_vector(full, {1, 1, S, S}), out, out, ResampleMode::area, false);
    std::vector<float> got(size_t(out * out));
    gt_map(boxes, S, out, got.data());
    for (int64_t i = 0; i < out * out; ++i)
      ASSERT_EQ(got[size_t(i)], ref.data<float>()[i] > 0 ? 1.0f : 0.0f)
          << "out " << out << " cell " << i;
  }
}

TEST(Geometry, BoxTransformClipsAndRejects) {
  Crop c{0, 0, 200, 400};  // 400 wide, 200 high, squashed to 100
  std::string why;
  auto b = transform_box({40, 20, 80, 60}, c, 100, why);
  ASSERT_TRUE(b);
  EXPECT_EQ(*b, (Box{10, 10, 20, 30}));
  auto clipped = transform_box({-40, 150, 80, 260}, c, 100, why);
  ASSERT_TRUE(clipped);
  EXPECT_EQ(*clipped, (Box{0, 75, 20, 100}));
  EXPECT_FALSE(transform_box({500, 10, 600, 20}, c, 100, why));
  EXPECT_NE(why.find("outside"), std::string::npos);
  EXPECT_FALSE(transform_box({50, 10, 40, 20}, c, 100, why));
  EXPECT_NE(why.find("inverted"), std::string::npos);
  EXPECT_FALSE(transform_box({50, 10, 50, 20}, c, 100, why));
  EXPECT_NE(why.find("empty"), std::string::npos);
  Crop rc = random_resized_crop(300, 400, 77);
  EXPECT_GE(double(rc.h * rc.w), 0.89 * 300 * 400);
  EXPECT_LE(rc.y0 + rc.h, 300);
  EXPECT_LE(rc.x0 + rc.w, 400);
}

TEST(Text, ProcessingFollowsReference) {
  auto s = caption_sentences(
      "The image is a close-up of a red sign. It reads 47! Is it big? There is no visible text.");
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0], "a red sign.");
  EXPECT_EQ(s[2], "Is it big?");
  EXPECT_EQ(process_caption("One. Two. Three.", false, 1), "One. Two. Three.");
  std::set<std::string> seen;
  for (uint64_t k = 0; k < 200; ++k)
    seen.insert(process_caption("One. Two. Three. Four.", true, k));
  EXPECT_GT(seen.size(), 3u);
  EXPECT_FALSE(seen.count(""));
  EXPECT_EQ(process_caption("a red sign reading 47", true, 9), "a red sign reading 47");
}

// One small synthetic dataset + tokenizer shared by the loader tests.
struct LoaderFixture : ::testing::Test {
  static inline std::string dir;
  static void TearDownTestSuite() { std::filesystem::remove_all(dir); }
  static void SetUpTestSuite() {
    // Per process: ctest -j runs each test case as its own process, concurrently.
    dir = (std::filesystem::temp_directory_path() /
           ("hd_data_loader_fixture_" + std::to_string(::getpid())))
              .string();
    std::filesystem::remove_all(dir);
    SynthOptions o;
    o.out = dir, o.images = 12, o.eval_images = 1, o.resolution = 280, o.seed = 4;
    synth_dataset(o);
    BadInputLog log;
    std::vector<std::string> texts;
    for (const auto& r : open_dataset(dir + "/train", log).records) {
      texts.insert(texts.end(), r.texts.begin(), r.texts.end());
      texts.push_back(r.global_text);
    }
    texts.push_back(
        "a red sign reading 47");  // TokenizerRoundTrip's sentence: every character seen
    train_tokenizer(texts, dir + "/tok", 120);
  }
  LoaderOptions small() {
    LoaderOptions o;
    o.image_size = 280, o.low_res = 28, o.selection_res = 112, o.threads = 2;
    return o;
  }
  // Every caption of every image, batches of 4, seed 5.
  static Sampler caption_sampler(const Dataset& ds) {
    std::vector<int64_t> nb;
    for (const auto& r : ds.records) nb.push_back(int64_t(r.texts.size()));
    return Sampler(nb, std::vector<bool>(nb.size(), true), 4, 5);
  }
};

TEST_F(LoaderFixture, TokenizerRoundTrip) {
  Tokenizer tok(dir + "/tok.model", 16);
  auto ids = tok.encode("a red sign reading 47");
  ASSERT_EQ(ids.size(), 16u);
  EXPECT_EQ(tok.decode(ids), "a red sign reading 47");
  auto longer = tok.encode(std::string(300, 'a'));
  EXPECT_EQ(longer.size(), 16u);
  EXPECT_EQ(longer.back(), 3);  // EOS kept at the end when truncated
  EXPECT_THROW(Tokenizer("/nonexistent.model"), std::exception);
}

TEST_F(LoaderFixture, BatchesMatchSamplerAndReference) {
  BadInputLog log(true);
  Dataset ds = open_dataset(dir + "/train", log);
  std::vector<int64_t> nb;
  std::vector<bool> ng;
  for (const auto& r : ds.records) nb.push_back(int64_t(r.texts.size())), ng.push_back(true);
  Sampler sampler(nb, ng, 4, 21);
  Tokenizer tok(dir + "/tok.model", 64);
  Loader loader(ds, sampler, &tok, small(), log);
  Sampler check = sampler;
  int globals = 0;
  for (int step = 0; step < 7; ++step) {  // crosses an epoch (3 batches per epoch)
    Batch b = loader.next();
    auto specs = check.next(0, 1);
    ASSERT_EQ(b.batch_size(), 4);
    EXPECT_EQ(b.state_after, check.state());
    EXPECT_EQ(b.low_res.shape(), (Shape{4, 3, 28, 28}));
    EXPECT_EQ(b.selection.shape(), (Shape{4, 3, 112, 112}));
    EXPECT_EQ(b.tokens.shape(), (Shape{4, 64}));
    for (int64_t i = 0; i < 4; ++i) {
      const SampleSpec& s = specs[size_t(i)];
      EXPECT_EQ(b.image_ids[size_t(i)], s.image);
      EXPECT_EQ(b.is_global[size_t(i)], s.is_global);
      globals += s.is_global;
      const ImageRecord& r = ds.records[size_t(s.image)];
      if (!s.is_global) {
        EXPECT_EQ(b.boxes[size_t(i)][0], r.boxes[size_t(s.box)]);  // S = original size
        EXPECT_EQ(b.texts[size_t(i)], r.texts[size_t(s.box)]);
      }
      // Decoding gives the cleaned text back (the reference's canonicalize: lower case, no
      // punctuation), or its prefix when 64 tokens truncate it.
      std::string decoded = tok.decode(std::vector<int32_t>(
          b.tokens.data<int32_t>() + i * 64, b.tokens.data<int32_t>() + (i + 1) * 64));
      EXPECT_FALSE(decoded.empty());
      EXPECT_EQ(canonicalize_text(b.texts[size_t(i)]).rfind(decoded, 0), 0u) << decoded;
    }
    // The low-res view equals interpolating the decoded image.
    Image img = decode_image(read_image_bytes(ds.records[size_t(specs[0].image)].source), "x");
    Tensor ref = interpolate(to_tensor(img, {}), 28, 28, ResampleMode::bicubic, false);
    for (int64_t k = 0; k < 3 * 28 * 28; ++k)
      ASSERT_NEAR(b.low_res.data<float>()[k], ref.data<float>()[k], 2e-5);
    Tensor p = b.patches(1, 140, {0, 99});
    EXPECT_EQ(p.shape(), (Shape{2, 3, 14, 14}));
    Tensor g = b.gt_map(20);
    EXPECT_EQ(g.shape(), (Shape{4, 20, 20}));
  }
  EXPECT_GT(globals, 0);
  EXPECT_EQ(log.count(), 0);
}

TEST_F(LoaderFixture, ResizesNonSquareSourcesAndCrops) {
  BadInputLog log(true);
  Dataset ds = open_dataset(dir + "/train", log);
  std::vector<int64_t> nb(ds.records.size(), 1);
  Sampler sampler(nb, std::vector<bool>(nb.size(), true), 6, 3);
  LoaderOptions o = small();
  o.image_size = 140, o.selection_res = 0, o.random_resized_crop = true, o.prefetch_batches = 1;
  o.threads = 3;
  Loader loader(ds, sampler, nullptr, o, log);
  for (int step = 0; step < 3; ++step) {
    Batch b = loader.next();
    EXPECT_EQ(b.images[0]->height, 140);
    EXPECT_FALSE(b.selection.defined());
    for (const auto& boxes : b.boxes)
      for (const Box& x : boxes) EXPECT_TRUE(x.x1 >= 0 && x.x2 <= 140 && x.x1 < x.x2);
  }
}

TEST_F(LoaderFixture, ResumeFromBatchStateContinuesTheSameOrder) {
  BadInputLog log(true);
  Dataset ds = open_dataset(dir + "/train", log);
  std::vector<int64_t> nb;
  for (const auto& r : ds.records) nb.push_back(int64_t(r.texts.size()));
  Sampler sampler(nb, std::vector<bool>(nb.size(), true), 4, 8);
  LoaderOptions o = small();
  o.selection_res = 0;
  std::vector<std::vector<int64_t>> ids;
  SamplerState after2;
  {
    Loader loader(ds, sampler, nullptr, o, log);
    for (int i = 0; i < 5; ++i) {
      Batch b = loader.next();
      ids.push_back(b.image_ids);
      if (i == 1) after2 = b.state_after;
    }
  }
  Sampler resumed = sampler;
  resumed.load_state(after2);
  Loader loader(ds, resumed, nullptr, o, log);
  for (int i = 2; i < 5; ++i) EXPECT_EQ(loader.next().image_ids, ids[size_t(i)]) << i;
}

// The decoded-sample cache changes nothing but speed: the same batches bit for bit over three
// epochs (the later ones served from the cache), and a budget too small for every image caches
// only some and still gives the same batches.
TEST_F(LoaderFixture, DecodedCacheGivesIdenticalBatches) {
  BadInputLog log(true);
  Dataset ds = open_dataset(dir + "/train", log);
  Sampler sampler = caption_sampler(ds);
  Tokenizer tok(dir + "/tok.model", 16);
  LoaderOptions plain = small();
  const int64_t entry = 280 * 280 * 3 + (3 * 28 * 28 + 3 * 112 * 112) * 4;
  for (int64_t budget : {int64_t(1) << 30, 5 * entry}) {
    SCOPED_TRACE(budget);
    LoaderOptions cached = plain;
    cached.cache_bytes = budget;
    Loader a(ds, sampler, &tok, plain, log), b(ds, sampler, &tok, cached, log);
    for (int step = 0; step < 9; ++step) {  // 3 batches per epoch: 3 epochs
      Batch x = a.next(), y = b.next();
      ASSERT_EQ(x.image_ids, y.image_ids);
      EXPECT_EQ(x.boxes, y.boxes);
      EXPECT_EQ(x.texts, y.texts);
      EXPECT_EQ(x.low_res.to_vector<float>(), y.low_res.to_vector<float>());
      EXPECT_EQ(x.selection.to_vector<float>(), y.selection.to_vector<float>());
      EXPECT_EQ(x.tokens.to_vector<int32_t>(), y.tokens.to_vector<int32_t>());
      for (size_t i = 0; i < x.images.size(); ++i)
        EXPECT_EQ(x.images[i]->pixels, y.images[i]->pixels);
      EXPECT_EQ(x.patches(2, 560 / 2, {0, 7}).to_vector<float>(),
                y.patches(2, 560 / 2, {0, 7}).to_vector<float>());
    }
  }
}

// pin_memory (set by the trainer for a GPU model): the same batches, assembled in pinned host
// memory, and every buffer given back when the batches and the loader are gone.
TEST_F(LoaderFixture, PinnedBatchesEqualOrdinaryOnes) {
  BadInputLog log(true);
  Dataset ds = open_dataset(dir + "/train", log);
  Sampler sampler = caption_sampler(ds);
  Tokenizer tok(dir + "/tok.model", 16);
  LoaderOptions plain = small(), pinned = small();
  pinned.pin_memory = true;
  const int64_t pinned_before = pinned_host_allocator().stats().current_bytes;
  {
    Loader a(ds, sampler, &tok, plain, log), b(ds, sampler, &tok, pinned, log);
    for (int step = 0; step < 4; ++step) {
      Batch x = a.next(), y = b.next();
      ASSERT_EQ(x.image_ids, y.image_ids);
      EXPECT_FALSE(x.low_res.is_pinned());
      EXPECT_TRUE(y.low_res.is_pinned() && y.selection.is_pinned() && y.tokens.is_pinned());
      EXPECT_EQ(x.low_res.to_vector<float>(), y.low_res.to_vector<float>());
      EXPECT_EQ(x.selection.to_vector<float>(), y.selection.to_vector<float>());
      EXPECT_EQ(x.tokens.to_vector<int32_t>(), y.tokens.to_vector<int32_t>());
      Tensor px = x.patches(1, 560 / 2, {0, 7}), py = y.patches(1, 560 / 2, {0, 7});
      EXPECT_TRUE(py.is_pinned());
      EXPECT_EQ(px.to_vector<float>(), py.to_vector<float>());
      EXPECT_TRUE(y.gt_map(20).is_pinned());
      EXPECT_EQ(x.gt_map(20).to_vector<float>(), y.gt_map(20).to_vector<float>());
    }
  }
  EXPECT_EQ(pinned_host_allocator().stats().current_bytes, pinned_before);
}

// image_dtype bf16 (a bf16 model's loader): the low-res and selection views are the f32 views
// rounded, bit for bit, also when they come from the decoded-sample cache; other dtypes are
// refused by name.
TEST_F(LoaderFixture, Bf16ViewsAreTheF32ViewsRounded) {
  BadInputLog log(true);
  Dataset ds = open_dataset(dir + "/train", log);
  Sampler sampler = caption_sampler(ds);
  Tokenizer tok(dir + "/tok.model", 16);
  LoaderOptions plain = small();
  for (int64_t cache : {int64_t(0), int64_t(1) << 30}) {
    SCOPED_TRACE(cache);
    LoaderOptions half = plain;
    half.image_dtype = DType::bf16;
    half.cache_bytes = cache;
    Loader a(ds, sampler, &tok, plain, log), b(ds, sampler, &tok, half, log);
    for (int step = 0; step < 6; ++step) {  // 3 batches per epoch: the second epoch is cached
      Batch x = a.next(), y = b.next();
      ASSERT_EQ(x.image_ids, y.image_ids);
      ASSERT_EQ(y.low_res.dtype(), DType::bf16);
      ASSERT_EQ(y.selection.dtype(), DType::bf16);
      for (auto [f32_view, bf16_view] :
           {std::pair{x.low_res, y.low_res}, {x.selection, y.selection}}) {
        const std::vector<float> want = f32_view.to_vector<float>();
        const bf16_t* got = bf16_view.data<bf16_t>();
        for (size_t k = 0; k < want.size(); ++k)
          ASSERT_EQ(got[k].bits, float_to_bf16(want[k]).bits) << "element " << k;
      }
      EXPECT_EQ(x.patches(2, 560 / 2, {0, 7}).to_vector<float>(),
                y.patches(2, 560 / 2, {0, 7}).to_vector<float>());
    }
  }
  LoaderOptions wrong = plain;
  wrong.image_dtype = DType::f64;
  try {
    Loader l(ds, sampler, &tok, wrong, log);
    FAIL() << "an f64 image_dtype was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("image_dtype f64"), std::string::npos) << e.what();
  }
}

TEST_F(LoaderFixture, MismatchedSamplerIsAnErrorNotAHang) {
  BadInputLog log;
  log.set_quiet(true);
  Dataset ds = open_dataset(dir + "/train", log);
  Sampler wrong(std::vector<int64_t>(40, 1), std::vector<bool>(40, true), 40, 1);
  Loader loader(ds, wrong, nullptr, small(), log);
  EXPECT_THROW(loader.next(), Error);
}

TEST_F(LoaderFixture, DestroyWhileBusyDoesNotHang) {
  BadInputLog log;
  Dataset ds = open_dataset(dir + "/train", log);
  std::vector<int64_t> nb(ds.records.size(), 1);
  Sampler sampler(nb, std::vector<bool>(nb.size(), true), 4, 3);
  for (int i = 0; i < 5; ++i) {
    Loader loader(ds, sampler, nullptr, small(), log);
    if (i % 2) loader.next();
  }
}

// The producer's own error (here: a rank/world the sampler rejects) reaches next(), and every
// later next() fails at once instead of waiting on a producer that has stopped; the loader
// still shuts down (its workers wait for jobs that never come).
TEST_F(LoaderFixture, SamplerErrorIsDeliveredAndLaterCallsDoNotWait) {
  BadInputLog log;
  Dataset ds = open_dataset(dir + "/train", log);
  std::vector<int64_t> nb(ds.records.size(), 1);
  Sampler sampler(nb, std::vector<bool>(nb.size(), true), 4, 3);
  LoaderOptions o = small();
  o.world = 3;  // the global batch 4 does not split over 3 ranks
  Loader loader(ds, sampler, nullptr, o, log);
  try {
    loader.next();
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("global batch"), std::string::npos) << e.what();
  }
  try {
    loader.next();
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("earlier sampler error"), std::string::npos) << e.what();
  }
}

// Destroyed before its threads reach their first wait, or with the prefetch queue full and the
// producer waiting for room: stop is set under the queue's lock, so every wait sees it.
TEST_F(LoaderFixture, DestroyRightAfterStartOrWithAFullQueueDoesNotHang) {
  BadInputLog log;
  Dataset ds = open_dataset(dir + "/train", log);
  std::vector<int64_t> nb(ds.records.size(), 1);
  Sampler sampler(nb, std::vector<bool>(nb.size(), true), 4, 3);
  LoaderOptions o = small();
  o.threads = 4;
  for (int i = 0; i < 20; ++i) Loader loader(ds, sampler, nullptr, o, log);
  o.prefetch_batches = 1;
  Loader full(ds, sampler, nullptr, o, log);
  full.next();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // refilled: producer waits
}

}  // namespace
}  // namespace hd::data
