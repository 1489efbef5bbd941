// FSDP for a model that calls its units through nn::run_unit (ops/nn/unit_runner.h): PS3 and
// VILA-HD wire themselves the same way, so the wiring lives here once.
//
// Each unit gets its own FSDPUnit (one all-gather / reduce-scatter per unit), then the root takes
// every parameter left (embeddings, heads, small modules). The root is not resharded after its
// forward because the model's whole step runs inside it (the model routes its step through
// run_unit(runner, *this, ...)); its parameters stay gathered from forward to backward. The
// returned runner routes a call on any of these modules through its FSDPUnit and refuses a
// module that was not sharded as a unit (a model whose sharding_units() forgot one).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "ops/nn/unit_runner.h"
#include "parallel/fsdp.h"

namespace hd::parallel {

struct UnitSharding {
  std::unique_ptr<FSDP> fsdp;
  nn::UnitRunner runner;  // install on the model; the FSDP must outlive its use
};

// `root` must be initialised identically on every rank. `model_name` names the model in the
// runner's error.
UnitSharding shard_by_units(Module& root, const std::vector<const Module*>& units,
                            std::shared_ptr<ProcessGroup> pg, const FSDPOptions& opts,
                            const std::string& model_name);

}  // namespace hd::parallel
