// Mixed precision with fp32 master weights: the module computes in a 16-bit dtype (bf16 on the
// GPU), the optimizer updates fp32 copies.
//
// Why masters: a bf16 number has 8 significant bits, so near 1.0 its spacing is 2^-7 ~ 0.0078.
// An AdamW step of lr ~ 1e-3 added to a bf16 weight rounds straight back to the old value and
// training silently stops; added to an fp32 master it accumulates, and the bf16 copy moves once
// the master has moved far enough (tests/nn/mixed_precision_test.cpp shows both).
//
// Memory: 2 bytes per parameter for the compute copy on top of the fp32 master (4), its fp32
// gradient (4) and AdamW's moments (8); the 16-bit gradient lives only from backward until
// grads_to_masters(). This is the single-process form of the FSDP MixedPrecisionPolicy
// (parallel/fsdp.h); tests/parallel/fsdp_mixed_precision_test.cpp checks that the two agree.
//
// Step:  forward/backward on the module (compute dtype) -> grads_to_masters() -> clip and
//        optimizer on masters() -> masters_to_params().
#pragma once
#include <string>
#include <vector>

#include "autograd/module.h"
#include "autograd/optimizer.h"

namespace hd {

class MasterWeights {
 public:
  // Copies the module's fp32 parameters into fp32 masters (same names, requiring grad), then
  // converts the module's parameters in place to `compute_dtype` (Module::to_, same device).
  MasterWeights(Module& module, DType compute_dtype);

  const std::vector<Tensor>& masters() const { return masters_; }
  // Optimizer groups over the masters, decay decided by name as for the module.
  std::vector<ParamGroup> param_groups(double weight_decay, const DecayRule& rule = {}) const;
  // master.grad (+)= f32(param.grad), then the 16-bit gradients are dropped. Call after every
  // backward (each micro-batch accumulates into the masters' gradients).
  void grads_to_masters();
  // param = compute_dtype(master), in place (no new storage; autograd-invisible).
  void masters_to_params();
  DType compute_dtype() const { return compute_dtype_; }

 private:
  DType compute_dtype_;
  std::vector<std::string> names_;
  std::vector<Tensor> params_;   // the module's (compute dtype)
  std::vector<Tensor> masters_;  // fp32, same order
};

}  // namespace hd
