// Loading a PS3 model's weights for the one-process tools (`ps3 encode`, `ps3 eval`): from a
// checkpoint step folder, a run folder (its newest complete checkpoint) or a .safetensors file,
// e.g. one written by the reference's save_pretrained.
//
// Why strict, with two exceptions: every parameter a tool uses must be in the source with the
// model's shape (a tensor the model does not use is ignored, e.g. AdamW moments), so a config
// that does not match the checkpoint fails naming the tensor instead of running half-initialised.
// The exceptions are what checkpoints of the reference look like: save_pretrained writes no
// logit_scale/logit_bias (they only matter to the contrastive loss), and PS3VisionModel saves no
// text tower (only a top-down prompt needs it).
#pragma once

#include <filesystem>
#include <set>
#include <string>

#include "ps3/pretrain.h"

namespace hd::launcher {

struct WeightsSource {
  std::filesystem::path path;
  bool safetensors = false;
};

// --checkpoint PATH -> what to load; throws naming PATH when it holds nothing loadable.
WeightsSource resolve_checkpoint(const std::filesystem::path& path);

// Names of the tensors in the source (the manifest or the safetensors header; nothing else read).
std::set<std::string> tensor_names(const WeightsSource& src);

// True when the source holds any text_model.* tensor.
bool has_text_tower(const WeightsSource& src);

// Every parameter of `model` from `src`, by name: vision_model.* always, text_model.* only when
// `need_text` (a missing text tower is then an error saying so). logit_scale/logit_bias keep the
// values the model was built with when the source has none, and a note on stdout says so. Throws
// naming the tensor at fault (missing, or another shape).
void load_weights(ps3::PS3CLIP& model, const WeightsSource& src, bool need_text);

// Every parameter of a bare vision model (VILA-HD's vision tower) from the source's
// vision_model.* tensors; throws naming the source and the tensors that are missing or have
// another shape.
void load_vision_weights(ps3::PS3VisionModel& vision, const WeightsSource& src);

}  // namespace hd::launcher
