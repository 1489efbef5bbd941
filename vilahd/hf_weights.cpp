#include "vilahd/hf_weights.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "autograd/error.h"
#include "ops/elementwise.h"
#include "ops/shape.h"

namespace hd::vilahd {

namespace fs = std::filesystem;
namespace st = parallel::ckpt::safetensors;
using nlohmann::json;

namespace {
constexpr const char* kIndex = "model.safetensors.index.json";
constexpr const char* kSingle = "model.safetensors";
}  // namespace

HfWeights::HfWeights(const fs::path& dir) : dir_(dir) {
  HD_CHECK(fs::is_directory(dir), "HF model folder '", dir.string(), "' does not exist");
  if (fs::exists(dir / kIndex)) {
    std::ifstream in(dir / kIndex);
    std::stringstream text;
    text << in.rdbuf();
    json index;
    try {
      index = json::parse(text.str());
    } catch (const json::exception& e) {
      throw Error((dir / kIndex).string() + ": not valid JSON: " + e.what());
    }
    HD_CHECK(index.contains("weight_map") && index["weight_map"].is_object(),
             (dir / kIndex).string(), ": no \"weight_map\" object");
    for (const auto& [name, file] : index["weight_map"].items()) {
      HD_CHECK(file.is_string(), (dir / kIndex).string(), ": weight_map entry '", name,
               "' is not a file name");
      where_[name] = file.get<std::string>();
    }
    for (const auto& [name, file] : where_) {
      if (readers_.count(file)) continue;
      HD_CHECK(fs::exists(dir / file), (dir / kIndex).string(), " names shard '", file, "' (for '",
               name, "') which is missing from the folder");
      readers_[file] = std::make_unique<st::Reader>(dir / file);
    }
    // The index must tell the truth: each tensor is in the shard it names.
    for (const auto& [name, file] : where_) {
      const auto& entries = readers_.at(file)->entries();
      bool found = false;
      for (const auto& e : entries) found = found || e.name == name;
      HD_CHECK(found, (dir / kIndex).string(), ": tensor '", name, "' is not in shard '", file,
               "'");
    }
  } else {
    HD_CHECK(fs::exists(dir / kSingle), "HF model folder '", dir.string(), "' has neither ",
             kSingle, " nor ", kIndex);
    readers_[kSingle] = std::make_unique<st::Reader>(dir / kSingle);
    for (const auto& e : readers_[kSingle]->entries()) where_[e.name] = kSingle;
  }
}

std::vector<std::string> HfWeights::names() const {
  std::vector<std::string> out;
  for (const auto& [name, file] : where_) out.push_back(name);
  return out;
}

const st::Reader& HfWeights::reader_of(const std::string& name) const {
  auto it = where_.find(name);
  HD_CHECK(it != where_.end(), "HF model folder '", dir_.string(), "' has no tensor '", name, "'");
  return *readers_.at(it->second);
}

Shape HfWeights::shape(const std::string& name) const {
  return reader_of(name).entry(name).shape;
}

Tensor HfWeights::read_f32(const std::string& name) const {
  return reader_of(name).read_f32(name);
}

void load_weights(Module& module, const HfWeights& weights, const LoadRules& rules) {
  std::set<std::string> used;
  for (auto& [pname, param] : module.named_parameters()) {
    const std::string name = rules.prefix + pname;
    HD_CHECK(weights.has(name), "HF model folder '", weights.dir().string(), "' has no tensor '",
             name, "' (the model's parameter ", pname, " ", param.shape(),
             "); is the config right for this checkpoint?");
    const Shape shape = weights.shape(name);
    HD_CHECK(shape == param.shape(), "HF model folder '", weights.dir().string(), "': tensor '",
             name, "' is ", shape, " but the model's parameter is ", param.shape(),
             "; is the config right for this checkpoint?");
    Tensor value = weights.read_f32(name);
    if (param.dtype() != value.dtype()) value = to(value, param.dtype());
    if (param.device() != value.device()) value = to(value, param.device());
    // Copy into the parameter's own storage: optimizers, hooks and shards hold its TensorImpl.
    Tensor dst = param.detach();
    copy_(dst, value);
    used.insert(name);
  }
  for (const std::string& name : weights.names()) {
    if (used.count(name)) continue;
    const bool under_prefix = name.rfind(rules.prefix, 0) == 0;
    if (!under_prefix) continue;
    HD_CHECK(rules.ignorable && rules.ignorable(name), "HF model folder '", weights.dir().string(),
             "' has tensor '", name, "' ", weights.shape(name),
             " that the model does not use; is the config right for this checkpoint?");
  }
}

void save_weights(const fs::path& dir, const std::vector<std::pair<std::string, Tensor>>& tensors,
                  int64_t max_shard_bytes) {
  fs::create_directories(dir);
  std::vector<std::vector<std::pair<std::string, Tensor>>> shards(1);
  int64_t shard_bytes = 0, total = 0;
  for (const auto& [name, t] : tensors) {
    Tensor host = contiguous(to(to(t.detach(), Device::cpu()), DType::f32));
    const int64_t bytes = int64_t(host.nbytes());
    if (max_shard_bytes > 0 && shard_bytes > 0 && shard_bytes + bytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().emplace_back(name, host);
    shard_bytes += bytes;
    total += bytes;
  }
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  if (shards.size() == 1) {
    st::write(dir / kSingle, shards[0], metadata);
    return;
  }
  json weight_map = json::object();
  const size_t n = shards.size();
  for (size_t i = 0; i < n; ++i) {
    char file[64];
    std::snprintf(file, sizeof(file), "model-%05zu-of-%05zu.safetensors", i + 1, n);
    st::write(dir / file, shards[i], metadata);
    for (const auto& [name, t] : shards[i]) weight_map[name] = file;
  }
  json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  std::ofstream(dir / kIndex) << index.dump(2) << "\n";
}

}  // namespace hd::vilahd
