// FSDP wiring for VILA-HD, as ps3/parallelize.h does it for PS3: every LLM decoder layer and
// every PS3 block is a unit, then the root (embeddings, final norm, LM head, projector, prompt
// head, PS3's non-block parameters), kept unsharded through the step because
// VilaHdModel::forward runs entirely inside it.
//
// Units run several times per step: the LLM layers once for the top-down prompt pass (without
// gradient) and once for the real forward; the PS3 blocks for the prompt pass's low-res stage,
// the real stage 1 and each look-close step. FSDPUnit::forward allows repeated calls (see
// ps3/parallelize.h for why the gradient bookkeeping stays right); the no-grad calls record no
// backward hook, so they do not count towards a unit's gradient arrivals.
//
// Data parallelism: each rank computes its own samples' loss; FSDP averages gradients over
// ranks. That equals the loss of the whole batch on one rank when ranks hold equal numbers of
// label tokens and of boxed images (the LM loss is a token mean, the selection loss an image
// mean); tests/vilahd/vila_fsdp_mpi_test.cpp checks it against unsharded training.
#pragma once

#include <memory>

#include "parallel/fsdp.h"
#include "vilahd/vila_hd.h"

namespace hd::vilahd {

// `model` must be initialised identically on every rank. The returned FSDP must outlive every
// later forward (or call model.set_unit_runner({}) first).
std::unique_ptr<parallel::FSDP> shard_vila(VilaHdModel& model,
                                           std::shared_ptr<parallel::ProcessGroup> pg,
                                           parallel::FSDPOptions opts = {});

}  // namespace hd::vilahd
