// A Qwen2 LLM to and from a Hugging Face folder (config.json + model.safetensors, or shards with
// model.safetensors.index.json), the layout `save_pretrained` writes and released checkpoints
// (Qwen2-0.5B, VILA-HD's llm/ folder) use. Our parameter names are HF's, so the mapping is the
// identity; the tied-embedding rule is qwen2-reference.md §2 (a tied checkpoint has no
// lm_head.weight; if it ships one anyway, the embedding is used and lm_head is ignored).
#pragma once

#include <filesystem>
#include <memory>

#include "vilahd/qwen2.h"

namespace hd::vilahd {

// Builds the model from DIR/config.json and loads every parameter (f32, on the CPU). Throws
// naming the folder and the tensor when anything is missing or has another shape.
std::unique_ptr<Qwen2ForCausalLM> load_hf_qwen2(const std::filesystem::path& dir);
// Loads the weights of an HF folder into an existing model (whose config must match).
void load_hf_qwen2_weights(Qwen2ForCausalLM& model, const std::filesystem::path& dir);
// Writes config.json and the weights (f32), sharded when larger than max_shard_bytes (0: never).
void save_hf_qwen2(const Qwen2ForCausalLM& model, const std::filesystem::path& dir,
                   int64_t max_shard_bytes = 0);

}  // namespace hd::vilahd
