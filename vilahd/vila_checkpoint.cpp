#include "vilahd/vila_checkpoint.h"

#include <fstream>
#include <sstream>

#include "vilahd/hf_weights.h"
#include "vilahd/qwen2_hf.h"

namespace hd::vilahd {

namespace fs = std::filesystem;

namespace {

std::string read_text(const fs::path& file, const char* what) {
  std::ifstream in(file);
  HD_CHECK(in.good(), "cannot open ", what, " '", file.string(), "'");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

constexpr const char* kVisionPrefix = "vision_model.";

// Parameters of `module` under `prefix` on disk, with our names stripped of `strip`.
std::vector<std::pair<std::string, Tensor>> renamed(const Module& module,
                                                    const std::string& prefix) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& [name, t] : module.named_parameters()) out.emplace_back(prefix + name, t);
  return out;
}

}  // namespace

VilaHdConfig load_vila_config(const fs::path& dir, const fs::path& config_override) {
  HD_CHECK(fs::is_directory(dir), "VILA-HD folder '", dir.string(), "' does not exist");
  VilaHdConfig c;
  c.llm = load_qwen2_config(dir / "llm" / "config.json");
  const fs::path top = config_override.empty() ? dir / "config.json" : config_override;
  vila_config_from_json(read_text(top, "VILA-HD config"), top.string(), c);
  c.validate(top.string());
  return c;
}

std::unique_ptr<VilaHdModel> load_vila_folder(const fs::path& dir,
                                              const fs::path& config_override) {
  auto model = std::make_unique<VilaHdModel>(load_vila_config(dir, config_override));
  load_vila_weights(*model, dir);
  return model;
}

void load_vila_weights(VilaHdModel& model, const fs::path& dir) {
  load_hf_qwen2_weights(model.llm(), dir / "llm");
  load_weights(model.projector(), HfWeights(dir / "mm_projector"));
  LoadRules vision;
  vision.prefix = kVisionPrefix;  // text_model.* and logit_* sit outside it: not checked
  load_weights(model.vision(), HfWeights(dir / "vision_tower"), vision);
}

void save_vila_folder(const VilaHdModel& model, const fs::path& dir,
                      const fs::path& tokenizer_json) {
  fs::create_directories(dir);
  save_hf_qwen2(model.llm(), dir / "llm");
  if (!tokenizer_json.empty()) {
    HD_CHECK(fs::is_regular_file(tokenizer_json), "tokenizer '", tokenizer_json.string(),
             "' does not exist");
    fs::copy_file(tokenizer_json, dir / "llm" / "tokenizer.json",
                  fs::copy_options::overwrite_existing);
  }
  save_weights(dir / "mm_projector", renamed(model.projector(), ""));
  save_weights(dir / "vision_tower", renamed(model.vision(), kVisionPrefix));
  // config.json last: a folder without it is visibly incomplete.
  std::ofstream(dir / "config.json") << vila_config_to_json(model.config());
}

}  // namespace hd::vilahd
