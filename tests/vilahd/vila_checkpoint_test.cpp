// The VILA-HD folder (config.json, llm/, mm_projector/, vision_tower/): a saved model loads back
// and computes the same loss; a missing or misshapen tensor in any sub-folder is an error that
// names the folder and the tensor; the vision tower may carry PS3's text tower.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "ops/factory.h"
#include "tests/testing/errors.h"
#include "tests/vilahd/vila_test_util.h"
#include "vilahd/hf_weights.h"
#include "vilahd/vila_checkpoint.h"

namespace hd::vilahd {
namespace {

namespace fs = std::filesystem;
using hd::testing::expect_error;
using namespace hd::vilahd::testing;

fs::path fresh(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("hd_vila_ckpt_" + name);
  fs::remove_all(d);
  return d;
}

VilaSample one_sample(const VilaHdConfig& c) {
  VilaSample s;
  s.input_ids = {5, kImageToken, 8, 9, 10, 11};
  s.prompt_position = 3;
  s.labels = {-100, -100, -100, -100, 10, 11};
  s.images.push_back(micro_image(c, 3, true));
  return s;
}

TEST(VilaCheckpoint, SavedFolderLoadsBackAndGivesTheSameLoss) {
  const VilaHdConfig c = micro_vila_config();
  auto model = micro_vila(c, 1);
  const fs::path dir = fresh("roundtrip");
  save_vila_folder(*model, dir);
  for (const char* f : {"config.json", "llm/config.json", "llm/model.safetensors",
                        "mm_projector/model.safetensors", "vision_tower/model.safetensors"})
    EXPECT_TRUE(fs::exists(dir / f)) << f;
  auto loaded = load_vila_folder(dir);
  EXPECT_EQ(loaded->config().num_look_close, c.num_look_close);
  EXPECT_EQ(loaded->config().select_num_each_scale, c.select_num_each_scale);
  EXPECT_EQ(loaded->config().vision.scales, c.vision.scales);
  const VilaSample s = one_sample(c);
  EXPECT_EQ(loaded->forward({s}).loss.item<float>(), model->forward({s}).loss.item<float>());
  // The vision tower's names carry the HF checkpoint's prefix.
  HfWeights vt(dir / "vision_tower");
  EXPECT_TRUE(vt.has("vision_model.trunk.pos_embed"));
  fs::remove_all(dir);
}

TEST(VilaCheckpoint, ConfigOverrideReplacesTheFoldersSwitches) {
  const VilaHdConfig c = micro_vila_config();
  auto model = micro_vila(c, 2);
  const fs::path dir = fresh("override");
  save_vila_folder(*model, dir);
  VilaHdConfig other = c;
  other.num_look_close = 3;
  const fs::path file = dir / "other.json";
  std::ofstream(file) << vila_config_to_json(other);
  EXPECT_EQ(load_vila_config(dir, file).num_look_close, 3);
  fs::remove_all(dir);
}

TEST(VilaCheckpoint, ErrorsNameTheSubFolderAndTheTensor) {
  const VilaHdConfig c = micro_vila_config();
  auto model = micro_vila(c, 3);
  const fs::path dir = fresh("errors");
  save_vila_folder(*model, dir);
  // A projector without its second Linear.
  std::vector<std::pair<std::string, Tensor>> proj;
  for (auto& [n, t] : model->projector().named_parameters())
    if (n != "layers.4.weight") proj.emplace_back(n, t);
  save_weights(dir / "mm_projector", proj);
  expect_error([&] { load_vila_folder(dir); }, "has no tensor 'layers.4.weight'");
  save_vila_folder(*model, dir);
  // A vision tower with another width for one tensor, plus a text tower (allowed).
  std::vector<std::pair<std::string, Tensor>> vt;
  for (auto& [n, t] : model->vision().named_parameters())
    vt.emplace_back("vision_model." + n, n == "prior_prompt" ? zeros({3}) : t);
  vt.emplace_back("text_model.token_embedding.weight", zeros({4, 8}));
  save_weights(dir / "vision_tower", vt);
  expect_error([&] { load_vila_folder(dir); }, "tensor 'vision_model.prior_prompt' is [3]");
  fs::remove_all(dir / "llm");
  expect_error([&] { load_vila_folder(dir); }, "llm/config.json");
  expect_error([&] { load_vila_folder(fresh("absent")); }, "does not exist");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace hd::vilahd
