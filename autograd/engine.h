// The backward engine: runs the graph behind `roots` in reverse topological order.
#pragma once

#include <vector>

#include "autograd/node.h"

namespace hd {

// Computes gradients of `roots` (each seeded with the matching entry of `grads`, or with 1 for
// a scalar root when that entry is undefined) and accumulates them into the leaves.
// Without retain_graph, every node's saved tensors are freed as soon as it has run, and a
// second backward through the same nodes throws.
void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads,
                  bool retain_graph);

}  // namespace hd
