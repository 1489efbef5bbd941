// The end of a run: evaluate the trained model on the held-out split and print what it learned
// (retrieval of local captions vs chance, share of ground-truth-box patches among the top-down
// selected patches vs a random pick).
//
// Why one rank evaluates a fresh, unsharded copy: retrieval ranks each caption against every
// held-out image, so splitting images across ranks would change the task (and the chance level);
// and a sharded model would need every rank in every forward. The copy costs one all-gather of
// the parameters (FSDP::full_parameters), which for the models evaluated on a CPU is small.
#pragma once

#include "parallel/fsdp.h"
#include "proto/run_config.pb.h"
#include "ps3/config.h"
#include "ps3/data/text.h"

namespace hd::launcher {

// Collective (the parameter all-gather); rank 0 evaluates and prints, the others return at once.
void evaluate_and_report(const proto::RunConfig& config, const ps3::PS3Config& model_config,
                         parallel::FSDP& fsdp, const data::Tokenizer& tokenizer,
                         parallel::ProcessGroup& pg);

}  // namespace hd::launcher
