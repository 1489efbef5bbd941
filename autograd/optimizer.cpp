#include "autograd/optimizer.h"

#include <cmath>
#include <numbers>

#include "autograd/node.h"
#include "ops/cpu/adamw.h"
#include "ops/cuda/kernels.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/reduce.h"
#include "ops/shape.h"

namespace hd {

bool DecayRule::decays(const std::string& name, const Tensor& t) const {
  if (t.dim() < 2) return false;
  for (const std::string& s : no_decay_substrings) {
    if (name.find(s) != std::string::npos) return false;
  }
  return true;
}

void DecayGroups::add(const std::string& name, const Tensor& as_seen, const Tensor& param) {
  ParamGroup& g = rule_.decays(name, as_seen) ? decay_ : no_decay_;
  g.names.push_back(name);
  g.params.push_back(param);
}

std::vector<ParamGroup> DecayGroups::take() {
  std::vector<ParamGroup> out;
  if (!decay_.params.empty()) out.push_back(std::move(decay_));
  if (!no_decay_.params.empty()) out.push_back(std::move(no_decay_));
  return out;
}

std::vector<ParamGroup> param_groups(const Module& module, double weight_decay,
                                     const DecayRule& rule) {
  DecayGroups groups(weight_decay, rule);
  for (auto& [name, t] : module.named_parameters()) groups.add(name, t, t);
  return groups.take();
}

AdamW::AdamW(std::vector<ParamGroup> groups, AdamWOptions options)
    : groups_(std::move(groups)), options_(options) {
  HD_CHECK(options_.lr >= 0 && options_.eps > 0 && options_.beta1 >= 0 && options_.beta1 < 1 &&
               options_.beta2 >= 0 && options_.beta2 < 1,
           "AdamW: invalid options lr=", options_.lr, " betas=(", options_.beta1, ", ",
           options_.beta2, ") eps=", options_.eps);
  for (const ParamGroup& g : groups_) {
    HD_CHECK(g.names.size() == g.params.size(), "AdamW: group '", g.label, "' has ",
             g.params.size(), " params but ", g.names.size(), " names");
    std::vector<Tensor> m, v;
    for (const Tensor& p : g.params) {
      HD_CHECK(p.is_contiguous() && is_floating(p.dtype()), "AdamW: parameter ", p.str(),
               " must be a contiguous floating-point tensor");
      m.push_back(zeros_like(p));
      v.push_back(zeros_like(p));
    }
    exp_avg_.push_back(std::move(m));
    exp_avg_sq_.push_back(std::move(v));
  }
}

std::vector<ParamGroup> split_param_groups(std::vector<ParamGroup> groups,
                                           const std::function<bool(const std::string&)>& selected,
                                           const std::string& prefix, double lr_scale) {
  std::vector<ParamGroup> kept, moved;
  for (ParamGroup& g : groups) {
    ParamGroup stay{g.label, {}, {}, g.weight_decay, g.lr_scale};
    ParamGroup go{prefix + "_" + g.label, {}, {}, g.weight_decay, lr_scale};
    for (size_t i = 0; i < g.params.size(); ++i) {
      ParamGroup& to = selected(g.names[i]) ? go : stay;
      to.names.push_back(g.names[i]);
      to.params.push_back(g.params[i]);
    }
    if (!stay.params.empty()) kept.push_back(std::move(stay));
    if (!go.params.empty()) moved.push_back(std::move(go));
  }
  kept.insert(kept.end(), std::make_move_iterator(moved.begin()),
              std::make_move_iterator(moved.end()));
  return kept;
}

void AdamW::step() {
  NoGradGuard no_grad;
  ++step_;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const ParamGroup& g = groups_[gi];
    for (size_t i = 0; i < g.params.size(); ++i) {
      Tensor p = g.params[i];
      Tensor grad = p.grad();
      if (!grad.defined()) continue;
      HD_CHECK(grad.shape() == p.shape() && grad.dtype() == p.dtype(), "AdamW: gradient ",
               grad.str(), " does not match parameter '", g.names[i], "' ", p.str());
      grad = grad.is_contiguous() ? grad : clone(grad);
      cpu::AdamWStep s{options_.lr * g.lr_scale, options_.beta1, options_.beta2, options_.eps,
                       g.weight_decay,           step_};
      dispatch(
          p, "adamw_step",
          [&] { cpu::adamw_step(p, grad, exp_avg_[gi][i], exp_avg_sq_[gi][i], s); },
          HD_CUDA_KERNEL(cuda::adamw_step(p, grad, exp_avg_[gi][i], exp_avg_sq_[gi][i], s)));
      p.bump_version();
    }
  }
}

void AdamW::zero_grad() {
  for (ParamGroup& g : groups_) {
    for (Tensor& p : g.params) p.zero_grad();
  }
}

double WarmupCosine::at(int64_t step) const {
  if (step < warmup_steps) return peak_lr * double(step + 1) / double(warmup_steps);
  int64_t decay_steps = std::max<int64_t>(1, total_steps - warmup_steps);
  double e = double(std::min(step - warmup_steps, decay_steps));
  return min_lr +
         (peak_lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * e / double(decay_steps)));
}

Tensor grad_norm_squared_tensor(const std::vector<Tensor>& params, Device device) {
  NoGradGuard no_grad;
  Tensor total = zeros({1}, DType::f64, device);
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    Tensor g64 = to(g, DType::f64);
    add_(total, sum(mul(g64, g64)));
  }
  return total;
}

double grad_norm_squared(const std::vector<Tensor>& params) {
  Device device = Device::cpu();
  for (const Tensor& p : params) {
    if (p.grad().defined()) {
      device = p.grad().device();
      break;
    }
  }
  return grad_norm_squared_tensor(params, device).item<double>();
}

void scale_grads(const std::vector<Tensor>& params, double factor) {
  NoGradGuard no_grad;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (g.defined()) mul_(g, factor);
  }
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  double norm = std::sqrt(grad_norm_squared(params));
  if (!std::isfinite(norm)) return norm;
  double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) scale_grads(params, coef);
  return norm;
}

}  // namespace hd
