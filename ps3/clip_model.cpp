// PS3CLIP: the two towers and the two contrast scalars under their checkpoint names.
//
// logit_scale and logit_bias are 0-dim like OpenCLIP's (torch.ones([]) * init), so a released
// checkpoint's values load without reshaping; FSDP shards a 0-dim tensor as one row.
#include <algorithm>
#include <cmath>

#include "autograd/error.h"
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
  HD_CHECK(logit_scale_storage.defined() && logit_scale_storage.is_contiguous() &&
               logit_scale_storage.device().is_cpu(),
           "PS3CLIP::clamp_logit_scale: expected the contiguous host tensor holding logit_scale, "
           "got ",
           logit_scale_storage.defined() ? logit_scale_storage.str() : "an undefined tensor");
  const double hi = std::log(100.0);
  // An in-place write to optimizer state, outside any graph: no version bump wanted.
  if (logit_scale_storage.dtype() == DType::f32) {
    float* p = logit_scale_storage.data<float>();
    for (int64_t i = 0; i < logit_scale_storage.numel(); ++i)
      p[i] = std::clamp(p[i], 0.0f, float(hi));
  } else {
    HD_CHECK(logit_scale_storage.dtype() == DType::f64,
             "PS3CLIP::clamp_logit_scale: logit_scale must be f32 or f64, got ",
             logit_scale_storage.str());
    double* p = logit_scale_storage.data<double>();
    for (int64_t i = 0; i < logit_scale_storage.numel(); ++i) p[i] = std::clamp(p[i], 0.0, hi);
  }
}

bool is_selection_parameter(const std::string& name) {
  for (const char* prefix :
       {"vision_model.selection_feature_proj.", "vision_model.highres_selection_feature_module.",
        "vision_model.prompt_proj_for_highres.", "text_model.prompt_proj."})
    if (name.rfind(prefix, 0) == 0) return true;
  return name == "vision_model.prior_prompt";
}

}  // namespace hd::ps3
