// A fresh VILA-HD folder, what `hdtrain vilahd init` writes and what the first VILA-HD stage of a
// staged run (`hdtrain run`) starts from: the tiny preset over a Qwen2-layout tokenizer, the LLM
// optionally another preset or an HF Qwen2 folder (config and weights), the vision tower
// optionally PS3 weights (a PS3 run folder, a checkpoint step folder or a .safetensors file) with
// the vision config of a PS3 run config.
//
// Why one function for both: the staged run must build exactly what the command builds, so a
// pipeline's stage 1 equals `vilahd init --ps3 RUN` followed by `vilahd train`.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "proto/run_config.pb.h"
#include "vilahd/vila_hd.h"

namespace hd::launcher {

struct VilaInitSpec {
  std::filesystem::path tokenizer;  // Qwen2-layout tokenizer.json (copied to out/llm/)
  uint64_t seed = 0;
  std::string mode;                 // look_close_mode; empty: the preset's (after_prompt)
  std::string llm_preset = "tiny";  // tiny, small, qwen2-0.5b, qwen2-7b (vocabulary: tiny and
                                    // small take the tokenizer's)
  std::filesystem::path llm_from;   // HF Qwen2 folder: its config and weights (overrides preset)
  std::string ps3;                  // PS3 weights for the vision tower (empty: random)
  std::string ps3_config;           // run config describing `ps3` (a run folder has its own)
  // The vision tower's config as a run config's model section (a staged run's own); when set,
  // used instead of ps3_config, with or without `ps3` weights.
  std::optional<proto::ModelConfig> ps3_model;
  double selection_weight = -1;                // token_selection_loss_weight; < 0: the preset's
  int64_t num_look_close = 0;                  // 0: the preset's (1)
  std::vector<int64_t> select_num_each_scale;  // empty: PS3's split of max_select
  std::optional<bool> high_res_pos_embed;      // unset: the preset's (off)
  std::string origin = "hdtrain vilahd init";  // names the caller in config errors
};

// The model's config (checks the tokenizer and the PS3 config; throws hd::Error naming them).
vilahd::VilaHdConfig vila_init_config(const VilaInitSpec& spec);
// Builds, initialises, loads the PS3 and LLM weights, writes `out`. Returns the model's
// parameter count.
int64_t write_vila_init_folder(const VilaInitSpec& spec, const std::filesystem::path& out);

}  // namespace hd::launcher
