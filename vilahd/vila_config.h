// VILA-HD's configuration: the LLM (Qwen2), the PS3 vision tower, the projector and the
// look-close switches of ps3-reference-implementation.md §3.1-§3.5, with VILA's names where it
// has them (mm_vision_select_layer, look_close_mode, num_look_close, top_down_prompt_head_type,
// high_res_pos_embed, token_selection_loss_weight; SELECT_NUM_EACH_SCALE as select_num_each_scale).
//
// On disk it is the top-level config.json of a VILA-HD folder (vila_checkpoint.h): these fields,
// with the PS3 vision config under "vision_config" (our VisionConfig field names) and the LLM's
// in llm/config.json (HF Qwen2 fields).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "ps3/config.h"
#include "vilahd/projector.h"
#include "vilahd/qwen2_config.h"

namespace hd::vilahd {

enum class LookCloseMode { after_image, after_prompt };  // bottom-up (prior) / top-down (LLM)

struct VilaHdConfig {
  Qwen2Config llm;
  ps3::VisionConfig vision;
  int64_t mm_vision_select_layer = -2;  // PS3 block whose output the projector reads (§3.3)
  bool high_res_pos_embed = false;      // §3.4
  PromptHeadType top_down_prompt_head_type = PromptHeadType::mlp;  // with after_prompt
  LookCloseMode look_close_mode = LookCloseMode::after_prompt;
  int64_t num_look_close = 1;  // look-close steps at inference (NUM_LOOK_CLOSE)
  // Patches per scale per step (SELECT_NUM_EACH_SCALE); empty: PS3's split of max_select.
  std::vector<int64_t> select_num_each_scale;
  double token_selection_loss_weight = 0.0;  // §3.7: LM + w * (BCE + DICE) when boxes are given
  // Token id of "\n" in the LLM's vocabulary: its embedding closes every image (§3.6).
  int64_t image_newline_token = -1;

  ProjectorConfig projector() const;
  // Throws naming `origin` and the field.
  void validate(const std::string& origin) const;
  // The demo/test model: tiny Qwen2 over a `vocab`-token tokenizer, the demo PS3 tower.
  static VilaHdConfig tiny(int64_t vocab, int64_t newline_token);
};

// The top-level config.json (without the LLM, which lives in llm/config.json).
std::string vila_config_to_json(const VilaHdConfig& config);
// Reads `json_text` into `config` (whose llm is kept); `origin` names the file in errors.
void vila_config_from_json(const std::string& json_text, const std::string& origin,
                           VilaHdConfig& config);

const char* look_close_mode_name(LookCloseMode mode);
LookCloseMode parse_look_close_mode(const std::string& name);  // throws listing the names

}  // namespace hd::vilahd
