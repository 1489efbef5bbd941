// The Qwen2 LLM's own properties (HF parity is qwen2_parity_test.cpp): the KV cache gives the
// same logits as one full forward (in chunks, with padding), cached generation equals full
// recompute for sampling too, finite differences in f64, and the HF import/export: round trip,
// and errors that name the folder and the tensor for a missing, misshapen or unused tensor and
// for config fields we do not implement.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "parallel/checkpoint/safetensors.h"
#include "tests/testing/errors.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/gradcheck.h"
#include "vilahd/generation.h"
#include "vilahd/hf_weights.h"
#include "vilahd/qwen2_hf.h"

namespace hd::vilahd {
namespace {

namespace fs = std::filesystem;
using hd::testing::expect_close;
using hd::testing::expect_error;

Tensor random_ids(int64_t B, int64_t T, int64_t vocab, uint64_t seed) {
  std::vector<int64_t> v(size_t(B * T));
  uint64_t s = seed;
  for (auto& x : v) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x = int64_t((s >> 33) % uint64_t(vocab));
  }
  return from_vector<int64_t>(v, {B, T});
}

std::unique_ptr<Qwen2ForCausalLM> tiny_model(bool tied, uint64_t seed = 3) {
  Qwen2Config c = Qwen2Config::tiny(97);
  c.tie_word_embeddings = tied;
  c.initializer_range = 0.2;  // larger than HF's 0.02 so attention is far from uniform
  auto m = std::make_unique<Qwen2ForCausalLM>(c);
  m->initialize(seed);
  return m;
}

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("hd_qwen2_test_" + name);
  fs::remove_all(d);
  return d;
}

TEST(Qwen2Cache, ChunkedForwardThroughTheCacheEqualsOneFullForward) {
  auto model = tiny_model(false);
  Tensor ids = random_ids(2, 13, 97, 1);
  Qwen2Inputs full;
  full.input_ids = ids;
  Tensor expected = model->forward(full);

  Qwen2KVCache cache = model->new_cache();
  std::vector<Tensor> parts;
  for (auto [start, len] : {std::pair<int64_t, int64_t>{0, 6}, {6, 1}, {7, 6}}) {
    Qwen2Inputs step;
    step.input_ids = contiguous(narrow(ids, 1, start, len));
    step.cache = &cache;
    parts.push_back(model->forward(step));
    EXPECT_EQ(cache.length(), start + len);
  }
  expect_close(cat(parts, 1), expected, 1e-5, 1e-5, "chunked logits");
}

TEST(Qwen2Cache, PaddingMaskCarriesIntoTheCache) {
  // Row 1 is left-padded by 3: its real tokens must see the same context whether the prompt
  // goes in at once or in two chunks, and padded keys must stay invisible after caching.
  auto model = tiny_model(true);
  Tensor ids = random_ids(2, 10, 97, 2);
  std::vector<int64_t> m(20, 1);
  for (int i = 10; i < 13; ++i) m[size_t(i)] = 0;
  Tensor mask = from_vector<int64_t>(m, {2, 10});
  Qwen2Inputs full;
  full.input_ids = ids;
  full.attention_mask = mask;
  Tensor expected = model->forward(full);

  Qwen2KVCache cache = model->new_cache();
  Qwen2Inputs a;
  a.input_ids = contiguous(narrow(ids, 1, 0, 7));
  a.attention_mask = contiguous(narrow(mask, 1, 0, 7));
  a.cache = &cache;
  Tensor first = model->forward(a);
  Qwen2Inputs b;
  b.input_ids = contiguous(narrow(ids, 1, 7, 3));
  b.cache = &cache;  // no mask: the new tokens are real, the cached mask is kept
  Tensor second = model->forward(b);
  Tensor got = cat({first, second}, 1);
  // Compare real positions only.
  expect_close(narrow(got, 1, 3, 7), narrow(expected, 1, 3, 7), 1e-5, 1e-5, "left-padded row");
  expect_close(narrow(got, 0, 0, 1), narrow(expected, 0, 0, 1), 1e-5, 1e-5, "full row");
  // Changing a padded token changes nothing for real positions.
  std::vector<int64_t> v = ids.to_vector<int64_t>();
  v[11] = (v[11] + 5) % 97;
  full.input_ids = from_vector<int64_t>(v, {2, 10});
  expect_close(narrow(narrow(model->forward(full), 0, 1, 1), 1, 3, 7),
               narrow(narrow(expected, 0, 1, 1), 1, 3, 7), 1e-6, 1e-6, "pad token is invisible");
}

TEST(Qwen2Generation, CachedSamplingEqualsFullRecomputeAtEveryStep) {
  auto model = tiny_model(false);
  GenerationOptions o;
  o.max_new_tokens = 10;
  o.temperature = 0.8;
  o.top_k = 20;
  o.top_p = 0.9;
  o.seed = 42;
  Qwen2Inputs prompt;
  prompt.input_ids = random_ids(1, 6, 97, 5);
  GenerationResult cached = generate(*model, prompt, o);
  ASSERT_EQ(cached.tokens.size(), 10u);

  // The same choices from a full forward over the whole sequence at every step.
  std::vector<int64_t> seq = prompt.input_ids.to_vector<int64_t>();
  uint64_t rng = o.seed;
  for (size_t i = 0; i < cached.tokens.size(); ++i) {
    Qwen2Inputs in;
    in.input_ids = from_vector<int64_t>(seq, {1, int64_t(seq.size())});
    Tensor logits = model->forward(in);
    std::vector<float> last =
        contiguous(narrow(narrow(logits, 1, int64_t(seq.size()) - 1, 1), 0, 0, 1))
            .to_vector<float>();
    const int64_t token = choose_next_token(last, o, rng);
    EXPECT_EQ(token, cached.tokens[i]) << "step " << i;
    seq.push_back(token);
  }
  // Same seed, same tokens; another seed, another sample.
  EXPECT_EQ(generate(*model, prompt, o).tokens, cached.tokens);
  o.seed = 43;
  EXPECT_NE(generate(*model, prompt, o).tokens, cached.tokens);
}

TEST(Qwen2Generation, StopsOnAStopTokenAndKeepsIt) {
  auto model = tiny_model(true);
  Qwen2Inputs prompt;
  prompt.input_ids = random_ids(1, 4, 97, 9);
  GenerationOptions o;
  o.max_new_tokens = 12;
  GenerationResult free_run = generate(*model, prompt, o);
  ASSERT_GE(free_run.tokens.size(), 3u);
  o.stop_tokens = {free_run.tokens[2]};
  GenerationResult stopped = generate(*model, prompt, o);
  ASSERT_TRUE(stopped.stopped);
  // It stops at the first occurrence of the stop token.
  size_t first = 0;
  while (free_run.tokens[first] != free_run.tokens[2]) ++first;
  EXPECT_EQ(stopped.tokens,
            std::vector<int64_t>(free_run.tokens.begin(), free_run.tokens.begin() + first + 1));
}

TEST(Qwen2Gradcheck, WholeModelF64AgainstFiniteDifferences) {
  Qwen2Config c;
  c.vocab_size = 11;
  c.hidden_size = 8;
  c.intermediate_size = 12;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 64;
  c.rope_theta = 100.0;
  c.initializer_range = 0.5;
  for (bool tied : {true, false}) {
    c.tie_word_embeddings = tied;
    Qwen2ForCausalLM model(c);
    model.initialize(7);
    model.to_(Device::cpu(), DType::f64);
    Tensor ids = random_ids(2, 5, 11, 3);
    Tensor mask = from_vector<int64_t>({1, 1, 1, 1, 1, 0, 1, 1, 1, 1}, {2, 5});
    std::vector<Tensor> params = model.parameters();
    hd::testing::check_gradients(
        [&](const std::vector<Tensor>&) {
          Qwen2Inputs in;
          in.input_ids = ids;
          in.attention_mask = mask;
          // Only real positions feed the output (pad outputs are unspecified).
          return narrow(model.forward(in), 1, 1, 4);
        },
        params, {1e-6, 1e-7, 1e-5});
  }
}

TEST(Qwen2Import, ExportThenImportRoundTripsShardedAndSingle) {
  auto model = tiny_model(false, 11);
  Qwen2Inputs in;
  in.input_ids = random_ids(1, 7, 97, 4);
  Tensor expected = model->forward(in);
  for (int64_t shard : {int64_t(0), int64_t(60000)}) {
    fs::path dir = temp_dir("roundtrip" + std::to_string(shard));
    save_hf_qwen2(*model, dir, shard);
    EXPECT_EQ(fs::exists(dir / "model.safetensors.index.json"), shard > 0);
    auto loaded = load_hf_qwen2(dir);
    EXPECT_EQ(loaded->config().tie_word_embeddings, false);
    expect_close(loaded->forward(in), expected, 0, 0, "round trip");
    fs::remove_all(dir);
  }
}

// Writes the model's tensors with one edit, for the error tests.
fs::path edited_folder(
    const Qwen2ForCausalLM& model, const std::string& name,
    const std::function<void(std::vector<std::pair<std::string, Tensor>>&)>& edit) {
  fs::path dir = temp_dir(name);
  auto tensors = model.named_parameters();
  edit(tensors);
  save_weights(dir, tensors);
  std::ofstream(dir / "config.json") << qwen2_config_to_json(model.config());
  return dir;
}

TEST(Qwen2Import, ErrorsNameTheFolderAndTheTensor) {
  auto model = tiny_model(false);
  fs::path missing = edited_folder(*model, "missing", [](auto& t) {
    std::erase_if(t, [](const auto& p) { return p.first == "model.layers.1.mlp.up_proj.weight"; });
  });
  expect_error([&] { load_hf_qwen2(missing); },
               "has no tensor 'model.layers.1.mlp.up_proj.weight'");
  fs::path misshapen = edited_folder(*model, "misshapen", [](auto& t) {
    for (auto& [n, v] : t)
      if (n == "model.norm.weight") v = zeros({5});
  });
  expect_error([&] { load_hf_qwen2(misshapen); }, "tensor 'model.norm.weight' is [5]");
  fs::path extra = edited_folder(*model, "extra",
                                 [](auto& t) { t.emplace_back("model.layers.2.foo", zeros({3})); });
  expect_error([&] { load_hf_qwen2(extra); }, "'model.layers.2.foo'");
  expect_error([&] { load_hf_qwen2(temp_dir("nothing")); }, "does not exist");
  // A tied config against an untied checkpoint: lm_head is ignorable only when tied, so this
  // loads; the reverse (untied config, tied checkpoint) names lm_head.weight as missing.
  auto tied = tiny_model(true);
  fs::path tied_dir = temp_dir("tied");
  save_hf_qwen2(*tied, tied_dir);
  Qwen2Config untied_cfg = tied->config();
  untied_cfg.tie_word_embeddings = false;
  Qwen2ForCausalLM untied(untied_cfg);
  expect_error([&] { load_hf_qwen2_weights(untied, tied_dir); }, "has no tensor 'lm_head.weight'");
  for (const auto& d : {missing, misshapen, extra, tied_dir}) fs::remove_all(d);
}

TEST(Qwen2Import, ShardedIndexErrorsNameTheShard) {
  auto model = tiny_model(false);
  fs::path dir = temp_dir("shards");
  save_hf_qwen2(*model, dir, 60000);
  ASSERT_TRUE(fs::exists(dir / "model.safetensors.index.json"));
  int removed = 0;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().starts_with("model-00002-of-"))
      removed += fs::remove(e.path());
  ASSERT_EQ(removed, 1);
  expect_error([&] { load_hf_qwen2(dir); }, "which is missing from the folder");
  fs::remove_all(dir);
}

TEST(Qwen2Config, UnsupportedFieldsAreErrorsNamingTheSource) {
  expect_error([] { qwen2_config_from_json(R"({"model_type": "llama"})", "cfg.json"); },
               "cfg.json: model_type is 'llama'");
  expect_error([] { qwen2_config_from_json(R"({"use_sliding_window": true})", "cfg.json"); },
               "use_sliding_window");
  expect_error([] { qwen2_config_from_json(R"({"rope_scaling": {"type": "yarn"}})", "cfg.json"); },
               "rope_scaling");
  expect_error(
      [] { qwen2_config_from_json(R"({"hidden_size": 30, "num_attention_heads": 4})", "c"); },
      "not divisible");
  expect_error([] { qwen2_config_from_json(R"({"num_key_value_heads": 3})", "c"); },
               "not a multiple of num_key_value_heads");
  expect_error([] { qwen2_config_from_json("{not json", "broken.json"); },
               "broken.json: not valid JSON");
  // The published 7B-Instruct fields (eos as a list, sliding_window 131072 but disabled) load.
  Qwen2Config c = qwen2_config_from_json(
      R"({"model_type": "qwen2", "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
          "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
          "rope_theta": 1000000.0, "sliding_window": 131072, "use_sliding_window": false,
          "tie_word_embeddings": false, "eos_token_id": [151645, 151643], "torch_dtype": "bfloat16"})",
      "7b");
  EXPECT_EQ(c.head_dim(), 128);
  EXPECT_EQ(c.kv_groups(), 7);
  EXPECT_EQ(*c.eos_token_id, 151645);
  // Round trip through our writer.
  Qwen2Config back = qwen2_config_from_json(qwen2_config_to_json(c), "back");
  EXPECT_EQ(back.intermediate_size, 18944);
  EXPECT_EQ(back.rope_theta, 1e6);
}

TEST(Qwen2Loss, IgnoresMinus100AndAveragesOverTheBatchsTargets) {
  // logits [1, 3, 2]; targets after the shift: label[1] = 1, label[2] = -100.
  Tensor logits = from_vector<float>({0, 0, 1, 3, 5, 5}, {1, 3, 2});
  Tensor labels = from_vector<int64_t>({7, 1, -100}, {1, 3});
  // Only position 0 (logits 0, 0) predicts label 1: -log(1/2).
  EXPECT_NEAR(causal_lm_loss(logits, labels).item<float>(), std::log(2.0), 1e-6);
}

}  // namespace
}  // namespace hd::vilahd
