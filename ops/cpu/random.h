#pragma once

#include "autograd/random.h"
#include "autograd/tensor.h"

namespace hd::cpu {

// Fills contiguous `t` with values from Philox blocks starting at `first_block` of `gen`.
void fill_uniform(Tensor& t, double lo, double hi, const Generator& gen, uint64_t first_block);
void fill_normal(Tensor& t, double mean, double stddev, const Generator& gen,
                 uint64_t first_block);

}  // namespace hd::cpu
