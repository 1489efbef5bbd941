// One PS3 pre-training forward on the micro model (one process): the loss is finite and is the
// sum of its terms, gradients reach every trained part (text tower, low-res blocks, selection
// modules, prompt heads, logit scale/bias), a few AdamW steps on a fixed batch lower it, the
// same seed gives the same bits, the logit-scale clamp, and bad batches.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/optimizer.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ps3/pretrain.h"
#include "tests/ps3/model/micro.h"
#include "tests/testing/errors.h"

namespace hd::ps3 {
namespace {

using testing::micro_batch;
using testing::micro_config;

double grad_norm(const PS3CLIP& m, const std::string& name) {
  Tensor g = m.parameter(name).grad();
  if (!g.defined()) return 0.0;
  return std::sqrt(sum(mul(g, g)).item<double>());
}

TEST(PretrainForward, FiniteLossWithGradientsEverywhere) {
  PS3CLIP model(micro_config());
  model.initialize(3);
  data::Batch batch = micro_batch(0, 4);  // rows 0, 1, 3 local; row 2 global
  PretrainResult r = pretrain_forward(model, batch, {}, nullptr);
  ASSERT_TRUE(std::isfinite(r.loss.item<double>()));
  EXPECT_NEAR(r.loss.item<double>(), r.contrastive + r.bce_prior + r.bce_posterior, 1e-5);
  EXPECT_GT(r.contrastive, 0.0);
  EXPECT_GT(r.bce_prior, 0.0);
  EXPECT_GT(r.bce_posterior, 0.0);
  EXPECT_EQ(r.local_rows, 3);
  EXPECT_EQ(r.global_rows, 1);
  // max_select 10 per look-close step and row, one step.
  EXPECT_EQ(r.selected_patches, 4 * 10);
  // GT forcing puts in-box patches first: with boxes larger than the budget, all selected
  // patches of local rows are inside.
  EXPECT_GT(r.gt_patch_share, 0.5);
  EXPECT_LE(r.gt_patch_share, 1.0);
  r.loss.backward();
  for (const char* name :
       {"logit_scale", "logit_bias", "text_model.token_embedding.weight",
        "text_model.transformer.resblocks.0.attn.in_proj_weight",
        "text_model.prompt_proj.fc2.weight", "vision_model.trunk.blocks.0.attn.qkv.weight",
        "vision_model.trunk.blocks.1.mlp.fc2.weight", "vision_model.trunk.attn_pool.latent",
        "vision_model.prior_prompt", "vision_model.selection_feature_proj.fc1.weight",
        "vision_model.highres_selection_feature_module.stem.0.weight",
        "vision_model.prompt_proj_for_highres.weight", "vision_model.pos_emb_residual.1",
        "vision_model.trunk.patch_embed.proj.weight"}) {
    double n = grad_norm(model, name);
    EXPECT_TRUE(std::isfinite(n)) << name;
    EXPECT_GT(n, 0.0) << name << " received no gradient";
  }
}

// posterior_target = all_regions: each region's caption is a prompt against its own box. With a
// batch whose only region per local row is the row's own caption and box, the posterior BCE is
// the reference's; a second region on a row changes it, and its gradient reaches the text tower.
TEST(PretrainForward, PosteriorOverAllRegions) {
  PS3CLIP model(micro_config());
  model.initialize(5);
  data::Batch batch = micro_batch(0, 4);  // rows 0, 1, 3 local; row 2 global
  auto row_tokens = [&](int64_t b) { return testing::row_tokens(batch, b); };
  batch.salient_boxes.assign(4, {});
  batch.salient_tokens.assign(4, {});
  for (int64_t b : {0, 1, 3}) {
    batch.salient_boxes[size_t(b)] = batch.boxes[size_t(b)];
    batch.salient_tokens[size_t(b)] = {row_tokens(b)};
  }
  PretrainOptions reference, regions;
  regions.posterior_all_regions = true;
  const PretrainResult a = pretrain_forward(model, batch, reference, nullptr);
  const PretrainResult b = pretrain_forward(model, batch, regions, nullptr);
  EXPECT_NEAR(b.bce_posterior, a.bce_posterior, 1e-5 * a.bce_posterior);
  EXPECT_NEAR(b.bce_prior, a.bce_prior, 1e-5 * a.bce_prior);
  EXPECT_NEAR(b.contrastive, a.contrastive, 1e-5 * a.contrastive);

  // Row 0's image also holds row 3's region: now 4 regions, one more term in the mean.
  batch.salient_boxes[0].push_back(batch.boxes[3][0]);
  batch.salient_tokens[0].push_back(row_tokens(3));
  std::vector<int64_t> rows;
  EXPECT_EQ(batch.region_tokens(rows).size(0), 4);
  EXPECT_EQ(rows, (std::vector<int64_t>{0, 0, 1, 3}));
  PretrainResult c = pretrain_forward(model, batch, regions, nullptr);
  EXPECT_GT(std::abs(c.bce_posterior - a.bce_posterior), 1e-6);
  c.loss.backward();
  for (const char* name : {"text_model.prompt_proj.fc2.weight", "text_model.token_embedding.weight",
                           "vision_model.prompt_proj_for_highres.weight"})
    EXPECT_GT(grad_norm(model, name), 0.0) << name;
  // Without a tokenizer's region tokens the option is an error naming what is missing.
  batch.salient_tokens.clear();
  EXPECT_THROW(pretrain_forward(model, batch, regions, nullptr), std::exception);
}

TEST(PretrainForward, SameSeedSameBits) {
  auto run = [] {
    PS3CLIP model(micro_config());
    model.initialize(11);
    PretrainResult r = pretrain_forward(model, micro_batch(3, 3), {}, nullptr);
    r.loss.backward();
    std::vector<float> out{r.loss.item<float>()};
    for (auto& [n, p] : model.named_parameters())
      if (p.grad().defined())
        for (float v : p.grad().to_vector<float>()) out.push_back(v);
    return out;
  };
  EXPECT_EQ(run(), run());
}

TEST(PretrainForward, AdamWStepsOnAFixedBatchLowerTheLoss) {
  PS3CLIP model(micro_config());
  model.initialize(5);
  data::Batch batch = micro_batch(0, 6);
  AdamW opt(param_groups(model, 1e-4), AdamWOptions{3e-3, 0.9, 0.95, 1e-8});
  std::vector<double> losses;
  for (int step = 0; step < 8; ++step) {
    PretrainResult r = pretrain_forward(model, batch, {}, nullptr);
    losses.push_back(r.loss.item<double>());
    r.loss.backward();
    opt.step();
    opt.zero_grad();
    PS3CLIP::clamp_logit_scale(model.logit_scale);
  }
  EXPECT_LT(losses.back(), 0.9 * losses.front())
      << "first " << losses.front() << ", last " << losses.back();
}

TEST(PretrainForward, ClampLogitScale) {
  Tensor t = Tensor::empty({3});
  t.data<float>()[0] = -0.5f;
  t.data<float>()[1] = 2.0f;
  t.data<float>()[2] = 9.0f;
  PS3CLIP::clamp_logit_scale(t);
  EXPECT_EQ(t.data<float>()[0], 0.0f);
  EXPECT_EQ(t.data<float>()[1], 2.0f);
  EXPECT_FLOAT_EQ(t.data<float>()[2], float(std::log(100.0)));
}

TEST(PretrainForward, InitialScalars) {
  PS3CLIP model(micro_config());
  model.initialize(1);
  EXPECT_FLOAT_EQ(model.logit_scale.item<float>(), float(std::log(10.0)));
  EXPECT_FLOAT_EQ(model.logit_bias.item<float>(), -10.0f);
  EXPECT_EQ(model.logit_scale.dim(), 0);
  // Units: the text blocks then the vision blocks.
  EXPECT_EQ(model.sharding_units().size(), 1u + 2u);
}

TEST(PretrainForward, RejectsIncompleteBatches) {
  PS3CLIP model(micro_config());
  model.initialize(1);
  data::Batch b = micro_batch(0, 2);
  b.tokens = Tensor();
  hd::testing::expect_error([&] { pretrain_forward(model, b, {}, nullptr); }, "batch.tokens");
  data::Batch c = micro_batch(0, 2);
  c.selection = Tensor();
  hd::testing::expect_error([&] { pretrain_forward(model, c, {}, nullptr); }, "selection");
  data::Batch e;
  hd::testing::expect_error([&] { pretrain_forward(model, e, {}, nullptr); }, "empty batch");
}

}  // namespace
}  // namespace hd::ps3
