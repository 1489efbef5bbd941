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
#pragma once

#include <functional>

#include "autograd/module.h"

namespace hd::nn {

using UnitBody = std::function<Tensor(const Tensor&)>;
using UnitRunner = std::function<Tensor(const Module& unit, const Tensor& x, const UnitBody& body)>;

inline Tensor run_unit(const UnitRunner& runner, const Module& unit, const Tensor& x,
                       const UnitBody& body) {
  return runner ? runner(unit, x, body) : body(x);
}

}  // namespace hd::nn
