// How a model runs one of its sharding units (a transformer block, a text block, ...).
//
// Models call every unit through run_unit(runner, unit, x, body) instead of calling body(x)
// directly. With no runner installed that is just body(x). Data-parallel training installs a
// runner that routes the call through FSDPUnit::forward, which all-gathers the unit's parameters
// around the body and hooks the output for the backward all-gather: the model code stays free of
// parallel/ (ARCHITECTURE.md: model folders never include MPI or NCCL headers).
//
// A unit may be run several times in one step (PS3 runs each ViT block once for the low-res
// pass and once per look-close step); the runner must allow that.
//
// Activation checkpointing goes inside the runner's call, around the body (recomputed() below):
// FSDP then gathers the unit's parameters before the checkpoint node's backward, which is when
// the body runs again. A body given to recomputed() is called again during backward, so it must
// own what it captures (by value), and tensors it reads that need a gradient go in `side`.
#pragma once

#include <functional>
#include <utility>
#include <vector>

#include "autograd/checkpoint.h"
#include "autograd/module.h"

namespace hd::nn {

using UnitBody = std::function<Tensor(const Tensor&)>;
using UnitRunner = std::function<Tensor(const Module& unit, const Tensor& x, const UnitBody& body)>;

inline Tensor run_unit(const UnitRunner& runner, const Module& unit, const Tensor& x,
                       const UnitBody& body) {
  return runner ? runner(unit, x, body) : body(x);
}

// `body`, with its activations recomputed in backward when `recompute` is set.
inline UnitBody recomputed(bool recompute, UnitBody body) {
  if (!recompute) return body;
  return [body = std::move(body)](const Tensor& x) { return checkpoint(body, x); };
}

// A body that also reads `side`: tensors that may need gradients (PS3's low-res KV cache for a
// high-res block), which become inputs of the checkpoint so their gradients flow.
using UnitBodyWithSide = std::function<Tensor(const Tensor& x, const std::vector<Tensor>& side)>;
inline UnitBody recomputed(bool recompute, std::vector<Tensor> side, UnitBodyWithSide body) {
  if (!recompute) {
    return
        [side = std::move(side), body = std::move(body)](const Tensor& x) { return body(x, side); };
  }
  return [side = std::move(side), body = std::move(body)](const Tensor& x) {
    std::vector<Tensor> inputs = {x};
    inputs.insert(inputs.end(), side.begin(), side.end());
    return checkpoint(
        [body](const std::vector<Tensor>& in) {
          return body(in[0], std::vector<Tensor>(in.begin() + 1, in.end()));
        },
        inputs);
  };
}

}  // namespace hd::nn
