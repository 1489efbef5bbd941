// Fresh VILA-HD folders (see vilahd_init.h).
#include "launcher/vilahd_init.h"

#include "autograd/error.h"
#include "launcher/config.h"
#include "launcher/model_config.h"
#include "launcher/ps3_weights.h"
#include "vilahd/qwen2_hf.h"
#include "vilahd/text/bpe_tokenizer.h"
#include "vilahd/vila_checkpoint.h"

namespace hd::launcher {

namespace fs = std::filesystem;

namespace {

// The run config describing spec.ps3: --ps3-config, else the run folder's config.textproto.
std::string ps3_config_path(const VilaInitSpec& s) {
  if (!s.ps3_config.empty()) return s.ps3_config;
  const fs::path own = fs::path(s.ps3) / "config.textproto";
  HD_CHECK(fs::is_regular_file(own), s.origin, ": PS3 weights '", s.ps3,
           "' are not a run folder with config.textproto: give the run config whose model "
           "section describes them");
  return own.string();
}

}  // namespace

vilahd::VilaHdConfig vila_init_config(const VilaInitSpec& s) {
  HD_CHECK(fs::is_regular_file(s.tokenizer), s.origin, ": tokenizer '", s.tokenizer.string(),
           "' does not exist");
  const vilahd::BpeTokenizer tok = vilahd::BpeTokenizer::load(s.tokenizer);
  const std::vector<int32_t> newline = tok.encode("\n");
  HD_CHECK(newline.size() == 1, s.origin, ": tokenizer '", s.tokenizer.string(),
           "' does not encode \"\\n\" as one token (VILA-HD closes each image with it)");
  vilahd::VilaHdConfig config = vilahd::VilaHdConfig::tiny(tok.max_id_plus_one(), newline[0]);
  if (!s.llm_from.empty()) {
    HD_CHECK(fs::is_regular_file(s.llm_from / "config.json"), s.origin, ": LLM folder '",
             s.llm_from.string(), "' has no config.json (an HF Qwen2 folder)");
    config.llm = vilahd::load_qwen2_config(s.llm_from / "config.json");
  } else if (s.llm_preset != "tiny") {
    const int64_t vocab = config.llm.vocab_size;
    config.llm = vilahd::Qwen2Config::preset(s.llm_preset);
    if (s.llm_preset == "small") config.llm.vocab_size = vocab;
  }
  HD_CHECK(config.llm.vocab_size >= tok.max_id_plus_one(), s.origin, ": the LLM's vocabulary (",
           config.llm.vocab_size, ") is smaller than tokenizer '", s.tokenizer.string(), "' (",
           tok.max_id_plus_one(), " ids)");
  if (!s.mode.empty()) config.look_close_mode = vilahd::parse_look_close_mode(s.mode);
  if (auto eos = tok.find_token("<|im_end|>")) config.llm.eos_token_id = *eos;
  if (s.selection_weight >= 0) config.token_selection_loss_weight = s.selection_weight;
  if (s.num_look_close > 0) config.num_look_close = s.num_look_close;
  if (!s.select_num_each_scale.empty()) config.select_num_each_scale = s.select_num_each_scale;
  if (s.high_res_pos_embed) config.high_res_pos_embed = *s.high_res_pos_embed;
  // Only the vision tower is used: the text vocabulary does not matter (1 keeps it valid).
  if (s.ps3_model)
    config.vision = to_ps3_config(*s.ps3_model, 1).vision;
  else if (!s.ps3.empty())
    config.vision = to_ps3_config(load_model_config(ps3_config_path(s), {}).model(), 1).vision;
  config.validate(s.origin);
  return config;
}

int64_t write_vila_init_folder(const VilaInitSpec& s, const fs::path& out) {
  const vilahd::VilaHdConfig config = vila_init_config(s);
  vilahd::VilaHdModel model(config);
  model.initialize(s.seed);
  if (!s.ps3.empty()) load_vision_weights(model.vision(), resolve_checkpoint(s.ps3));
  if (!s.llm_from.empty()) vilahd::load_hf_qwen2_weights(model.llm(), s.llm_from);
  vilahd::save_vila_folder(model, out, s.tokenizer);
  return model.num_parameters();
}

}  // namespace hd::launcher
