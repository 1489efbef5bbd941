#include "vilahd/qwen2_hf.h"

#include <fstream>

#include "vilahd/hf_weights.h"

namespace hd::vilahd {

namespace fs = std::filesystem;

std::unique_ptr<Qwen2ForCausalLM> load_hf_qwen2(const fs::path& dir) {
  HD_CHECK(fs::is_directory(dir), "HF model folder '", dir.string(), "' does not exist");
  HD_CHECK(fs::exists(dir / "config.json"), "HF model folder '", dir.string(),
           "' has no config.json");
  auto model = std::make_unique<Qwen2ForCausalLM>(load_qwen2_config(dir / "config.json"));
  load_hf_qwen2_weights(*model, dir);
  return model;
}

void load_hf_qwen2_weights(Qwen2ForCausalLM& model, const fs::path& dir) {
  HfWeights weights(dir);
  const bool tied = model.config().tie_word_embeddings;
  LoadRules rules;
  rules.ignorable = [tied](const std::string& name) {
    // Old exports carry the RoPE buffer; a tied model may still ship its (unused) head.
    return name.find("rotary_emb.inv_freq") != std::string::npos ||
           (tied && name == "lm_head.weight");
  };
  load_weights(model, weights, rules);
}

void save_hf_qwen2(const Qwen2ForCausalLM& model, const fs::path& dir, int64_t max_shard_bytes) {
  save_weights(dir, model.named_parameters(), max_shard_bytes);
  std::ofstream(dir / "config.json") << qwen2_config_to_json(model.config());
}

}  // namespace hd::vilahd
