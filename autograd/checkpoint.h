// Activation checkpointing: trade compute for memory, one block at a time.
//
// checkpoint(body, x) runs body(x) without recording a graph, so none of the block's
// activations (attention scores, MLP hidden states, LayerNorm statistics) outlive the forward;
// the only thing kept is x. Its backward runs body(x) again with grad on and backpropagates the
// incoming gradient through that recomputed graph: the block's parameter gradients accumulate
// into their leaves exactly as in a plain run (their hooks fire, so DDP buckets and FSDP's
// reduce-scatter see the same arrivals), and x's gradient is handed on.
//
// Memory: a depth-L model keeps L block inputs plus one block's activations during backward,
// instead of L blocks' activations. Time: one extra forward per block (about +1/3 of a step).
//
// Contract (as PyTorch's reentrant checkpoint): body must be deterministic (no dropout, no RNG)
// and must depend on x and on parameters only; the recompute must see the same parameter
// values, so no optimizer step may run between forward and backward. Use it through a
// nn::UnitRunner (ops/nn/unit_runner.h) so models stay unaware of it.
#pragma once

#include <functional>

#include "autograd/tensor.h"

namespace hd {

// body(x) with its activations recomputed in backward. Under no_grad it is body(x).
Tensor checkpoint(const std::function<Tensor(const Tensor&)>& body, const Tensor& x);

}  // namespace hd
