// Selection supervision (ps3-reference-implementation.md §2.3): BCE between a selection
// probability map and the ground-truth box map, on local-caption rows only.
//
// Per high-res scale s: BCE_s = mean over the local rows' elements of PyTorch's
// binary_cross_entropy(p, g) (log clamped at -100); the result is mean_s BCE_s. Computed once
// for the bottom-up (prior) maps and once for the top-down (posterior) maps.
//
// Sharding: `row_weight` multiplies the result. pretrain_forward passes
// local_rows_here * N / local_rows_global, so that the mean over ranks of the weighted terms is
// the mean over every local row of the global batch (what one process with the whole batch
// computes) even when ranks hold different numbers of local rows; with equal counts it is 1, the
// reference's per-rank mean. A rank with no local rows gets a zero-weighted term that still
// touches every probability map, so its selection modules take part in the backward (the
// reference's "dummy keeps DDP happy"; FSDP's gradient counting needs the same).
#pragma once

#include <vector>

#include "autograd/tensor.h"

namespace hd::ps3 {

// bce: the reference. balanced: box cells and the rest weigh half and half per map.
// balanced_rank: balanced plus a listwise term per row and scale, -log(sum over the box cells of
// softmax(logit(p)) over all cells): top-k only needs the box cells to outrank every other
// cell, and this term's gradient goes to the highest-scoring background cells (the ones top-k
// would wrongly pick) instead of spreading over the thousands of easy ones.
enum class SelectionLoss { bce, balanced, balanced_rank };

// probs[s], gt_maps[s]: [B, H_s, W_s] with probabilities in [0, 1] and targets in {0, 1};
// is_local[b]: whether row b is a local-caption row. Returns a differentiable scalar.
Tensor selection_bce(const std::vector<Tensor>& probs, const std::vector<Tensor>& gt_maps,
                     const std::vector<bool>& is_local, double row_weight = 1.0,
                     SelectionLoss mode = SelectionLoss::bce);

}  // namespace hd::ps3
