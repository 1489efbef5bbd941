// PS3CLIP: the two towers and the two contrast scalars under their checkpoint names.
//
// logit_scale and logit_bias are 0-dim like OpenCLIP's (torch.ones([]) * init), so a released
// checkpoint's values load without reshaping; FSDP shards a 0-dim tensor as one row.
#include <algorithm>
#include <cmath>

#include "autograd/error.h"
#include "autograd/node.h"
#include "autograd/storage.h"
#include "ops/elementwise.h"
#include "ps3/pretrain.h"
#include "ps3/text_tower.h"

namespace hd::ps3 {

PS3CLIP::PS3CLIP(const PS3Config& config) : config_(config) {
  config.validate();
  vision_ = register_module("vision_model", std::make_shared<PS3VisionModel>(config.vision));
  text_ =
      register_module("text_model", std::make_shared<TextTower>(config.text, config.vision.width));
  logit_scale = register_parameter("logit_scale", {}, Init::constant(config.init_logit_scale));
  logit_bias = register_parameter("logit_bias", {}, Init::constant(config.init_logit_bias));
}

void PS3CLIP::set_unit_runner(const nn::UnitRunner& runner) {
  runner_ = runner;
  vision_->set_unit_runner(runner);
  text_->set_unit_runner(runner);
}

std::vector<const Module*> PS3CLIP::sharding_units() const {
  // Forward order: pretrain_forward runs the text tower first (its prompt steers selection).
  std::vector<const Module*> out = text_->sharding_units();
  for (const Module* m : vision_->sharding_units()) out.push_back(m);
  return out;
}

void PS3CLIP::clamp_logit_scale(Tensor& logit_scale_storage) {
  HD_CHECK(logit_scale_storage.defined() && (logit_scale_storage.dtype() == DType::f32 ||
                                             logit_scale_storage.dtype() == DType::f64),
           "PS3CLIP::clamp_logit_scale: expected the f32 or f64 tensor holding logit_scale, got ",
           logit_scale_storage.defined() ? logit_scale_storage.str() : "an undefined tensor");
  // An in-place write to optimizer state, outside any graph: no version bump wanted. Tensor ops,
  // so it runs where the shard lives (host or device) without reading it on the host.
  NoGradGuard no_grad;
  PreserveVersion keep(*logit_scale_storage.storage());
  Tensor target = logit_scale_storage.detach();
  copy_(target, clamp(target, 0.0, std::log(100.0)));
}

bool is_selection_parameter(const std::string& name) {
  for (const char* prefix :
       {"vision_model.selection_feature_proj.", "vision_model.highres_selection_feature_module.",
        "vision_model.prompt_proj_for_highres.", "text_model.prompt_proj."})
    if (name.rfind(prefix, 0) == 0) return true;
  return name == "vision_model.prior_prompt";
}

}  // namespace hd::ps3
