// fp32 master weights for 16-bit compute (see mixed_precision.h).
#include "autograd/mixed_precision.h"

#include "autograd/error.h"
#include "autograd/node.h"
#include "ops/elementwise.h"
#include "ops/shape.h"

namespace hd {

MasterWeights::MasterWeights(Module& module, DType compute_dtype) : compute_dtype_(compute_dtype) {
  HD_CHECK(is_floating(compute_dtype), "MasterWeights: compute dtype must be floating, got ",
           dtype_name(compute_dtype));
  auto named = module.named_parameters();
  HD_CHECK(!named.empty(), "MasterWeights: the module has no parameters");
  const Device device = named.front().second.device();
  for (auto& [name, p] : named) {
    HD_CHECK(p.dtype() == DType::f32, "MasterWeights: parameter '", name, "' is ", p.str(),
             "; masters are made from fp32 parameters");
    HD_CHECK(p.device() == device, "MasterWeights: parameter '", name, "' is on ", p.device().str(),
             ", the others on ", device.str());
    Tensor master = clone(p.detach());
    master.requires_grad_(true).set_name(name);
    names_.push_back(name);
    params_.push_back(p);
    masters_.push_back(master);
  }
  module.to_(device, compute_dtype);
}

std::vector<ParamGroup> MasterWeights::param_groups(double weight_decay,
                                                    const DecayRule& rule) const {
  DecayGroups groups(weight_decay, rule);
  for (size_t i = 0; i < masters_.size(); ++i) groups.add(names_[i], params_[i], masters_[i]);
  return groups.take();
}

void MasterWeights::grads_to_masters() {
  NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor g = params_[i].grad();
    if (!g.defined()) continue;
    Tensor g32 = contiguous(to(g, DType::f32));
    Tensor mg = masters_[i].grad();
    if (mg.defined()) {
      add_(mg, g32);
    } else {
      masters_[i].set_grad(g32.is_same(g) ? clone(g32) : g32);
    }
    params_[i].zero_grad();
  }
}

void MasterWeights::masters_to_params() {
  NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor dst = params_[i].detach();
    copy_(dst, masters_[i].detach());  // converts to the compute dtype (round to nearest even)
  }
}

}  // namespace hd
