// Module / Parameter: a tree of named submodules holding named parameters.
//
// Names are hierarchical ("blocks.3.attn.qkv.weight") and are the identity of a parameter
// everywhere: initialisation keys its random stream by (seed, name), so a model initialises
// identically on any number of ranks; optimizer parameter groups are chosen by rules on names
// and shapes, never by index; checkpoints store tensors by name.
//
// Parameters are registered with an initialisation rule and stay uninitialised (zeros) until
// `initialize(seed)` runs on the root, because only the root knows every parameter's full name.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/tensor.h"

namespace hd {

struct Init {
  enum class Kind { zeros, ones, constant, normal, uniform, trunc_normal } kind = Kind::zeros;
  double a = 0, b = 0;  // normal/trunc_normal: mean, std; uniform: lo, hi; constant: value
  static Init zeros() { return {Kind::zeros}; }
  static Init ones() { return {Kind::ones}; }
  static Init constant(double v) { return {Kind::constant, v}; }
  static Init normal(double mean, double std) { return {Kind::normal, mean, std}; }
  static Init uniform(double lo, double hi) { return {Kind::uniform, lo, hi}; }
  // Normal truncated to [mean - 2 std, mean + 2 std] (timm's trunc_normal_ default bounds).
  static Init trunc_normal(double std) { return {Kind::trunc_normal, 0.0, std}; }
};

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Every parameter with its full dotted name, depth first in registration order.
  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  std::vector<Tensor> parameters() const;
  // Every module below (and including) this one with its dotted path ("" for this one).
  std::vector<std::pair<std::string, const Module*>> named_modules() const;
  // Parameter by full name; throws listing the available names if absent.
  Tensor parameter(const std::string& name) const;
  int64_t num_parameters() const;

  // Initialises every parameter from its rule with a stream keyed by (seed, full name).
  void initialize(uint64_t seed);
  void zero_grad();
  // Moves and/or casts every parameter in place: each keeps its TensorImpl (which the module,
  // optimizers and hooks hold) and gets new contiguous storage on `device` in `dtype`. Gradients
  // are dropped. Initialise first (init streams run on the host), then move.
  void to_(Device device, DType dtype);
  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

 protected:
  // Registers a parameter (f32 unless given) and returns the tensor (requires grad).
  Tensor register_parameter(const std::string& name, const Shape& shape, Init init,
                            DType dtype = DType::f32);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    add_child(name, module);
    return module;
  }

 private:
  struct Param {
    std::string name;
    Tensor tensor;
    Init init;
  };
  void add_child(const std::string& name, std::shared_ptr<Module> child);
  void collect(const std::string& prefix,
               std::vector<std::pair<std::string, const Param*>>& out) const;

  std::vector<Param> params_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

// A list of modules named "0", "1", ... (e.g. transformer blocks).
template <class M>
class ModuleList : public Module {
 public:
  void push_back(std::shared_ptr<M> m) {
    items_.push_back(register_module(std::to_string(items_.size()), std::move(m)));
  }
  size_t size() const { return items_.size(); }
  M& operator[](size_t i) const { return *items_.at(i); }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

 private:
  std::vector<std::shared_ptr<M>> items_;
};

}  // namespace hd
