// SFT samples and the multiple-choice evaluation on the micro VILA-HD: a record's box becomes
// the GT maps of exactly the cells it covers after the squash resize; frozen parts get no
// gradient and keep their bits; the evaluation's cached option scoring picks the option a full
// forward over [prompt ; option] scores best; its recall counts the selected GT cells.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "autograd/node.h"
#include "autograd/optimizer.h"
#include "ops/factory.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "ps3/data/image.h"
#include "tests/testing/errors.h"
#include "tests/testing/fixtures.h"
#include "tests/vilahd/vila_test_util.h"
#include "vilahd/conversation.h"
#include "vilahd/mc_eval.h"
#include "vilahd/sft_data.h"
#include "vilahd/trainable_parts.h"

namespace hd::vilahd {
namespace {

namespace fs = std::filesystem;
using namespace hd::vilahd::testing;

const BpeTokenizer& tok() {
  static BpeTokenizer t =
      BpeTokenizer::load(std::string(HD_FIXTURE_DIR) + "/bpe_tokenizer/tokenizer.json");
  return t;
}

// A micro config over the fixture tokenizer's vocabulary.
VilaHdConfig config() {
  VilaHdConfig c = micro_vila_config();
  c.llm.vocab_size = tok().max_id_plus_one();
  c.image_newline_token = tok().encode("\n").at(0);
  return c;
}

fs::path write_image(const std::string& name, int64_t h, int64_t w, uint64_t seed) {
  data::Image img(h, w);
  for (size_t i = 0; i < img.pixels.size(); ++i)
    img.pixels[i] = uint8_t((i * 2654435761u + seed * 97) >> 23);
  fs::path p = fs::temp_directory_path() / name;
  std::vector<uint8_t> bytes = data::encode_png(img, 1);
  std::ofstream(p, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  return p;
}

TEST(SftData, BoxBecomesTheGtCellsAfterTheSquashResize) {
  const VilaHdConfig c = config();  // largest scale 224: grids 8 and 16 (patch 14)
  const fs::path file = write_image("hd_sft_box.png", 100, 400, 1);
  ImageCache cache(c.vision, 2);
  auto image = cache.get(file);
  EXPECT_EQ(cache.get(file).get(), image.get());  // cached
  // x 105..195 of 400 -> 58.8..107.2 of 224 -> grid-8 columns 2..3 (cells of 28 px); y 26..49 of
  // 100 -> 58.2..109.8 -> rows 2..3. (Edges inside cells: the rasteriser's boundary rule is not
  // what this test is about.)
  std::vector<Tensor> maps = box_gt_maps(*image, data::Box{105, 26, 195, 49}, c.vision);
  ASSERT_EQ(maps.size(), 2u);
  EXPECT_EQ(maps[0].shape(), (Shape{1, 8, 8}));
  std::vector<float> m = maps[0].to_vector<float>();
  for (int64_t y = 0; y < 8; ++y)
    for (int64_t x = 0; x < 8; ++x)
      EXPECT_EQ(m[size_t(y * 8 + x)], (y >= 2 && y < 4 && x >= 2 && x < 4) ? 1.f : 0.f)
          << y << "," << x;
  EXPECT_EQ(sum(maps[1]).item<float>(), 16.f);  // 4 x 4 cells of the 16 x 16 grid
  hd::testing::expect_error([&] { cache.get("/nonexistent/x.png"); }, "/nonexistent/x.png");
  fs::remove(file);
}

TEST(SftData, RecordBecomesAConversationWithAnswerLabelsAndItsBox) {
  const VilaHdConfig c = config();
  const fs::path file = write_image("hd_sft_rec.png", 64, 64, 2);
  ImageCache cache(c.vision, 2);
  data::SftRecord r;
  r.image = file.string();
  r.box = data::Box{0, 0, 30, 30};  // 0..105 of 224: the 4 x 4 top-left cells of 8 x 8
  r.conversations = {{"human", "<image>\nWhat word?"}, {"gpt", "OPEN"}};
  VilaSample s = sft_sample(tok(), r, cache.get(file), c.vision, true);
  EXPECT_EQ(std::count(s.input_ids.begin(), s.input_ids.end(), kImageToken), 1);
  std::vector<int32_t> labelled;
  for (int64_t l : s.labels)
    if (l != -100) labelled.push_back(int32_t(l));
  EXPECT_EQ(tok().decode(labelled), "OPEN<|im_end|>");
  ASSERT_EQ(s.images.size(), 1u);
  ASSERT_EQ(s.images[0].gt_maps.size(), 2u);
  EXPECT_EQ(sum(s.images[0].gt_maps[0]).item<float>(), 16.f);  // the top-left quarter of 8 x 8
  EXPECT_TRUE(sft_sample(tok(), r, cache.get(file), c.vision, false).images[0].gt_maps.empty());
  fs::remove(file);
}

// train_w_gt_selection_map: with forcing on, the first look-close step selects exactly the box's
// GT cells when they fill the budget (4 cells at grid 8, 16 at grid 16); off, the same model
// selects elsewhere; records without a box are not forced.
TEST(TeacherForcing, BoxCellsAreSelectedFirst) {
  const VilaHdConfig c = config();
  auto model = micro_vila(c, 6);
  model->set_num_look_close(1);
  const fs::path file = write_image("hd_sft_forcing.png", 64, 64, 5);
  ImageCache cache(c.vision, 2);
  data::SftRecord r{
      file.string(), data::Box{0, 0, 15, 15}, {{"human", "<image>\nWhat?"}, {"gpt", "red"}}};
  const VilaSample boxed = sft_sample(tok(), r, cache.get(file), c.vision, true);
  const std::vector<Tensor>& gt = boxed.images[0].gt_maps;
  ASSERT_EQ(sum(gt[0]).item<float>(), 4.f);   // 0..52.5 of 224: cells 0..1 of 8, both axes
  ASSERT_EQ(sum(gt[1]).item<float>(), 16.f);  // cells 0..3 of 16
  auto selection = [&](const VilaSample& s) {
    std::vector<ImageLook> looks;
    NoGradGuard no_grad;
    model->embed_sample(s, -1, nullptr, &looks);
    return looks.at(0).selection_maps;
  };
  auto equal = [](const Tensor& a, const Tensor& b) {
    return reshape(a, {-1}).to_vector<float>() == reshape(b, {-1}).to_vector<float>();
  };
  const std::vector<Tensor> free_pick = selection(boxed);
  EXPECT_FALSE(equal(free_pick[0], gt[0]) && equal(free_pick[1], gt[1]))
      << "the unforced model already picks the box: the test would not see forcing";
  model->set_train_with_gt_selection(true);
  const std::vector<Tensor> forced = selection(boxed);
  EXPECT_TRUE(equal(forced[0], gt[0]));
  EXPECT_TRUE(equal(forced[1], gt[1]));
  const VilaSample unboxed = sft_sample(tok(), r, cache.get(file), c.vision, false);
  const std::vector<Tensor> no_box = selection(unboxed);
  EXPECT_TRUE(equal(no_box[0], free_pick[0]) && equal(no_box[1], free_pick[1]));
  fs::remove(file);
}

// The vision memo: PS3 runs once per (image, box); a step that hits the memo gives the loss and
// the projector/LLM gradients of a step that runs PS3 bottom-up, even with the sample's PS3
// inputs dropped; a trainable vision tower is refused.
TEST(VisionMemo, HitsEqualAFreshBottomUpPass) {
  const VilaHdConfig c = config();
  auto fresh = micro_vila(c, 7), memoized = micro_vila(c, 7);
  fresh->set_look_close_mode(LookCloseMode::after_image);  // what the memo does: no prompt
  for (VilaHdModel* m : {fresh.get(), memoized.get()}) {
    freeze_all_but(*m, parse_trainable_parts("llm,projector"));
    m->set_train_with_gt_selection(true);
  }
  auto memo = std::make_shared<VisionMemo>();
  memoized->set_vision_memo(memo);
  const fs::path file = write_image("hd_sft_memo.png", 64, 64, 8);
  ImageCache cache(c.vision, 2);
  data::SftRecord r{
      file.string(), data::Box{0, 0, 20, 20}, {{"human", "<image>\nWhat?"}, {"gpt", "blue"}}};
  VilaSample s = sft_sample(tok(), r, cache.get(file), c.vision, true);
  s.images[0].memo_key = "hd_sft_memo.png|box";
  memoized->fill_vision_memo({s});
  ASSERT_EQ(memo->outputs.size(), 1u);
  VilaSample stripped = s;
  stripped.images[0].inputs = ps3::VisionInputs{};  // a hit needs no PS3 input
  VilaOutputs a = fresh->forward({s}), b = memoized->forward({stripped});
  EXPECT_EQ(memo->outputs.size(), 1u);
  EXPECT_EQ(a.lm_loss.item<float>(), b.lm_loss.item<float>());
  a.loss.backward();
  b.loss.backward();
  auto pa = fresh->named_parameters(), pb = memoized->named_parameters();
  int compared = 0;
  for (size_t i = 0; i < pa.size(); ++i) {
    ASSERT_EQ(pa[i].first, pb[i].first);
    if (!pa[i].second.requires_grad()) continue;
    ASSERT_TRUE(pb[i].second.grad().defined()) << pb[i].first;
    EXPECT_EQ(pa[i].second.grad().to_vector<float>(), pb[i].second.grad().to_vector<float>())
        << pa[i].first;
    ++compared;
  }
  EXPECT_GT(compared, 10);
  // Another box is another key: a miss, which needs the inputs.
  stripped.images[0].memo_key = "hd_sft_memo.png|other";
  hd::testing::expect_error([&] { memoized->forward({stripped}); }, "no low-res input");
  auto trainable_vision = micro_vila(c, 7);
  hd::testing::expect_error(
      [&] { trainable_vision->set_vision_memo(std::make_shared<VisionMemo>()); },
      "needs the whole vision tower frozen");
  fs::remove(file);
}

// prompt_pass_grad: with a box and no answer (selection loss only), the LLM gets a gradient only
// when the prompt pass keeps its graph; the loss itself is the same either way.
TEST(PromptPassGrad, SelectionLossReachesTheLlmOnlyWhenOn) {
  const VilaHdConfig c = config();
  const fs::path file = write_image("hd_sft_prompt_grad.png", 64, 64, 9);
  ImageCache cache(c.vision, 2);
  data::SftRecord r{
      file.string(), data::Box{0, 0, 30, 30}, {{"human", "<image>\nWhere?"}, {"gpt", "here"}}};
  VilaSample s = sft_sample(tok(), r, cache.get(file), c.vision, true);
  s.labels.clear();  // no LM loss: only the selection loss
  float losses[2];
  for (int on = 0; on < 2; ++on) {
    auto model = micro_vila(c, 10);
    freeze_all_but(*model, parse_trainable_parts("llm,top_down_selection"));
    model->set_prompt_pass_grad(on == 1);
    VilaOutputs o = model->forward({s});
    ASSERT_FALSE(o.lm_loss.defined());
    losses[on] = o.loss.item<float>();
    o.loss.backward();
    double llm_grad = 0;
    for (auto& [n, p] : model->named_parameters())
      if (trainable_part_of(n) == "llm" && p.grad().defined())
        for (float g : p.grad().to_vector<float>()) llm_grad += std::abs(double(g));
    if (on)
      EXPECT_GT(llm_grad, 0) << "the selection loss should reach the LLM";
    else
      EXPECT_EQ(llm_grad, 0) << "the reference's prompt pass has no gradient";
  }
  EXPECT_EQ(losses[0], losses[1]);
  fs::remove(file);
}

TEST(TrainableParts, FrozenPartsGetNoGradientAndKeepTheirBits) {
  const VilaHdConfig c = config();
  auto model = micro_vila(c, 4);
  EXPECT_EQ(trainable_part_of("llm.model.norm.weight"), "llm");
  EXPECT_EQ(trainable_part_of("mm_projector.layers.2.weight"), "projector");
  EXPECT_EQ(trainable_part_of("mm_projector.top_down_prompt_head.fc1.weight"),
            "top_down_selection");
  EXPECT_EQ(trainable_part_of("vision_tower.prompt_proj_for_highres.weight"), "top_down_selection");
  EXPECT_EQ(trainable_part_of("vision_tower.prior_prompt"), "vision_tower");
  hd::testing::expect_error([] { parse_trainable_parts("llm,eyes"); }, "'eyes'");
  freeze_all_but(*model, parse_trainable_parts("projector,top_down_selection"));
  std::map<std::string, std::vector<float>> before;
  for (auto& [n, p] : model->named_parameters()) before[n] = p.to_vector<float>();
  const fs::path file = write_image("hd_sft_frozen.png", 64, 64, 3);
  ImageCache cache(c.vision, 2);
  data::SftRecord r{
      file.string(), data::Box{0, 0, 40, 40}, {{"human", "<image>\nWhat?"}, {"gpt", "red"}}};
  VilaOutputs o = model->forward({sft_sample(tok(), r, cache.get(file), c.vision, true)});
  o.loss.backward();
  ParamGroup g{"t", {}, {}, 0.0};
  for (auto& [n, p] : model->named_parameters()) {
    const std::string part = trainable_part_of(n);
    const bool trainable = part == "projector" || part == "top_down_selection";
    EXPECT_EQ(p.requires_grad(), trainable) << n;
    if (!trainable) {
      EXPECT_FALSE(p.grad().defined()) << n << " got a gradient";
    }
    if (trainable) g.names.push_back(n), g.params.push_back(p);
  }
  AdamW opt({g}, {1e-2});
  opt.step();
  int moved = 0;
  for (auto& [n, p] : model->named_parameters()) {
    const bool same = p.to_vector<float>() == before[n];
    if (!p.requires_grad()) {
      EXPECT_TRUE(same) << n << " changed although frozen";
    }
    moved += !same;
  }
  EXPECT_GT(moved, 5);
  fs::remove(file);
}

TEST(SelectionLoss, BceplusDiceMatchesThePyTorchReference) {
  const hd::testing::Fixture f = hd::testing::Fixture::load("vila_losses.bin");
  for (const std::string c : {"two_scales", "three_scales"}) {
    std::vector<Tensor> probs, gts;
    for (int s = 0; f.has(c + ".p" + std::to_string(s)); ++s) {
      Tensor p = clone(f.get(c + ".p" + std::to_string(s)));
      p.requires_grad_(true);
      probs.push_back(p);
      gts.push_back(f.get(c + ".g" + std::to_string(s)));
    }
    Tensor loss = image_selection_loss(probs, gts);
    hd::testing::expect_close(loss, f.get(c + ".loss"), 1e-6, 1e-5, c + " loss");
    loss.backward();
    for (size_t s = 0; s < probs.size(); ++s)
      hd::testing::expect_close(probs[s].grad(), f.get(c + ".grad" + std::to_string(s)), 1e-7, 1e-5,
                                c + " gradient of scale " + std::to_string(s));
  }
}

TEST(McEval, CachedOptionScoringPicksWhatAFullForwardPicks) {
  const VilaHdConfig c = config();
  auto model = micro_vila(c, 5);
  const fs::path file = write_image("hd_mc.png", 80, 80, 4);
  ImageCache cache(c.vision, 2);
  std::vector<data::McRecord> records;
  for (int i = 0; i < 3; ++i) {
    data::McRecord r;
    r.image = file.filename().string();
    r.question = i == 0 ? "What word is on the sign?" : i == 1 ? "What shape?" : "Which number?";
    r.options = {"OPEN", "STOP", "circle", "72"};
    r.answer = i;
    r.box = data::Box{10, 10, 50, 50};
    records.push_back(r);
  }
  McModeResult res = evaluate_mc(*model, tok(), records, file.parent_path(), cache,
                                 {"top-down x1", LookCloseMode::after_prompt, 1, {}});
  ASSERT_EQ(res.questions.size(), 3u);
  NoGradGuard no_grad;
  for (size_t qi = 0; qi < records.size(); ++qi) {
    // Full forward over [prompt ; option ; <|im_end|>] for every option, mean NLL of the option.
    std::vector<VilaImage> imgs;
    imgs.push_back(vila_image(cache.get(file)));
    VilaSample s = question_sample(tok(), records[qi].question, std::move(imgs));
    Tensor prompt = model->embed_sample(s, 1, nullptr, nullptr);  // the mode's one step
    int64_t best = -1;
    double best_nll = 1e300;
    for (size_t o = 0; o < 4; ++o) {
      std::vector<int64_t> ids;
      for (int32_t t : tok().encode(records[qi].options[o] + "<|im_end|>")) ids.push_back(t);
      Tensor opt_e = model->llm().embed(from_vector<int64_t>(ids, {1, int64_t(ids.size())}));
      Qwen2Inputs in;
      in.inputs_embeds = cat({unsqueeze(prompt, 0), opt_e}, 1);
      Tensor logits = model->llm().forward(in);
      const int64_t T = prompt.size(0);
      double nll = 0;
      for (size_t k = 0; k < ids.size(); ++k) {
        std::vector<float> row =
            reshape(narrow(logits, 1, T - 1 + int64_t(k), 1), {-1}).to_vector<float>();
        double top = *std::max_element(row.begin(), row.end()), z = 0;
        for (float v : row) z += std::exp(double(v) - top);
        nll -= double(row[size_t(ids[k])]) - top - std::log(z);
      }
      nll /= double(ids.size());
      if (nll < best_nll) best_nll = nll, best = int64_t(o);
    }
    EXPECT_EQ(res.questions[qi].chosen, best) << "question " << qi;
    EXPECT_EQ(res.questions[qi].correct, best == records[qi].answer);
    EXPECT_GE(res.questions[qi].gt_recall, 0.0);
    EXPECT_LE(res.questions[qi].gt_recall, 1.0);
  }
  // Low-res only: 4 image tokens (2 x 2), no selection, no recall.
  McModeResult low = evaluate_mc(*model, tok(), records, file.parent_path(), cache,
                                 {"low", LookCloseMode::after_prompt, 0, {}});
  EXPECT_EQ(low.mean_image_tokens, 4.0);
  EXPECT_LT(low.gt_recall, 0.0);
  EXPECT_EQ(model->config().num_look_close, c.num_look_close);  // switches restored
  fs::remove(file);
}

}  // namespace
}  // namespace hd::vilahd
