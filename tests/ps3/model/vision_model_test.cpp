// The whole PS3 vision model on the micro config: shapes and ordering through all stages, the
// high-res stage against full attention over [low ; high] (depth 1), in-box pooling against
// pooling the subset, posterior vs prior ranking, determinism, unit-runner coverage and input
// errors. Gradients: vision_gradcheck_test.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>

#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/index.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "ps3/highres_tokens.h"
#include "ps3/vision_trunk.h"
#include "tests/ps3/model/model_test_util.h"
#include "tests/testing/errors.h"
#include "tests/testing/gradcheck.h"

namespace hd::ps3 {
namespace {

using hd::testing::expect_error;
using hd::testing::max_abs_diff;
using namespace hd::ps3::testing;

std::shared_ptr<PS3VisionModel> make_model(const VisionConfig& c, uint64_t seed = 3) {
  auto m = std::make_shared<PS3VisionModel>(c);
  m->initialize(seed);
  randomize(*m, 0.3, seed + 100);
  return m;
}

// A standalone trunk holding the model's trunk.* weights (to recompute pieces by hand).
std::shared_ptr<VisionTrunk> trunk_of(const PS3VisionModel& m) {
  auto t = std::make_shared<VisionTrunk>(m.config());
  for (auto& [name, p] : t->named_parameters()) {
    Tensor dst = p.detach();
    copy_(dst, m.parameter("trunk." + name));
  }
  return t;
}

TEST(PS3Vision, ShapesOrderingAndSelectionMaps) {
  VisionConfig c = micro_config();
  auto model = make_model(c);
  const int64_t B = 3;
  VisionInputs in = make_inputs(make_images(c, B, 11));
  in.look_close_steps = 2;
  VisionOutputs out = model->forward(in);
  const int64_t W = c.width, M = 2 * c.max_select;
  EXPECT_EQ(out.low_res_tokens.shape(), Shape({B, 4, W}));
  EXPECT_EQ(out.low_res_pooled.shape(), Shape({B, W}));
  EXPECT_EQ(out.high_res_tokens.shape(), Shape({B, M, W}));
  EXPECT_EQ(out.high_res_positions.shape(), Shape({B, M}));
  EXPECT_EQ(out.high_res_pooled.shape(), Shape({B, W}));
  ASSERT_EQ(out.prior_probs.size(), 2u);
  EXPECT_TRUE(out.posterior_probs.empty());
  std::vector<int64_t> pos = out.high_res_positions.to_vector<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    // Ascending, unique, and exactly the union selection maps (offset 16 for the 8 x 8 grid).
    std::vector<float> m0 = out.selection_maps[0].to_vector<float>();
    std::vector<float> m1 = out.selection_maps[1].to_vector<float>();
    std::set<int64_t> from_maps;
    for (int64_t i = 0; i < 16; ++i)
      if (m0[size_t(b * 16 + i)] == 1.f) from_maps.insert(i);
    for (int64_t i = 0; i < 64; ++i)
      if (m1[size_t(b * 64 + i)] == 1.f) from_maps.insert(16 + i);
    std::vector<int64_t> row(pos.begin() + b * M, pos.begin() + (b + 1) * M);
    EXPECT_TRUE(std::is_sorted(row.begin(), row.end()));
    EXPECT_EQ(std::set<int64_t>(row.begin(), row.end()), from_maps);
    EXPECT_EQ(int64_t(from_maps.size()), M);
    // 2 steps x {4, 16}: 8 positions at scale 0, 32 at scale 1.
    EXPECT_EQ(std::count_if(row.begin(), row.end(), [](int64_t p) { return p < 16; }), 8);
  }
  // Probabilities: one 2 x 2 map in (0, 1), nearest-upsampled (2x and 4x block replication).
  std::vector<float> p0 = out.prior_probs[0].to_vector<float>();
  std::vector<float> p1 = out.prior_probs[1].to_vector<float>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t y = 0; y < 8; ++y) {
      for (int64_t x = 0; x < 8; ++x) {
        float v1 = p1[size_t(b * 64 + y * 8 + x)];
        EXPECT_EQ(v1, p0[size_t(b * 16 + (y / 2) * 4 + x / 2)]);
        EXPECT_GT(v1, 0.f);
        EXPECT_LT(v1, 1.f);
      }
    }
  }
  // Each step takes the best 2 x 2 block at scale 0 (budget 4 = one block of the 2 x 2 map):
  // step 1 the highest-probability block, step 2 the second.
  std::vector<float> cells = {p0[0], p0[2], p0[8], p0[10]};  // instance 0 blocks
  std::vector<int> order = {0, 1, 2, 3};
  std::stable_sort(order.begin(), order.end(), [&](int a, int d) { return cells[a] > cells[d]; });
  std::set<int64_t> expect;
  for (int k = 0; k < 2; ++k) {
    int64_t by = order[size_t(k)] / 2, bx = order[size_t(k)] % 2;
    for (int64_t y = 0; y < 2; ++y)
      for (int64_t x = 0; x < 2; ++x) expect.insert((2 * by + y) * 4 + 2 * bx + x);
  }
  std::set<int64_t> got;
  for (int64_t i = 0; i < M; ++i)
    if (pos[size_t(i)] < 16) got.insert(pos[size_t(i)]);
  EXPECT_EQ(got, expect);
}

TEST(PS3Vision, HighResStageEqualsFullAttentionOverLowAndHigh) {
  // Depth 1: the high-res tokens must equal the high-res rows of the block run on the
  // concatenation [low-res tokens ; embedded high-res tokens] (queries of the high rows see
  // every key, which is exactly [low-res K/V ; own K/V]).
  VisionConfig c = micro_config();
  c.depth = 1;
  c.select_layers = {0};
  auto model = make_model(c);
  auto trunk = trunk_of(*model);
  const int64_t B = 2, W = c.width;
  MicroImages images = make_images(c, B, 12);
  VisionInputs in = make_inputs(images);
  VisionOutputs out = model->forward(in);
  const int64_t M = out.high_res_tokens.size(1);
  ASSERT_EQ(M, c.max_select);
  Tensor low = add(trunk->patch_embed->proj->forward(images.low_res), trunk->pos_embed);
  std::vector<int64_t> pos = out.high_res_positions.to_vector<int64_t>();
  std::vector<Tensor> rows;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<Tensor> per_scale;
    for (size_t s = 0; s < 2; ++s) {
      const int64_t off = s == 0 ? 0 : 16, g = c.grid(s);
      std::vector<int64_t> idx;
      for (int64_t i = 0; i < M; ++i) {
        int64_t p = pos[size_t(b * M + i)] - off;
        if (p >= 0 && p < g * g) idx.push_back(p);
      }
      Tensor e =
          embed_selected_patches(images.patches(b, c.scales[s], idx),
                                 trunk->patch_embed->proj->weight, trunk->patch_embed->proj->bias);
      e = add(e, highres_position_embedding(
                     trunk->pos_embed, model->parameter("pos_emb_residual." + std::to_string(s)), g,
                     from_vector<int64_t>(idx, {int64_t(idx.size())})));
      per_scale.push_back(e);
    }
    rows.push_back(cat(per_scale, 0));
  }
  Tensor high = stack(rows, 0);  // [B, M, W]
  Tensor full = (*trunk->blocks)[0].forward(cat({low, high}, 1));
  EXPECT_EQ(out.high_res_tokens.shape(), Shape({B, M, W}));
  EXPECT_LT(max_abs_diff(narrow(full, 1, 4, M), out.high_res_tokens), 2e-5);
  // And the low-res tokens are the block over the low-res tokens alone.
  EXPECT_LT(max_abs_diff((*trunk->blocks)[0].forward(low), out.low_res_tokens), 1e-6);
  EXPECT_LT(max_abs_diff(trunk->pool(out.low_res_tokens), out.low_res_pooled), 1e-6);
}

TEST(PS3Vision, InBoxPoolingEqualsPoolingTheInBoxTokens) {
  VisionConfig c = micro_config();
  auto model = make_model(c);
  auto trunk = trunk_of(*model);
  const int64_t B = 2;
  VisionInputs in = make_inputs(make_images(c, B, 13));
  in.gt_maps = box_gt_maps(c, B, 1, 3, 0, 2);  // grid-0 rows 1-2, cols 0-1
  in.gt_forcing = true;
  in.pool_gt_only = true;
  in.look_close_steps = 2;  // 40 tokens, 20 of them in the box
  VisionOutputs out = model->forward(in);
  const int64_t M = out.high_res_tokens.size(1);
  std::vector<int64_t> pos = out.high_res_positions.to_vector<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int64_t> inside;
    int64_t forced_seen = 0;
    for (int64_t i = 0; i < M; ++i) {
      int64_t p = pos[size_t(b * M + i)];
      bool in_box = p < 16 ? (p / 4 >= 1 && p / 4 < 3 && p % 4 < 2)
                           : ((p - 16) / 8 >= 2 && (p - 16) / 8 < 6 && (p - 16) % 8 < 4);
      if (in_box) inside.push_back(i), ++forced_seen;
    }
    // GT forcing: the whole box (4 cells at 4 x 4, 16 at 8 x 8) is selected (budget {4, 16}).
    EXPECT_EQ(forced_seen, 20);
    EXPECT_EQ(M, 40);
    Tensor subset = index_select(narrow(out.high_res_tokens, 0, b, 1), 1,
                                 from_vector<int64_t>(inside, {int64_t(inside.size())}));
    EXPECT_LT(max_abs_diff(trunk->pool(subset), narrow(out.high_res_pooled, 0, b, 1)), 1e-6);
  }
  // Without the mask the pooled vector differs (the mask is used).
  in.pool_gt_only = false;
  EXPECT_GT(max_abs_diff(model->forward(in).high_res_pooled, out.high_res_pooled), 1e-4);
}

TEST(PS3Vision, PromptGivesPosteriorAndDrivesSelection) {
  VisionConfig c = micro_config();
  auto model = make_model(c);
  const int64_t B = 2;
  VisionInputs in = make_inputs(make_images(c, B, 14));
  Generator gen(15, "prompt");
  in.prompt = uniform({B, c.width}, -1, 1, gen);
  VisionOutputs out = model->forward(in);
  ASSERT_EQ(out.posterior_probs.size(), 2u);
  EXPECT_GT(max_abs_diff(out.posterior_probs[0], out.prior_probs[0]), 1e-4);
  // The scale-0 picks (one 2 x 2 block) are the block with the highest posterior probability.
  std::vector<float> post = out.posterior_probs[0].to_vector<float>();
  std::vector<int64_t> pos = out.high_res_positions.to_vector<int64_t>();
  const int64_t M = out.high_res_tokens.size(1);
  for (int64_t b = 0; b < B; ++b) {
    int64_t best = 0;
    for (int64_t i = 1; i < 16; ++i)
      if (post[size_t(b * 16 + i)] > post[size_t(b * 16 + best)]) best = i;
    for (int64_t i = 0; i < M; ++i) {
      int64_t p = pos[size_t(b * M + i)];
      if (p < 16) {
        EXPECT_EQ(post[size_t(b * 16 + p)], post[size_t(b * 16 + best)]) << p;
      }
    }
  }
}

TEST(PS3Vision, OneImageWithManyPromptsEqualsTheImageRepeated) {
  VisionConfig c = micro_config();
  auto model = make_model(c, 23);
  const int64_t B = 3;
  MicroImages one = make_images(c, 1, 24);
  MicroImages repeated = one;  // the same image in every row
  auto rep = [&](const Tensor& t) {
    Shape shape = t.shape();
    shape[0] = B;
    return contiguous(expand(t, shape));
  };
  repeated.low_res = rep(one.low_res), repeated.selection = rep(one.selection);
  for (Tensor& t : repeated.by_scale) t = rep(t);
  Generator gen(25, "prompt");
  Tensor prompts = uniform({B, c.width}, -1, 1, gen);
  VisionInputs a = make_inputs(repeated), b = make_inputs(repeated);
  a.prompt = b.prompt = prompts;
  a.look_close_steps = b.look_close_steps = 2;
  b.low_res = one.low_res, b.selection = one.selection;  // one image, B prompts
  VisionOutputs x = model->forward(a), y = model->forward(b);
  EXPECT_EQ(x.high_res_positions.to_vector<int64_t>(), y.high_res_positions.to_vector<int64_t>());
  EXPECT_LT(max_abs_diff(x.high_res_pooled, y.high_res_pooled), 1e-6);
  EXPECT_LT(max_abs_diff(x.low_res_pooled, y.low_res_pooled), 1e-6);
  EXPECT_LT(max_abs_diff(x.posterior_probs[1], y.posterior_probs[1]), 1e-6);
  EXPECT_LT(max_abs_diff(x.prior_probs[0], y.prior_probs[0]), 1e-6);
  // Different prompts select differently on the one image (the rows are not one row repeated).
  EXPECT_GT(max_abs_diff(select(y.posterior_probs[0], 0, 0), select(y.posterior_probs[0], 0, 1)),
            1e-4);
  b.prompt = narrow(prompts, 0, 0, 2);  // still fine: 1 image, 2 prompts
  EXPECT_EQ(model->forward(b).high_res_pooled.size(0), 2);
  b.low_res = narrow(repeated.low_res, 0, 0, 2);  // 2 images for 3 prompts
  b.selection = narrow(repeated.selection, 0, 0, 2);
  b.prompt = prompts;
  hd::testing::expect_error([&] { model->forward(b); }, "2 images for 3 prompts");
}

TEST(PS3Vision, DeterministicAcrossModelsAndCalls) {
  VisionConfig c = micro_config();
  auto a = make_model(c, 21), b = make_model(c, 21);
  VisionInputs in = make_inputs(make_images(c, 2, 16));
  in.look_close_steps = 3;
  Generator gen(17, "prompt");
  in.prompt = uniform({2, c.width}, -1, 1, gen);
  VisionOutputs x = a->forward(in), y = b->forward(in), z = a->forward(in);
  for (const VisionOutputs* o : {&y, &z}) {
    EXPECT_EQ(x.high_res_tokens.to_vector<float>(), o->high_res_tokens.to_vector<float>());
    EXPECT_EQ(x.high_res_pooled.to_vector<float>(), o->high_res_pooled.to_vector<float>());
    EXPECT_EQ(x.low_res_pooled.to_vector<float>(), o->low_res_pooled.to_vector<float>());
    EXPECT_EQ(x.posterior_probs[1].to_vector<float>(), o->posterior_probs[1].to_vector<float>());
    EXPECT_EQ(x.high_res_positions.to_vector<int64_t>(),
              o->high_res_positions.to_vector<int64_t>());
  }
  // A different seed gives a different model.
  auto d = make_model(c, 22);
  EXPECT_GT(max_abs_diff(d->forward(in).low_res_pooled, x.low_res_pooled), 1e-3);
}

TEST(PS3Vision, FeatureLayerIsThatBlocksOutputInLowAndHighRes) {
  // Blocks never see later blocks, so a 3-block model's features at layer -2 (block 1) are the
  // tokens of the same model cut to 2 blocks (same parameter names, same init).
  VisionConfig c3 = micro_config(), c2 = micro_config();
  c3.depth = 3;
  auto deep = make_model(c3, 31), cut = make_model(c2, 31);
  VisionInputs in = make_inputs(make_images(c2, 2, 18));
  in.look_close_steps = 2;
  VisionOutputs last = deep->forward(in);
  EXPECT_EQ(last.low_res_features.to_vector<float>(), last.low_res_tokens.to_vector<float>());
  EXPECT_EQ(last.high_res_features.to_vector<float>(), last.high_res_tokens.to_vector<float>());
  for (int64_t layer : {int64_t(-2), int64_t(2)}) {
    in.feature_layer = layer;
    VisionOutputs got = deep->forward(in), want = cut->forward(in);
    EXPECT_EQ(got.high_res_positions.to_vector<int64_t>(), want.high_res_positions.to_vector<int64_t>());
    EXPECT_EQ(got.low_res_features.to_vector<float>(), want.low_res_tokens.to_vector<float>());
    EXPECT_EQ(got.high_res_features.to_vector<float>(), want.high_res_tokens.to_vector<float>());
    EXPECT_GT(max_abs_diff(got.high_res_features, got.high_res_tokens), 1e-4);
  }
  for (int64_t bad : {int64_t(0), int64_t(4), int64_t(-4)}) {
    in.feature_layer = bad;
    hd::testing::expect_error([&] { deep->forward(in); }, "feature_layer");
  }
}

TEST(PS3Vision, EveryBlockCallGoesThroughTheRunner) {
  VisionConfig c = micro_config();
  auto model = make_model(c);
  std::vector<const Module*> units = model->sharding_units();
  ASSERT_EQ(units.size(), 2u);
  std::map<std::string, const Module*> by_name;
  for (auto& [name, m] : model->named_modules()) by_name[name] = m;
  EXPECT_EQ(units[0], by_name.at("trunk.blocks.0"));
  EXPECT_EQ(units[1], by_name.at("trunk.blocks.1"));
  std::vector<const Module*> calls;
  model->set_unit_runner([&](const Module& unit, const Tensor& x, const nn::UnitBody& body) {
    calls.push_back(&unit);
    return body(x);
  });
  VisionInputs in = make_inputs(make_images(c, 1, 18));
  in.look_close_steps = 2;
  VisionOutputs with_runner = model->forward(in);
  // Low-res pass + 2 look-close steps, each over both blocks in order.
  std::vector<const Module*> expect = {units[0], units[1], units[0], units[1], units[0], units[1]};
  EXPECT_EQ(calls, expect);
  model->set_unit_runner(nullptr);
  EXPECT_EQ(model->forward(in).high_res_tokens.to_vector<float>(),
            with_runner.high_res_tokens.to_vector<float>());
}

TEST(PS3Vision, RunsOutOfPatchesAndStops) {
  VisionConfig c = micro_config();  // 80 high-res positions, 20 per step
  auto model = make_model(c);
  VisionInputs in = make_inputs(make_images(c, 1, 19));
  in.look_close_steps = 10;
  VisionOutputs out = model->forward(in);
  EXPECT_EQ(out.high_res_tokens.size(1), 80);
  std::vector<int64_t> pos = out.high_res_positions.to_vector<int64_t>();
  for (int64_t i = 0; i < 80; ++i) EXPECT_EQ(pos[size_t(i)], i);
  EXPECT_EQ(sum(out.selection_maps[0]).item<float>(), 16.f);
  EXPECT_EQ(sum(out.selection_maps[1]).item<float>(), 64.f);
}

TEST(PS3Vision, BadInputsAreNamed) {
  VisionConfig c = micro_config();
  auto model = make_model(c);
  VisionInputs in = make_inputs(make_images(c, 2, 20));
  VisionInputs bad = in;
  bad.low_res = zeros({2, 3, 30, 30});
  expect_error([&] { model->forward(bad); }, "low_res input must be [B, 3, 28, 28]");
  bad = in;
  bad.selection = zeros({2, 3, 28, 28});
  expect_error([&] { model->forward(bad); }, "selection input must be [2, 3, 56, 56]");
  bad = in;
  bad.gt_forcing = true;
  expect_error([&] { model->forward(bad); }, "need 2 gt_maps");
  bad = in;
  bad.prompt = zeros({2, 5});
  expect_error([&] { model->forward(bad); }, "prompt must be [2, 8]");
  bad = in;
  bad.patches = [](int64_t, int64_t, const std::vector<int64_t>&) { return zeros({1, 3, 14, 14}); };
  expect_error([&] { model->forward(bad); }, "patch source returned");
  VisionConfig wrong = c;
  wrong.select_layers = {0, 2};
  expect_error([&] { PS3VisionModel m(wrong); }, "vision.select_layers: 2");
}

}  // namespace
}  // namespace hd::ps3
