// Per-step patch selection of PS3's stage 3 (reference §1.5.9, §1.6): per instance and per
// scale, the top-k of that scale's probability map, with
//  * positions picked in earlier look-close steps excluded,
//  * carry-over: when a scale has fewer unpicked positions than its budget, it takes what is
//    left and the deficit moves to the next scale (the last scale's deficit is dropped),
//  * optional GT forcing: gt_maps[0] (the first high-res grid) nearest-upsampled to every scale,
//    probability := 1 where GT > 0, so in-box patches are taken first.
//
// Tie rule (PyTorch's topk leaves it unspecified, and nearest upsampling makes ties the norm):
// descending probability, then ascending flat index, the rule of hd::topk. Selection reads
// values only; it is not differentiable (the BCE losses train the probability maps).
//
// The per-scale counts depend only on budgets and on how many positions earlier steps took,
// which is the same for every instance, so every instance gets the same count per scale and a
// step's tokens form one [B, N, W] batch.
#pragma once

#include <cstdint>
#include <vector>

#include "autograd/tensor.h"

namespace hd::ps3 {

struct StepSelection {
  std::vector<int64_t> counts;  // per scale, the same for every instance
  // indices[s][b]: flat row-major grid indices of scale s for instance b, ascending.
  std::vector<std::vector<std::vector<int64_t>>> indices;
  int64_t total() const;
};

class PatchSelector {
 public:
  PatchSelector(std::vector<int64_t> grids, int64_t batch);

  // probs[s]: [B, g_s, g_s] ranking maps (values only). gt_first: [B, g_0, g_0] or undefined
  // (no forcing). budget[s]: per-scale k of this step (split_budget).
  StepSelection select(const std::vector<Tensor>& probs, const Tensor& gt_first,
                       const std::vector<int64_t>& budget);

  // Union of everything selected so far, per scale [B, g_s, g_s] 0/1 of `dtype`.
  std::vector<Tensor> selection_maps(DType dtype) const;
  int64_t remaining(size_t scale) const;  // unpicked positions per instance

 private:
  std::vector<int64_t> grids_;
  int64_t batch_;
  std::vector<std::vector<uint8_t>> taken_;  // [s] -> B * g_s^2 flags
  std::vector<int64_t> taken_count_;         // [s] per instance
};

}  // namespace hd::ps3
