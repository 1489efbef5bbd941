// Collectives that autograd can differentiate through.
//
// Why: the PS3 sigmoid contrast uses every rank's text embeddings as negatives, and the gradient
// of a rank's loss w.r.t. another rank's texts must flow back to the rank that computed them
// (the reference's neighbour exchange "with autograd", ps3-reference-implementation.md §2.3,
// §6). An all-gather whose backward is a reduce-scatter(sum) is the same exchange in one
// collective and the same semantics as torch.distributed.nn.all_gather.
//
// Scaling: the backward SUMS the gradient every rank computed for this rank's rows. With FSDP
// averaging gradients over ranks (parallel/fsdp.cpp reduce-scatters with avg), a per-rank loss
// L_r gives parameters the gradient of mean_r L_r, through both local and gathered paths.
//
// Host tensors only for now (the padding copies are memcpys).
//
// Unequal row counts (the loader drops bad samples, so batches may differ): row counts are
// all-gathered first, every rank pads to the largest count for the fixed-size all-gather, and
// the padding is cut away again; the backward pads the same way for the reduce-scatter.
#pragma once

#include <cstdint>
#include <vector>

#include "autograd/tensor.h"
#include "parallel/process_group.h"

namespace hd::parallel {

struct GatheredRows {
  Tensor all;                      // [sum_r n_r, ...] rows of rank 0, then rank 1, ...
  std::vector<int64_t> counts;     // n_r per rank
  int64_t offset(int rank) const;  // first row of `rank` in `all`
};

// x [n_r, ...] (f32 or f64, n_r may be 0) on every rank -> every rank's rows concatenated in
// rank order. Differentiable in x when grad mode is on: backward reduce-scatters (sum) the
// gradient of `all` and returns this rank's rows. Collective in forward AND backward: every
// rank must call it, and every rank must run the backward (the gathered tensor must reach each
// rank's loss). `pg` must outlive the backward.
GatheredRows all_gather_rows(const Tensor& x, ProcessGroup& pg);

// Sum of a scalar count over ranks (i64 all-reduce); used for loss normalisers that must not
// depend on how a batch was split over ranks.
int64_t all_reduce_count(int64_t value, ProcessGroup& pg);

}  // namespace hd::parallel
