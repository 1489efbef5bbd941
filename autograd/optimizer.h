// AdamW with parameter groups chosen by rule, a warmup + cosine schedule, and global-norm
// gradient clipping.
//
// The optimizer works on whatever tensors it is given: full parameters here, and later the
// local fp32 shards FSDP hands it (the shard is the master copy), so nothing here assumes a
// parameter's gradient lives in a module.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "autograd/module.h"
#include "autograd/tensor.h"

namespace hd {

struct ParamGroup {
  std::string label;  // e.g. "decay", "no_decay"
  std::vector<std::string> names;
  std::vector<Tensor> params;
  double weight_decay = 0.0;
  double lr_scale = 1.0;  // this group's learning rate = the optimizer's lr x lr_scale
};

// Decides which parameters get weight decay from name and shape. The default rule (OpenCLIP's,
// used by PS3): no decay for tensors with fewer than 2 dims (biases, norm weights, layer
// scales, learned scalars) and for names containing one of `no_decay_substrings`.
struct DecayRule {
  std::vector<std::string> no_decay_substrings = {"logit_scale", "logit_bias"};
  bool decays(const std::string& name, const Tensor& t) const;
};

// Builds the "decay" and "no_decay" groups one parameter at a time. The rule looks at
// `as_seen` (the module's tensor: its full shape decides), the optimizer gets `param` (which may
// be an FSDP shard or an fp32 master of it). Empty groups are left out.
class DecayGroups {
 public:
  DecayGroups(double weight_decay, const DecayRule& rule) : rule_(rule) {
    decay_.weight_decay = weight_decay;
  }
  void add(const std::string& name, const Tensor& as_seen, const Tensor& param);
  std::vector<ParamGroup> take();  // once, at the end

 private:
  DecayRule rule_;
  ParamGroup decay_{"decay", {}, {}, 0.0}, no_decay_{"no_decay", {}, {}, 0.0};
};

// Splits a module's parameters into a "decay" and a "no_decay" group by `rule`.
std::vector<ParamGroup> param_groups(const Module& module, double weight_decay,
                                     const DecayRule& rule = {});

// Moves the parameters whose name satisfies `selected` out of every group into a copy of that
// group labelled "<prefix>_<label>" with lr_scale = `lr_scale` (same weight decay), e.g. PS3's
// selection modules at their own learning rate (the reference's --token_selection_lr). Empty
// groups are left out; the order of the rest is kept.
std::vector<ParamGroup> split_param_groups(std::vector<ParamGroup> groups,
                                           const std::function<bool(const std::string&)>& selected,
                                           const std::string& prefix, double lr_scale);

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
};

class AdamW {
 public:
  AdamW(std::vector<ParamGroup> groups, AdamWOptions options);

  // One update of every parameter that has a gradient (those without are skipped, as PyTorch
  // does). The step counter is per optimizer (all parameters step together).
  void step();
  void zero_grad();
  void set_lr(double lr) { options_.lr = lr; }
  double lr() const { return options_.lr; }
  int64_t step_count() const { return step_; }
  void set_step_count(int64_t step) { step_ = step; }  // for resume
  const std::vector<ParamGroup>& groups() const { return groups_; }
  // Moment buffers, by group and index (for checkpoints); created on first step.
  Tensor& exp_avg(size_t group, size_t index) { return exp_avg_.at(group).at(index); }
  Tensor& exp_avg_sq(size_t group, size_t index) { return exp_avg_sq_.at(group).at(index); }

 private:
  std::vector<ParamGroup> groups_;
  AdamWOptions options_;
  int64_t step_ = 0;
  std::vector<std::vector<Tensor>> exp_avg_, exp_avg_sq_;
};

// Linear warmup then cosine decay (OpenCLIP's cosine_lr): for step < warmup,
// lr = peak (step + 1) / warmup; after, lr = min + (peak - min) (1 + cos(pi e / E)) / 2 with
// e = step - warmup, E = total - warmup. The schedule is a pure function of the step, so
// resuming only needs the step.
struct WarmupCosine {
  double peak_lr;
  int64_t warmup_steps;
  int64_t total_steps;
  double min_lr = 0.0;
  double at(int64_t step) const;
};

// Sum of squared gradient entries (f64) over `params`; the FSDP version all-reduces this.
double grad_norm_squared(const std::vector<Tensor>& params);
// The same as a [1] f64 tensor on `device` (where the gradients live), summed there: one host
// read for the whole model instead of one per tensor when the caller finally reads it.
Tensor grad_norm_squared_tensor(const std::vector<Tensor>& params, Device device);
// Scales gradients by min(1, max_norm / (total_norm + 1e-6)) (PyTorch's rule) and returns
// total_norm = sqrt(grad_norm_squared). Non-finite norms are returned without scaling so the
// caller can skip the step.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);
void scale_grads(const std::vector<Tensor>& params, double factor);

}  // namespace hd
