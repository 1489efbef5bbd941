// The Qwen2 LLM's configuration: the fields of an HF `config.json` (model_type "qwen2") that
// change the computation, read and written in HF's spelling so released configs load as they are
// (qwen2-reference.md §1).
//
// Why reading is strict: a field we do not implement (sliding-window attention, rope scaling, a
// non-SiLU activation) would silently give other logits than the checkpoint was trained with, so
// it is an error naming the file and the field; fields that do not change the math (dtype,
// architectures, token ids we do not use) are ignored.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "autograd/dtype.h"

namespace hd::vilahd {

struct Qwen2Config {
  int64_t vocab_size = 151936;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 22016;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 32;
  int64_t max_position_embeddings = 32768;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;
  std::optional<int64_t> bos_token_id, eos_token_id, pad_token_id;
  // Init of the linear and embedding weights: N(0, initializer_range) as HF's _init_weights.
  double initializer_range = 0.02;
  // Recompute each decoder layer's activations in backward (autograd/checkpoint.h). Not part of
  // the HF config: a training choice, set from the run config.
  bool activation_checkpointing = false;

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  int64_t kv_groups() const { return num_attention_heads / num_key_value_heads; }
  // Throws naming `origin` (a file or "preset NAME") when the shapes do not fit together.
  void validate(const std::string& origin) const;

  // Presets. tiny: tests and the CPU demo (a few hundred thousand parameters).
  static Qwen2Config tiny(int64_t vocab_size = 512);
  // ~60M parameters with Qwen2-0.5B's proportions: the "mid-size" benchmark config.
  static Qwen2Config small(int64_t vocab_size = 32000);
  static Qwen2Config qwen2_0_5b();
  static Qwen2Config qwen2_7b();
  // "tiny", "small", "qwen2-0.5b", "qwen2-7b"; throws listing the names otherwise.
  static Qwen2Config preset(const std::string& name);
};

// HF config.json text <-> config. `origin` names the source in errors.
Qwen2Config qwen2_config_from_json(const std::string& json_text, const std::string& origin);
Qwen2Config load_qwen2_config(const std::filesystem::path& config_json);
std::string qwen2_config_to_json(const Qwen2Config& config);

}  // namespace hd::vilahd
