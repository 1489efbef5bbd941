#pragma once

#include "autograd/tensor.h"

namespace hd::cpu {

enum class ReduceKind { sum, max, min, logsumexp };

// x is contiguous and read as [outer, n, inner]; out is contiguous [outer, inner] (same dtype as
// x, except sum of ints/bool -> i64). indices (i64, [outer, inner]) only for max/min.
void reduce_dim(ReduceKind kind, const Tensor& x, int64_t outer, int64_t n, int64_t inner,
                Tensor& out, Tensor* indices);

}  // namespace hd::cpu
