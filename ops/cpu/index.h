// CPU kernels for the indexing family. No autograd, no argument checks beyond what the frontends
// (ops/index.cpp, ops/topk.cpp) already did: index values are validated before these run.
//
// Determinism: every kernel that adds into an output (index_add, scatter_add) is split only
// over the dims that are not indexed, so two tasks never touch one output element and each
// element receives its contributions in index order, whatever the thread count.
#pragma once

#include <cstdint>

#include "autograd/tensor.h"

namespace hd::cpu {

// x contiguous, read as [outer, n, inner]; idx holds k values in [0, n);
// out contiguous [outer, k, inner].
void index_select(const Tensor& x, int64_t outer, int64_t n, int64_t inner, const int64_t* idx,
                  int64_t k, Tensor& out);
// out contiguous [outer, n, inner] += src contiguous [outer, k, inner] at rows idx (k values).
void index_add(Tensor& out, int64_t outer, int64_t n, int64_t inner, const int64_t* idx, int64_t k,
               const Tensor& src);
// torch.gather / scatter_add along `dim`, strided operands allowed (index may be expanded).
// gather: out (contiguous, index's shape)[p] = x[p with p[dim] = index[p]].
void gather(const Tensor& x, int64_t dim, const Tensor& index, Tensor& out);
// scatter_add: out (contiguous) [p with p[dim] = index[p]] += src[p] for p over index's shape.
void scatter_add(Tensor& out, int64_t dim, const Tensor& index, const Tensor& src);
// Top-k of each row of contiguous x [rows, n]: values [rows, k], indices (i64) [rows, k].
// Order: larger first (NaN counts as largest, as in PyTorch), ties by lower index.
void topk(const Tensor& x, int64_t rows, int64_t n, int64_t k, Tensor& values, Tensor& indices);

}  // namespace hd::cpu
