// Broadcast of a list of tensors whose shapes only the root knows.
//
// ProcessGroup::broadcast needs every rank to hold a tensor of the right shape and dtype already.
// Data that one rank computed (a vision memo entry, a sample's maps) has shapes the others can
// only learn from it, so the root first broadcasts a header (count, then per tensor: defined,
// dtype, rank, dims) and then each tensor; receivers allocate from the header. Two extra small
// broadcasts per call: meant for per-record data exchanged once, not for per-step traffic.
#pragma once

#include <vector>

#include "autograd/tensor.h"
#include "parallel/process_group.h"

namespace hd::parallel {

// On `root`, `tensors` is sent (undefined entries allowed, kept undefined); elsewhere it is
// replaced by the root's list (fresh contiguous CPU tensors). Every rank must call it.
void broadcast_tensor_list(ProcessGroup& pg, std::vector<Tensor>& tensors, int root);

}  // namespace hd::parallel
