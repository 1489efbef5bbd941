// evaluate_ps3 on a micro synthetic eval set: counts, the chance levels against their closed
// forms (1 / #regions; the box's grid share weighted by the per-scale budget), metrics in range,
// determinism, and bad options.
#include "ps3/evaluate.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "ops/factory.h"
#include "ps3/data/geometry.h"
#include "ps3/data/image.h"
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
  const size_t ns = config.vision.scales.size();
  std::vector<int64_t> k = split_budget(config.vision.scales, config.vision.max_select);
  auto cells_of = [&](const std::vector<data::Box>& boxes, size_t s) {
    const int64_t g = config.vision.grid(s);
    std::vector<float> map(size_t(g * g));
    data::gt_map(boxes, S, g, map.data());
    double cells = 0;
    for (float v : map) cells += v;
    return cells / double(g * g);  // the box map's share of grid s
  };
  int64_t regions = 0;
  std::vector<double> td_precision(ns), bu_precision(ns);
  for (int i = 0; i < 2; ++i) {
    std::vector<data::Box> all;
    for (const data::Box& box : eval_set.records[size_t(i)].boxes) {
      std::string why;
      auto b = data::transform_box(box, data::Crop{0, 0, kSynthRes, kSynthRes}, S, why);
      ASSERT_TRUE(b.has_value()) << why;
      ++regions;
      all.push_back(*b);
      for (size_t s = 0; s < ns; ++s) td_precision[s] += cells_of({*b}, s);
    }
    for (size_t s = 0; s < ns; ++s) bu_precision[s] += cells_of(all, s) / 2.0;
  }
  EXPECT_EQ(r.images, 2);
  EXPECT_EQ(r.queries, regions);
  EXPECT_EQ(r.top_down.queries, regions);
  EXPECT_EQ(r.bottom_up.queries, 2);
  EXPECT_DOUBLE_EQ(r.retrieval_forced_chance, 1.0 / double(regions));
  EXPECT_DOUBLE_EQ(r.retrieval_topdown_chance, 0.5);
  EXPECT_EQ(r.retrieval_topdown_images, 2);
  ASSERT_EQ(r.top_down.recall.size(), ns);
  for (size_t s = 0; s < ns; ++s) {
    const int64_t g = config.vision.grid(s);
    // A random pick of k_s of the g^2 cells finds k_s / g^2 of any box (look-close 1 selects
    // exactly k_s per scale here: the grids are larger than the budget).
    EXPECT_NEAR(r.top_down.random_recall[s], double(k[s]) / double(g * g), 1e-12) << s;
    EXPECT_NEAR(r.bottom_up.random_recall[s], double(k[s]) / double(g * g), 1e-12) << s;
    EXPECT_NEAR(r.top_down.random_precision[s], td_precision[s] / double(regions), 1e-12) << s;
    EXPECT_NEAR(r.bottom_up.random_precision[s], bu_precision[s], 1e-12) << s;
    for (double v : {r.top_down.recall[s], r.top_down.precision[s], r.bottom_up.recall[s],
                     r.bottom_up.precision[s]}) {
      EXPECT_GE(v, 0.0);
      EXPECT_LE(v, 1.0);
    }
  }
  for (const ProbStats& p : {r.top_down_probs, r.bottom_up_probs}) {
    EXPECT_GE(p.auc, 0.0);  // the micro low-res grid is 2 x 2: no tighter bound holds
    EXPECT_LE(p.auc, 1.0);
    EXPECT_LE(p.mean_in, p.max_in);
    EXPECT_LE(p.mean_out, p.max_out);
  }
  // top-1 is a count of hits over the queries.
  double hits = r.retrieval_forced_top1 * double(regions);
  EXPECT_NEAR(hits, std::round(hits), 1e-9);
  hits = r.retrieval_topdown_top1 * double(regions);
  EXPECT_NEAR(hits, std::round(hits), 1e-9);

  EvalResult again = evaluate_ps3(model, eval_set, *tok, options);
  EXPECT_EQ(again.retrieval_forced_top1, r.retrieval_forced_top1);
  EXPECT_EQ(again.retrieval_topdown_top1, r.retrieval_topdown_top1);
  EXPECT_EQ(again.top_down.recall_all, r.top_down.recall_all);
  EXPECT_EQ(again.bottom_up.precision_all, r.bottom_up.precision_all);

  // The report carries the same numbers.
  const std::string json = eval_json(r), table = eval_table(r);
  EXPECT_NE(json.find("\"retrieval_top_down\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"random_recall\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"top_down_first_pick\""), std::string::npos) << json;
  const FirstPick& f = r.top_down_first_pick;
  EXPECT_NEAR(f.own_box + f.other_region + f.elsewhere, 1.0, 1e-12);
  EXPECT_NE(table.find("top-down"), std::string::npos) << table;
  EXPECT_NE(table.find("bottom-up"), std::string::npos) << table;
}

// first_pick on hand-made maps: a 3 x 3 low-res grid read from a 6 x 6 first-scale map at the
// first fine cell of each low-res cell (rows and columns 0, 2, 4).
TEST(FirstPick, PlacesTheHighestCellAndRanksTheBox) {
  auto fine = [](const std::vector<std::pair<int, float>>& low_cells) {
    std::vector<float> m(36, 0.1f);
    for (auto [cell, v] : low_cells) m[size_t((cell / 3) * 2 * 6 + (cell % 3) * 2)] = v;
    return from_vector<float>(m, {1, 6, 6});
  };
  auto low = [](const std::vector<int>& cells) {
    std::vector<float> m(9, 0.0f);
    for (int c : cells) m[size_t(c)] = 1.0f;
    return from_vector<float>(m, {1, 3, 3});
  };
  const Tensor own = low({4}), salient = low({4, 8});  // the caption's box: centre; another: 8
  QueryFirstPick q = first_pick(fine({{4, 0.9f}, {8, 0.5f}}), own, salient, 0);
  EXPECT_EQ(q.place, FirstPickPlace::own_box);
  EXPECT_EQ(q.box_rank, 0);
  q = first_pick(fine({{4, 0.5f}, {8, 0.9f}}), own, salient, 0);
  EXPECT_EQ(q.place, FirstPickPlace::other_region);
  EXPECT_EQ(q.box_rank, 1);
  q = first_pick(fine({{4, 0.5f}, {8, 0.6f}, {0, 0.9f}, {1, 0.7f}}), own, salient, 0);
  EXPECT_EQ(q.place, FirstPickPlace::elsewhere);
  EXPECT_EQ(q.box_rank, 3);
  // Only the first fine cell of each low-res cell is read (the map is nearest-upsampled, so the
  // others repeat it): a peak at fine (2, 3) is not seen, every read cell ties, the lowest index
  // (cell 0, outside every box) comes first, and no cell scores above the box.
  std::vector<float> m(36, 0.1f);
  m[size_t(2 * 6 + 3)] = 0.99f;
  q = first_pick(from_vector<float>(m, {1, 6, 6}), own, salient, 0);
  EXPECT_EQ(q.place, FirstPickPlace::elsewhere);
  EXPECT_EQ(q.box_rank, 0);
  EXPECT_EQ(first_pick(fine({}), low({}), salient, 0).box_rank, -1);  // no box cell
  hd::testing::expect_error(
      [&] {
        first_pick(fine({}), from_vector<float>(std::vector<float>(4), {1, 2, 2}), salient, 0);
      },
      "first_pick: maps");
}

TEST_F(EvalFixture, DrawsTheFirstCaptionsSelections) {
  PS3CLIP model(config);
  model.initialize(4);
  options.max_images = 2;
  options.png_dir = dir + "/png";
  options.png_count = 2;
  const size_t first_image_captions = eval_set.records[0].boxes.size();
  ASSERT_GE(first_image_captions, 2u);
  evaluate_ps3(model, eval_set, *tok, options);
  namespace fs = std::filesystem;
  for (const char* name : {"td_0_0.png", "td_0_1.png", "bu_0.png"}) {
    ASSERT_TRUE(fs::exists(options.png_dir + "/" + name)) << name;
    data::Image img = data::decode_image(data::read_file(options.png_dir + "/" + name), name);
    EXPECT_GT(img.width, 0);
  }
  EXPECT_FALSE(fs::exists(options.png_dir + "/td_0_2.png"));  // only png_count captions
  EXPECT_FALSE(fs::exists(options.png_dir + "/bu_1.png"));
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
