// Hugging Face model folders: weights in `model.safetensors`, or sharded as
// `model-0000k-of-0000N.safetensors` listed by `model.safetensors.index.json` (weight_map: tensor
// name -> shard file; qwen2-reference.md §2), read and written by name.
//
// Why loading is strict: a model whose config does not match the checkpoint (one layer too few, a
// wrong vocab size, a tied head where the file has its own) would otherwise run half-initialised
// and produce plausible-looking garbage. Every parameter must be in the folder with its shape,
// and every tensor in the folder must be used, except the ones the caller names as ignorable;
// an error names the folder and the tensor.
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "autograd/module.h"
#include "parallel/checkpoint/safetensors.h"

namespace hd::vilahd {

class HfWeights {
 public:
  // Opens `dir` (its index, or its single model.safetensors); throws naming the folder.
  explicit HfWeights(const std::filesystem::path& dir);
  const std::filesystem::path& dir() const { return dir_; }
  std::vector<std::string> names() const;  // sorted
  bool has(const std::string& name) const { return where_.count(name) > 0; }
  Shape shape(const std::string& name) const;
  Tensor read_f32(const std::string& name) const;  // BF16/F16/F64 converted

 private:
  const parallel::ckpt::safetensors::Reader& reader_of(const std::string& name) const;
  std::filesystem::path dir_;
  std::map<std::string, std::string> where_;  // tensor -> shard file name
  std::map<std::string, std::unique_ptr<parallel::ckpt::safetensors::Reader>> readers_;
};

struct LoadRules {
  std::string prefix;  // the folder's name of parameter p is prefix + p
  std::function<bool(const std::string&)> ignorable;  // folder tensors allowed to go unused
};
// Copies every parameter of `module` from `weights` (converted to the parameter's dtype and
// device). Throws naming the folder and the first missing, misshapen or unused tensor.
void load_weights(Module& module, const HfWeights& weights, const LoadRules& rules = {});

// Writes `tensors` (name -> tensor, any float dtype, converted to f32 unless `keep_dtype`) to
// `dir` as model.safetensors, or as shards of at most `max_shard_bytes` with the index when the
// total exceeds it (0: one file). Creates `dir`.
void save_weights(const std::filesystem::path& dir,
                  const std::vector<std::pair<std::string, Tensor>>& tensors,
                  int64_t max_shard_bytes = 0);

}  // namespace hd::vilahd
