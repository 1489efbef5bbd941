// evaluate_ps3 on a micro synthetic eval set: counts, the chance levels against their closed
// forms (1 / #regions; the box's grid share weighted by the per-scale budget), metrics in range,
// determinism, and bad options.
#include "ps3/evaluate.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "ps3/data/geometry.h"
#include "ps3/data/synth.h"
#include "tests/ps3/model/micro.h"
#include "tests/testing/errors.h"

namespace hd::ps3 {
namespace {

class EvalFixture : public ::testing::Test {
 protected:
  static constexpr int64_t kSynthRes = 280;
  void SetUp() override {
    dir = (std::filesystem::temp_directory_path() / ("hd_ps3_eval_" + std::to_string(::getpid())))
              .string();
    std::filesystem::remove_all(dir);
    data::SynthOptions o;
    o.out = dir, o.images = 8, o.eval_images = 3, o.resolution = kSynthRes, o.seed = 2;
    data::synth_dataset(o);
    data::BadInputLog log;
    eval_set = data::open_dataset(dir + "/eval", log);
    std::vector<std::string> texts;
    for (const auto& r : data::open_dataset(dir + "/train", log).records) {
      texts.insert(texts.end(), r.texts.begin(), r.texts.end());
      texts.push_back(r.global_text);
    }
    data::train_tokenizer(texts, dir + "/tok", 60);
    config = testing::micro_config();
    tok = std::make_unique<data::Tokenizer>(dir + "/tok.model", config.text.context);
    config.text.vocab = tok->vocab_size();
    options.loader.image_size = config.vision.image_size();
    options.loader.low_res = config.vision.low_res;
    options.loader.selection_res = config.vision.selection_res;
  }
  void TearDown() override { std::filesystem::remove_all(dir); }

  std::string dir;
  data::Dataset eval_set;
  PS3Config config;
  std::unique_ptr<data::Tokenizer> tok;
  EvalOptions options;
};

TEST_F(EvalFixture, CountsAndChanceLevelsMatchClosedForms) {
  ASSERT_EQ(eval_set.records.size(), 3u);
  PS3CLIP model(config);
  model.initialize(4);
  options.max_images = 2;
  EvalResult r = evaluate_ps3(model, eval_set, *tok, options);

  // Closed forms from the records: every box of the first two images, mapped to S like the
  // loader maps it; uniform picks of split_budget(scales, max_select) patches per scale.
  const int64_t S = config.vision.image_size();
  std::vector<int64_t> k = split_budget(config.vision.scales, config.vision.max_select);
  int64_t regions = 0;
  double random_share = 0;
  for (int i = 0; i < 2; ++i) {
    for (const data::Box& box : eval_set.records[size_t(i)].boxes) {
      std::string why;
      auto b = data::transform_box(box, data::Crop{0, 0, kSynthRes, kSynthRes}, S, why);
      ASSERT_TRUE(b.has_value()) << why;
      ++regions;
      double inside = 0, picked = 0;
      for (size_t s = 0; s < k.size(); ++s) {
        const int64_t g = config.vision.grid(s);
        std::vector<float> map(size_t(g * g));
        data::gt_map({*b}, S, g, map.data());
        double cells = 0;
        for (float v : map) cells += v;
        inside += double(k[s]) * cells / double(g * g);
        picked += double(k[s]);
      }
      random_share += inside / picked;
    }
  }
  random_share /= double(regions);
  EXPECT_EQ(r.images, 2);
  EXPECT_EQ(r.queries, regions);
  EXPECT_DOUBLE_EQ(r.retrieval_chance, 1.0 / double(regions));
  EXPECT_NEAR(r.random_share, random_share, 1e-12);
  EXPECT_GE(r.retrieval_top1, 0.0);
  EXPECT_LE(r.retrieval_top1, 1.0);
  // top-1 is a count of hits over the queries.
  double hits = r.retrieval_top1 * double(regions);
  EXPECT_NEAR(hits, std::round(hits), 1e-9);
  EXPECT_GE(r.selection_share, 0.0);
  EXPECT_LE(r.selection_share, 1.0);

  EvalResult again = evaluate_ps3(model, eval_set, *tok, options);
  EXPECT_EQ(again.retrieval_top1, r.retrieval_top1);
  EXPECT_EQ(again.selection_share, r.selection_share);
}

TEST_F(EvalFixture, MaxImagesCapsAtTheSetSize) {
  PS3CLIP model(config);
  model.initialize(4);
  options.max_images = 100;
  EXPECT_EQ(evaluate_ps3(model, eval_set, *tok, options).images, 3);
}

TEST_F(EvalFixture, RejectsMismatchedSizes) {
  PS3CLIP model(config);
  model.initialize(4);
  options.loader.image_size = 3780;
  hd::testing::expect_error([&] { evaluate_ps3(model, eval_set, *tok, options); }, "loader sizes");
  data::Dataset empty;
  options.loader.image_size = config.vision.image_size();
  hd::testing::expect_error([&] { evaluate_ps3(model, empty, *tok, options); },
                            "no usable local caption");
}

}  // namespace
}  // namespace hd::ps3
