// Weights for the one-process PS3 tools; see ps3_weights.h.
#include "launcher/ps3_weights.h"

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "autograd/error.h"
#include "ops/shape.h"
#include "parallel/checkpoint/checkpoint.h"
#include "parallel/checkpoint/safetensors.h"
#include "proto/checkpoint.pb.h"

namespace hd::launcher {

namespace fs = std::filesystem;
namespace ckpt = hd::parallel::ckpt;

namespace {

bool starts_with(const std::string& s, const char* prefix) {
  return s.rfind(prefix, 0) == 0;
}
bool is_logit_scalar(const std::string& name) {
  return name == "logit_scale" || name == "logit_bias";
}

std::string first_names(const std::vector<std::string>& names, size_t n = 8) {
  std::string list;
  for (size_t i = 0; i < names.size() && i < n; ++i) list += (i ? ", " : "") + names[i];
  return list + (names.size() > n ? ", ..." : "");
}

// Copies each (name in the source, tensor) from `src` into the tensor; returns the names the
// source lacks. Shapes must match (the error names the tensor).
std::vector<std::string> load_named(const WeightsSource& src,
                                    const std::vector<std::pair<std::string, Tensor>>& wanted) {
  if (!src.safetensors) {
    std::vector<ckpt::ShardRef> refs;
    for (auto& [name, p] : wanted)
      refs.push_back({parallel::make_shard_info(name, p.shape(), 0, 1), p});
    // Shapes are checked by load_checkpoint (the message names the tensor); absent entries keep
    // the model's values and are judged by the caller.
    return ckpt::load_checkpoint(src.path, refs, {.allow_missing = true, .allow_unexpected = true})
        .missing;
  }
  std::vector<std::string> missing;
  ckpt::safetensors::Reader reader(src.path);
  std::set<std::string> names;
  for (const auto& e : reader.entries()) names.insert(e.name);
  for (auto& [name, p] : wanted) {
    if (!names.count(name)) {
      missing.push_back(name);
      continue;
    }
    const auto& e = reader.entry(name);
    HD_CHECK(e.shape == p.shape(), "--checkpoint ", src.path.string(), ": tensor '", name,
             "' has shape ", shape_str(e.shape), " but the model of the config expects ",
             shape_str(p.shape()));
    Tensor t = reader.read_f32(name);
    std::memcpy(p.data<float>(), t.data<float>(), size_t(p.numel()) * sizeof(float));
  }
  return missing;
}

}  // namespace

WeightsSource resolve_checkpoint(const fs::path& p) {
  HD_CHECK(fs::exists(p), "--checkpoint '", p.string(), "' does not exist");
  if (fs::is_regular_file(p)) {
    HD_CHECK(p.extension() == ".safetensors", "--checkpoint '", p.string(),
             "' is a file but not a .safetensors file (or pass a checkpoint step/run folder)");
    return {p, true};
  }
  if (fs::exists(p / ckpt::kManifestName)) return {p, false};
  // An HF model folder (save_pretrained): its model.safetensors.
  if (fs::is_regular_file(p / "model.safetensors")) return {p / "model.safetensors", true};
  for (const fs::path& dir : {p / "checkpoints", p})
    if (fs::is_directory(dir))
      if (auto latest = ckpt::latest_complete(dir)) return {*latest, false};
  throw Error("--checkpoint '" + p.string() + "' holds no complete checkpoint (no " +
              ckpt::kManifestName +
              " in it, in its step_* folders or in checkpoints/step_*, and no model.safetensors)");
}

std::set<std::string> tensor_names(const WeightsSource& src) {
  std::set<std::string> names;
  if (src.safetensors) {
    ckpt::safetensors::Reader reader(src.path);
    for (const auto& e : reader.entries()) names.insert(e.name);
  } else {
    const proto::Manifest manifest = ckpt::read_manifest(src.path);  // outlives the loop
    for (const auto& t : manifest.tensors()) names.insert(t.name());
  }
  return names;
}

bool has_text_tower(const WeightsSource& src) {
  for (const auto& n : tensor_names(src))
    if (starts_with(n, "text_model.")) return true;
  return false;
}

void load_weights(ps3::PS3CLIP& model, const WeightsSource& src, bool need_text) {
  // What to load: everything but the text tower when it is not needed.
  std::vector<std::pair<std::string, Tensor>> wanted;
  for (auto& [name, p] : model.named_parameters())
    if (need_text || !starts_with(name, "text_model.")) wanted.emplace_back(name, p);

  const std::vector<std::string> missing = load_named(src, wanted);

  std::vector<std::string> text, scalars, other;
  for (const auto& name : missing)
    (starts_with(name, "text_model.") ? text
     : is_logit_scalar(name)          ? scalars
                                      : other)
        .push_back(name);
  if (!other.empty())
    throw Error(detail::concat("--checkpoint ", src.path.string(), ": ", other.size(),
                               " parameter(s) of the model are not in it: ", first_names(other)));
  if (!text.empty()) {
    size_t text_params = 0;
    for (auto& [name, p] : wanted) text_params += starts_with(name, "text_model.");
    if (text.size() == text_params)
      throw Error(
          "--checkpoint " + src.path.string() +
          " has no text tower (no text_model.* tensors: a vision-only checkpoint, e.g. "
          "PS3VisionModel.save_pretrained), and a top-down prompt needs it: encode "
          "without --prompt (bottom-up selection) or pass a checkpoint with the text tower");
    throw Error(detail::concat("--checkpoint ", src.path.string(), ": ", text.size(),
                               " text tower parameter(s) are not in it: ", first_names(text)));
  }
  if (!scalars.empty()) {
    // The model's parameters are not initialised here (everything else comes from the source):
    // set the scalars to the config's init values, as Module::initialize would.
    std::string values;
    for (const auto& name : scalars) {
      const bool scale = name == "logit_scale";
      const double v = scale ? model.config().init_logit_scale : model.config().init_logit_bias;
      (scale ? model.logit_scale : model.logit_bias).data<float>()[0] = float(v);
      values += detail::concat(values.empty() ? "" : ", ", name, " = ", v);
    }
    std::printf(
        "note: %s has no %s (a checkpoint written by the reference's save_pretrained has "
        "none; only the contrastive loss uses them): using their init values %s\n",
        src.path.c_str(), first_names(scalars).c_str(), values.c_str());
  }
}

void load_vision_weights(ps3::PS3VisionModel& vision, const WeightsSource& src) {
  std::vector<std::pair<std::string, Tensor>> wanted;
  for (auto& [name, p] : vision.named_parameters()) wanted.emplace_back("vision_model." + name, p);
  const std::vector<std::string> missing = load_named(src, wanted);
  HD_CHECK(missing.empty(), src.path.string(), ": ", missing.size(),
           " vision tower parameter(s) are not in it: ", first_names(missing));
}

}  // namespace hd::launcher
