// A VILA-HD model folder, the layout VILA saves (ps3-reference-implementation.md §4.3):
//   config.json            VILA-HD switches + the PS3 vision config (vila_config.h)
//   llm/                   the Qwen2 LLM as an HF folder (config.json, safetensors, tokenizer.json)
//   mm_projector/          the projector's safetensors (VILA names: layers.N.*,
//   top_down_prompt_head.*) vision_tower/          PS3's safetensors with the HF checkpoint's
//   "vision_model." prefix
// Loading is strict per sub-folder (hf_weights.h): every parameter present with its shape, and
// no unused tensor under the sub-model's prefix; a vision tower that also carries PS3's text
// tower (text_model.*) is fine, VILA-HD does not use it.
#pragma once

#include <filesystem>
#include <memory>

#include "vilahd/vila_hd.h"

namespace hd::vilahd {

// config.json (+ llm/config.json) of a folder; `config_override` (a file) replaces config.json.
VilaHdConfig load_vila_config(const std::filesystem::path& dir,
                              const std::filesystem::path& config_override = {});
// Builds the model from the folder's config and loads every parameter (f32, CPU).
std::unique_ptr<VilaHdModel> load_vila_folder(const std::filesystem::path& dir,
                                              const std::filesystem::path& config_override = {});
void load_vila_weights(VilaHdModel& model, const std::filesystem::path& dir);
// Writes the whole folder; `tokenizer_json` (if given) is copied to llm/tokenizer.json.
void save_vila_folder(const VilaHdModel& model, const std::filesystem::path& dir,
                      const std::filesystem::path& tokenizer_json = {});

}  // namespace hd::vilahd
