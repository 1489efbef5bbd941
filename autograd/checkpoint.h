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
// and must depend only on its inputs, on parameters and on tensors that need no gradient (masks,
// rotary tables); a tensor it reads that needs a gradient (PS3's low-res KV cache in a high-res
// block) must be one of its inputs, or its gradient would be lost. The body is called again
// during backward, so it owns what it captures (by value; no references to the caller's locals).
// The recompute must see the same parameter values, so no optimizer step may run between forward
// and backward. Models call it through nn::recomputed (ops/nn/unit_runner.h), inside the unit's
// FSDP forward: the recompute then runs after the unit's pre-backward all-gather.
#pragma once

#include <functional>

#include "autograd/tensor.h"

namespace hd {

// body(x) with its activations recomputed in backward. Under no_grad it is body(x).
Tensor checkpoint(const std::function<Tensor(const Tensor&)>& body, const Tensor& x);

// The same for a body of several inputs; each input that needs a gradient gets it.
using MultiInputBody = std::function<Tensor(const std::vector<Tensor>&)>;
Tensor checkpoint(const MultiInputBody& body, const std::vector<Tensor>& inputs);

// Whether `output` came out of checkpoint() with a graph recorded: its backward is a nested
// backward pass of its own, so its parameters' gradient hooks fire once for it (FSDP counts
// gradient arrivals with this).
bool is_recomputed_in_backward(const Tensor& output);

}  // namespace hd
