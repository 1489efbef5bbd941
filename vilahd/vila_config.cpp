#include "vilahd/vila_config.h"

#include <nlohmann/json.hpp>

#include "autograd/error.h"

namespace hd::vilahd {

using nlohmann::json;

const char* look_close_mode_name(LookCloseMode mode) {
  return mode == LookCloseMode::after_prompt ? "after_prompt" : "after_image";
}

LookCloseMode parse_look_close_mode(const std::string& name) {
  if (name == "after_prompt") return LookCloseMode::after_prompt;
  if (name == "after_image") return LookCloseMode::after_image;
  throw Error("look_close_mode '" + name + "' is not one of after_prompt, after_image");
}

namespace {

const char* head_name(PromptHeadType t) {
  return t == PromptHeadType::mlp ? "mlp" : t == PromptHeadType::linear ? "linear" : "none";
}

PromptHeadType parse_head(const std::string& name, const std::string& origin) {
  if (name == "mlp") return PromptHeadType::mlp;
  if (name == "linear") return PromptHeadType::linear;
  throw Error(origin + ": top_down_prompt_head_type '" + name + "' is not one of mlp, linear");
}

template <class T>
void read(const json& j, const char* key, T& out, const std::string& origin) {
  if (!j.contains(key) || j[key].is_null()) return;
  try {
    out = j[key].get<T>();
  } catch (const json::exception& e) {
    throw Error(origin + ": field '" + key + "' has the wrong type: " + e.what());
  }
}

}  // namespace

ProjectorConfig VilaHdConfig::projector() const {
  ProjectorConfig p;
  p.vision_dim = vision.width;
  p.llm_dim = llm.hidden_size;
  p.high_res_pos_embed = high_res_pos_embed;
  p.low_res_grid = vision.low_grid();
  p.num_scales = int64_t(vision.scales.size()) + 1;
  p.prompt_head = look_close_mode == LookCloseMode::after_prompt ? top_down_prompt_head_type
                                                                 : PromptHeadType::none;
  return p;
}

void VilaHdConfig::validate(const std::string& origin) const {
  llm.validate(origin + " (llm)");
  const int64_t depth = vision.depth;
  HD_CHECK(mm_vision_select_layer != 0 && mm_vision_select_layer <= depth &&
               mm_vision_select_layer >= -depth,
           origin, ": mm_vision_select_layer ", mm_vision_select_layer, " is outside the ", depth,
           " PS3 blocks (1..", depth, " or -1..-", depth, ")");
  HD_CHECK(num_look_close >= 0, origin, ": num_look_close must be >= 0, got ", num_look_close);
  HD_CHECK(select_num_each_scale.empty() || select_num_each_scale.size() == vision.scales.size(),
           origin, ": select_num_each_scale has ", select_num_each_scale.size(), " entries for ",
           vision.scales.size(), " PS3 scales");
  for (int64_t n : select_num_each_scale)
    HD_CHECK(n >= 0, origin, ": select_num_each_scale entries must be >= 0");
  HD_CHECK(image_newline_token >= 0 && image_newline_token < llm.vocab_size, origin,
           ": image_newline_token ", image_newline_token, " is not a token of the ", llm.vocab_size,
           "-token vocabulary");
  HD_CHECK(token_selection_loss_weight >= 0, origin, ": token_selection_loss_weight must be >= 0");
  try {
    vision.validate();
  } catch (const Error& e) {
    throw Error(origin + " (vision_config): " + e.what());
  }
}

VilaHdConfig VilaHdConfig::tiny(int64_t vocab, int64_t newline_token) {
  VilaHdConfig c;
  c.llm = Qwen2Config::tiny(vocab);
  c.vision = ps3::PS3Config::demo(1).vision;
  c.image_newline_token = newline_token;
  c.token_selection_loss_weight = 1.0;
  return c;
}

std::string vila_config_to_json(const VilaHdConfig& c) {
  const ps3::VisionConfig& v = c.vision;
  json vision = {{"width", v.width},
                 {"depth", v.depth},
                 {"heads", v.heads},
                 {"mlp_hidden", v.mlp_hidden},
                 {"patch", v.patch},
                 {"channels", v.channels},
                 {"low_res", v.low_res},
                 {"scales", v.scales},
                 {"select_layers", v.select_layers},
                 {"max_select", v.max_select},
                 {"selection_res", v.selection_res},
                 {"convnext_hidden", v.convnext_hidden},
                 {"convnext_out", v.convnext_out},
                 {"convnext_depth", v.convnext_depth},
                 {"convnext_stem", v.convnext_stem},
                 {"ln_eps", v.ln_eps}};
  json j = {{"architectures", {"VilaHdForCausalLM"}},
            {"model_type", "vila_hd"},
            {"mm_projector_type", "mlp_downsample"},
            {"mm_vision_select_layer", c.mm_vision_select_layer},
            {"mm_vision_select_feature", "cls_patch"},
            {"mm_hidden_size", v.width},
            {"hidden_size", c.llm.hidden_size},
            {"high_res_pos_embed", c.high_res_pos_embed},
            {"top_down_prompt_head_type", head_name(c.top_down_prompt_head_type)},
            {"look_close_mode", look_close_mode_name(c.look_close_mode)},
            {"num_look_close", c.num_look_close},
            {"select_num_each_scale", c.select_num_each_scale},
            {"token_selection_loss_weight", c.token_selection_loss_weight},
            {"image_newline_token", c.image_newline_token},
            {"vision_config", vision}};
  return j.dump(2) + "\n";
}

void vila_config_from_json(const std::string& text, const std::string& origin, VilaHdConfig& c) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(origin + ": not valid JSON: " + e.what());
  }
  HD_CHECK(j.is_object(), origin, ": expected a JSON object");
  std::string projector_type = "mlp_downsample";
  read(j, "mm_projector_type", projector_type, origin);
  HD_CHECK(projector_type == "mlp_downsample", origin, ": mm_projector_type '", projector_type,
           "' is not supported (only the 2x2 mlp_downsample of VILA-HD, §3.3)");
  read(j, "mm_vision_select_layer", c.mm_vision_select_layer, origin);
  read(j, "high_res_pos_embed", c.high_res_pos_embed, origin);
  std::string head = head_name(c.top_down_prompt_head_type),
              mode = look_close_mode_name(c.look_close_mode);
  read(j, "top_down_prompt_head_type", head, origin);
  c.top_down_prompt_head_type = parse_head(head, origin);
  read(j, "look_close_mode", mode, origin);
  try {
    c.look_close_mode = parse_look_close_mode(mode);
  } catch (const Error& e) {
    throw Error(origin + ": " + e.what());
  }
  read(j, "num_look_close", c.num_look_close, origin);
  read(j, "select_num_each_scale", c.select_num_each_scale, origin);
  read(j, "token_selection_loss_weight", c.token_selection_loss_weight, origin);
  read(j, "image_newline_token", c.image_newline_token, origin);
  HD_CHECK(j.contains("vision_config") && j["vision_config"].is_object(), origin,
           ": no \"vision_config\" object (the PS3 vision tower's configuration)");
  const json& v = j["vision_config"];
  const std::string vo = origin + " (vision_config)";
  ps3::VisionConfig& vc = c.vision;
  read(v, "width", vc.width, vo);
  read(v, "depth", vc.depth, vo);
  read(v, "heads", vc.heads, vo);
  read(v, "mlp_hidden", vc.mlp_hidden, vo);
  read(v, "patch", vc.patch, vo);
  read(v, "channels", vc.channels, vo);
  read(v, "low_res", vc.low_res, vo);
  read(v, "scales", vc.scales, vo);
  read(v, "select_layers", vc.select_layers, vo);
  read(v, "max_select", vc.max_select, vo);
  read(v, "selection_res", vc.selection_res, vo);
  read(v, "convnext_hidden", vc.convnext_hidden, vo);
  read(v, "convnext_out", vc.convnext_out, vo);
  read(v, "convnext_depth", vc.convnext_depth, vo);
  read(v, "convnext_stem", vc.convnext_stem, vo);
  read(v, "ln_eps", vc.ln_eps, vo);
  if (j.contains("mm_hidden_size"))
    HD_CHECK(j["mm_hidden_size"] == vc.width, origin, ": mm_hidden_size ",
             j["mm_hidden_size"].dump(), " differs from vision_config.width ", vc.width);
}

}  // namespace hd::vilahd
