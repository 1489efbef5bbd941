// VILA-HD assembled (§3): token layout and the prompt position with one and two images, the
// top-down prompt against a hand-made prompt pass, look-close without repeats, finite
// differences in f64 through LLM + projector + prompt head + PS3, answers through the KV cache
// equal to full recompute, and errors that name what is wrong.
#include <gtest/gtest.h>

#include <map>

#include <set>

#include "autograd/node.h"
#include "ops/factory.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "tests/testing/errors.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/gradcheck.h"
#include "tests/vilahd/vila_test_util.h"

namespace hd::vilahd {
namespace {

using hd::testing::expect_error;
using namespace hd::vilahd::testing;

// <text 5 6 7> <image> <text 8 9 (prompt position at 9)> [<image>] <10 11 12 (answer)>
VilaSample sample(const VilaHdConfig& c, int images, uint64_t seed, bool boxes,
                  DType dtype = DType::f32) {
  VilaSample s;
  s.input_ids = {5, 6, 7, kImageToken, 8, 9};
  s.prompt_position = 5;
  if (images == 2) s.input_ids.insert(s.input_ids.begin() + 1, kImageToken), s.prompt_position = 6;
  s.input_ids.insert(s.input_ids.end(), {10, 11, 12});
  s.labels.assign(s.input_ids.size(), -100);
  for (size_t i = s.input_ids.size() - 3; i < s.input_ids.size(); ++i) s.labels[i] = s.input_ids[i];
  for (int i = 0; i < images; ++i)
    s.images.push_back(micro_image(c, seed + uint64_t(i), boxes, dtype));
  return s;
}

TEST(VilaHd, TokenLayoutPerImageIsLowResThenScalesThenNewline) {
  const VilaHdConfig c = micro_vila_config();
  auto model = micro_vila(c, 1);
  for (int images : {1, 2}) {
    VilaSample s = sample(c, images, 10, false);
    std::vector<int64_t> labels;
    std::vector<ImageLook> looks;
    Tensor e = model->embed_sample(s, -1, &labels, &looks);
    ASSERT_EQ(int64_t(looks.size()), images);
    int64_t expected_len = int64_t(s.input_ids.size()) - images;
    for (const ImageLook& l : looks) {
      EXPECT_EQ(l.projected.low_res_tokens, 4);  // 4x4 low-res grid -> 2x2
      expected_len += l.projected.tokens.size(0) + 1;
      int64_t kept = 0;
      for (int64_t k : l.projected.kept_counts) kept += k;
      EXPECT_EQ(l.projected.tokens.size(0), 4 + (l.projected.placeholder ? 1 : kept));
    }
    ASSERT_EQ(e.size(0), expected_len);
    ASSERT_EQ(int64_t(labels.size()), expected_len);
    // Walk the layout: text rows are the embedding rows; each image is its projected tokens and
    // then the newline embedding; labels are -100 over the image.
    const Tensor& table = model->llm().model->embed_tokens->weight;
    int64_t row = 0;
    size_t img = 0;
    for (size_t i = 0; i < s.input_ids.size(); ++i) {
      if (s.input_ids[i] != kImageToken) {
        EXPECT_EQ(select(e, 0, row).to_vector<float>(),
                  select(table, 0, s.input_ids[i]).to_vector<float>());
        EXPECT_EQ(labels[size_t(row)], s.labels[i]);
        ++row;
        continue;
      }
      const Tensor& t = looks[img++].projected.tokens;
      EXPECT_EQ(narrow(e, 0, row, t.size(0)).to_vector<float>(), t.to_vector<float>());
      for (int64_t k = 0; k <= t.size(0); ++k) EXPECT_EQ(labels[size_t(row + k)], -100);
      row += t.size(0);
      EXPECT_EQ(select(e, 0, row).to_vector<float>(),
                select(table, 0, kNewline).to_vector<float>());
      ++row;
    }
    EXPECT_EQ(row, expected_len);
  }
}

TEST(VilaHd, TopDownPromptIsThePromptHeadOfTheLowResPassAtTheLastUserToken) {
  const VilaHdConfig c = micro_vila_config();
  auto model = micro_vila(c, 2);
  for (int images : {1, 2}) {
    VilaSample s = sample(c, images, 20, false);
    Tensor prompt = model->top_down_prompt(s);
    // By hand: [text before][low-res tokens][newline] per image, cut after the prompt position.
    NoGradGuard no_grad;
    const Tensor& table = model->llm().model->embed_tokens->weight;
    std::vector<Tensor> rows;
    size_t img = 0;
    for (int64_t i = 0; i <= s.prompt_position; ++i) {
      const int64_t id = s.input_ids[size_t(i)];
      if (id != kImageToken) {
        rows.push_back(narrow(table, 0, id, 1));
        continue;
      }
      ps3::VisionInputs in = s.images[img++].inputs;
      in.look_close_steps = 0;
      in.feature_layer = -2;
      ps3::VisionOutputs out = model->vision().forward(in);
      rows.push_back(
          model->projector().project_image(select(out.low_res_features, 0, 0), {}, {}).tokens);
      rows.push_back(narrow(table, 0, kNewline, 1));
    }
    Qwen2Inputs in;
    in.inputs_embeds = unsqueeze(cat(rows, 0), 0);
    EXPECT_EQ(in.inputs_embeds.size(1), s.prompt_position + 1 + images * 4);
    Tensor h = model->llm().hidden_states(in);
    Tensor want = model->projector().prompt(reshape(narrow(h, 1, h.size(1) - 1, 1), {1, 16}));
    hd::testing::expect_close(prompt, want, 1e-6, 1e-5, "top-down prompt");
    // The prompt does not depend on anything after the prompt position.
    VilaSample later = s;
    later.input_ids.back() = 30;
    hd::testing::expect_close(model->top_down_prompt(later), prompt, 0, 0, "causal prompt");
  }
}

TEST(VilaHd, LookCloseStepsNeverPickAPatchTwiceAndSpendTheBudget) {
  VilaHdConfig c = micro_vila_config();
  for (int64_t steps : {1, 2, 3}) {
    c.num_look_close = steps;
    auto model = micro_vila(c, 3);
    VilaSample s = sample(c, 1, 30, false);
    std::vector<ImageLook> looks;
    model->embed_sample(s, -1, nullptr, &looks);
    ASSERT_EQ(looks.size(), 1u);
    // Union of selections = steps x budget per scale (no repeats: the maps are 0/1 unions).
    for (size_t sc = 0; sc < 2; ++sc) {
      const double picked = sum(looks[0].selection_maps[sc]).item<float>();
      EXPECT_EQ(picked, double(steps * c.select_num_each_scale[sc]))
          << "scale " << sc << " steps " << steps;
    }
  }
}

TEST(VilaHd, AfterImageUsesThePriorAndNeedsNoPromptPosition) {
  VilaHdConfig c = micro_vila_config();
  c.look_close_mode = LookCloseMode::after_image;
  auto model = micro_vila(c, 4);
  for (const auto& [name, p] : model->named_parameters())
    EXPECT_EQ(name.find("top_down_prompt_head"), std::string::npos) << name;
  VilaSample s = sample(c, 1, 40, true);
  s.prompt_position = -1;
  VilaOutputs out = model->forward({s});
  ASSERT_TRUE(out.loss.defined());
  EXPECT_FALSE(out.looks[0][0].prompt.defined());
  ps3::VisionInputs in = s.images[0].inputs;
  ps3::VisionOutputs v = model->vision().forward(in);
  EXPECT_EQ(out.looks[0][0].ranking[1].to_vector<float>(), v.prior_probs[1].to_vector<float>());
}

// Every parameter the losses reach, each at a few elements spread over it (first and last
// included): each element costs two forward passes of the whole model, and checking every element
// took over an hour under the sanitizer.
constexpr hd::testing::GradcheckOptions kSampledGradcheck{
    .eps = 1e-6, .atol = 1e-7, .rtol = 1e-5, .max_elements_per_input = 3};

TEST(VilaHd, WholeModelGradientsF64AgainstFiniteDifferences) {
  // LM loss + selection loss through LLM, projector (with position embeddings), prompt head and
  // PS3. The prompt pass runs without gradient on purpose (§3.2: the LLM, and the low-res path
  // into it, do not learn from the selection), which finite differences would see wherever the
  // selection loss depends on the prompt. So: top-down with the LM loss alone checks every part
  // (the prompt then only moves the discrete top-k, locally constant); top-down with both losses
  // checks the prompt head (it is not in the prompt pass); bottom-up with both losses checks
  // every part again, the prior's selection modules included.
  struct Case {
    LookCloseMode mode;
    double weight;
    bool head_only;
  };
  for (const Case& k :
       {Case{LookCloseMode::after_prompt, 0.0, false}, Case{LookCloseMode::after_prompt, 1.0, true},
        Case{LookCloseMode::after_image, 1.0, false}}) {
    VilaHdConfig c = micro_vila_config();
    c.look_close_mode = k.mode;
    c.token_selection_loss_weight = k.weight;
    auto model = micro_vila(c, 5, DType::f64);
    std::vector<VilaSample> batch = {sample(c, 1, 50, true, DType::f64),
                                     sample(c, 2, 60, true, DType::f64)};
    batch[1].labels[2] = 7;  // a different label pattern in the second row
    // Parameters the loss does not reach get no gradient (the unused last PS3 block and pooling
    // head, and with the LM loss alone the selection modules): left out, after checking they
    // really are unreachable by the losses checked.
    model->forward(batch).loss.backward();
    std::vector<Tensor> inputs;
    std::set<std::string> parts;
    for (const auto& [name, p] : model->named_parameters()) {
      const bool head = name.find("top_down_prompt_head") != std::string::npos;
      if (k.head_only != head) continue;
      if (!p.grad().defined()) {
        const bool unused =
            name.find("blocks.2.") != std::string::npos ||
            name.find("attn_pool") != std::string::npos ||
            name.find("trunk.norm") != std::string::npos ||
            (k.weight == 0 && !name.starts_with("llm.") && !name.starts_with("mm_projector.") &&
             name.find("trunk.") == std::string::npos) ||
            (k.mode == LookCloseMode::after_image && name.find("prompt_proj") != std::string::npos);
        EXPECT_TRUE(unused) << name << " got no gradient";
        continue;
      }
      inputs.push_back(p);
      parts.insert(name.substr(0, name.find('.')));
    }
    EXPECT_EQ(parts.size(), k.head_only ? 1u : 3u);  // llm, mm_projector, vision_tower
    hd::testing::check_gradients(
        [&](const std::vector<Tensor>&) { return model->forward(batch).loss; }, inputs,
        kSampledGradcheck);
  }
}

TEST(VilaHd, RecomputedLayersGiveThePlainGradients) {
  // train.activation_checkpointing = llm,vision: every LLM decoder layer and PS3 block is
  // recomputed in backward (the PS3 blocks run for the low-res pass and the look-close step,
  // the high-res ones reading the low-res cache as a side input). Same loss, same gradients.
  for (LookCloseMode mode : {LookCloseMode::after_prompt, LookCloseMode::after_image}) {
    VilaHdConfig c = micro_vila_config();
    c.look_close_mode = mode;
    c.token_selection_loss_weight = 1.0;
    auto grads = [&](bool recompute, double* loss) {
      auto model = micro_vila(c, 9, DType::f64);
      model->set_activation_checkpointing(recompute, recompute);
      std::vector<VilaSample> batch = {sample(c, 1, 50, true, DType::f64),
                                       sample(c, 2, 60, true, DType::f64)};
      Tensor l = model->forward(batch).loss;
      // The recomputed graph really is in use: one checkpoint node per layer and block run.
      std::set<const Node*> seen;
      std::vector<const Node*> stack = {l.grad_fn().get()};
      int checkpoint_nodes = 0;
      while (!stack.empty()) {
        const Node* n = stack.back();
        stack.pop_back();
        if (!n || !seen.insert(n).second) continue;
        checkpoint_nodes += n->name() == "CheckpointBackward";
        for (const Edge& e : n->next_edges) stack.push_back(e.node.get());
      }
      EXPECT_EQ(checkpoint_nodes > 0, recompute) << checkpoint_nodes;
      l.backward();
      *loss = l.item<double>();
      std::map<std::string, std::vector<double>> out;
      for (const auto& [name, p] : model->named_parameters()) {
        if (p.grad().defined()) out[name] = p.grad().to_vector<double>();
      }
      return out;
    };
    double plain_loss = 0, recomputed_loss = 0;
    const auto plain = grads(false, &plain_loss);
    const auto recomputed = grads(true, &recomputed_loss);
    EXPECT_EQ(plain_loss, recomputed_loss);
    ASSERT_EQ(plain.size(), recomputed.size());
    int llm = 0, vision = 0;
    for (const auto& [name, g] : plain) {
      ASSERT_TRUE(recomputed.count(name)) << name;
      const std::vector<double>& r = recomputed.at(name);
      ASSERT_EQ(g.size(), r.size()) << name;
      double worst = 0, scale = 0;
      for (size_t i = 0; i < g.size(); ++i) {
        worst = std::max(worst, std::abs(g[i] - r[i]));
        scale = std::max(scale, std::abs(g[i]));
      }
      EXPECT_LE(worst, 1e-12 * std::max(1.0, scale)) << name;
      llm += name.find("llm.model.layers.") != std::string::npos;
      vision += name.find("trunk.blocks.") != std::string::npos;
    }
    EXPECT_GT(llm, 0);
    EXPECT_GT(vision, 0);
  }
}

TEST(VilaHd, AnswerThroughTheCacheEqualsGreedyFullRecompute) {
  const VilaHdConfig c = micro_vila_config();
  auto model = micro_vila(c, 6);
  VilaSample s = sample(c, 1, 70, false);
  s.labels.clear();
  GenerationOptions o;
  o.max_new_tokens = 6;
  VilaHdModel::Answer a = model->answer(s, o);
  ASSERT_EQ(a.tokens.size(), 6u);
  NoGradGuard no_grad;
  Tensor e = model->embed_sample(s, -1, nullptr, nullptr);
  const Tensor& table = model->llm().model->embed_tokens->weight;
  for (size_t i = 0; i < a.tokens.size(); ++i) {
    Qwen2Inputs in;
    in.inputs_embeds = unsqueeze(e, 0);
    Tensor logits = model->llm().forward(in);
    const int64_t next =
        argmax(reshape(narrow(logits, 1, e.size(0) - 1, 1), {-1}), 0).item<int64_t>();
    EXPECT_EQ(next, a.tokens[i]) << "step " << i;
    e = cat({e, narrow(table, 0, next, 1)}, 0);
  }
}

TEST(VilaHd, BadSamplesAreNamed) {
  const VilaHdConfig c = micro_vila_config();
  auto model = micro_vila(c, 7);
  VilaSample s = sample(c, 1, 80, false);
  s.images.clear();
  expect_error([&] { model->forward({s}); }, "1 <image> tokens but 0 images");
  s = sample(c, 1, 80, false);
  s.prompt_position = -1;
  expect_error([&] { model->forward({s}); }, "prompt_position -1");
  s = sample(c, 1, 80, false);
  s.input_ids[0] = 99;
  expect_error([&] { model->forward({s}); }, "token id 99");
  VilaHdConfig bad = c;
  bad.mm_vision_select_layer = 7;
  expect_error([&] { VilaHdModel m(bad); }, "mm_vision_select_layer 7");
  bad = c;
  bad.image_newline_token = -1;
  expect_error([&] { VilaHdModel m(bad); }, "image_newline_token");
}

}  // namespace
}  // namespace hd::vilahd
