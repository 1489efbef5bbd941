// FSDP wiring for PS3: which modules are units and how the model reaches them.
//
// Units: every text block and every vision block (PS3CLIP::sharding_units), then the root (the
// whole model: embeddings, selection modules, pooling head, logit scale/bias), which is not
// resharded after forward because pretrain_forward runs entirely inside it.
//
// Why this works although PS3 runs each vision block several times per step (stage 1, then
// once per look-close step, with the stage-1 K/V travelling inside the unit's output into stage
// 3): every call goes through FSDPUnit::forward (all-gather again if resharded, a backward
// pre-hook on that call's output, which re-gathers idempotently); a parameter's AccumulateGrad
// runs once per backward, after every use, so a unit's gradient count completes, and its
// parameters are freed and reduce-scattered, only after the last of its calls has been
// differentiated. tests/ps3/model/pretrain_mpi_test.cpp checks the result against unsharded
// training.
#pragma once

#include <memory>

#include "parallel/fsdp.h"
#include "ps3/pretrain.h"

namespace hd::ps3 {

// `model` must be initialised identically on every rank. Installs a unit runner on the model
// that routes each unit (and, from pretrain_forward, the model itself) through its FSDPUnit;
// the returned FSDP must outlive every later forward of the model (destroying it leaves the
// runner dangling: call model.set_unit_runner({}) first if the model lives on).
std::unique_ptr<parallel::FSDP> shard_ps3(PS3CLIP& model,
                                          std::shared_ptr<parallel::ProcessGroup> pg,
                                          parallel::FSDPOptions opts = {});

}  // namespace hd::ps3
