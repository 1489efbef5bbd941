// A run's configuration: protobuf text files (proto/run_config.proto, configs/*.textproto),
// command-line overrides and validation.
//
// Why every error names a place: a training job usually dies minutes after launch on a cluster,
// so a message must say exactly what to fix. Parse errors carry "FILE:LINE:COL:" (1-based, as
// compilers print them, so editors jump there), an unknown field suggests the closest known name,
// overrides name the `--set` argument, and validation names the dotted field and the rule.
//
// Order of application: file -> `--set` overrides (left to right) -> defaults for what is still
// unset (resolve_defaults) -> validate. The resolved config (to_text) is what the run stores in
// run_dir/config.textproto and in every checkpoint manifest, so a run can be reproduced from it.
#pragma once

#include <string>
#include <vector>

#include "proto/run_config.pb.h"

namespace hd::launcher {

// Parses protobuf text format; `source` names the text in errors ("configs/demo.textproto").
// Throws hd::Error listing every problem as "source:line:col: message".
proto::RunConfig parse_config_text(const std::string& text, const std::string& source);
// Reads and parses `path` (errors name the path when it cannot be read).
proto::RunConfig read_config_file(const std::string& path);

// Applies one "dotted.path=value" assignment, e.g. "train.steps=20",
// "model.vision.scales=756,1512" (a repeated field takes a comma list, "[]" clears it).
// Throws hd::Error naming the argument, the unknown component or the expected type.
void apply_override(proto::RunConfig& config, const std::string& assignment);

// Fills every absent optional field with its documented default (proto/run_config.proto) and
// derives the data paths from data.dir.
void resolve_defaults(proto::RunConfig& config);

// Throws hd::Error naming the first field that breaks a rule ("train.global_batch = 6 is not
// divisible by world size 4 x train.micro_batches 1"). world_size 0 skips the checks that need
// it. Expects resolve_defaults to have run.
void validate_config(const proto::RunConfig& config, int world_size);

// train.activation_checkpointing: which towers recompute their blocks in backward. Throws naming
// the field and the unknown name.
struct RecomputedTowers {
  bool vision = false, text = false, llm = false;
};
RecomputedTowers parse_activation_checkpointing(const std::string& list);

// Protobuf text of `config` (what the run stores).
std::string to_text(const proto::RunConfig& config);

// read_config_file + overrides + resolve_defaults + validate_config(world_size).
proto::RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides,
                                 int world_size);

// For tools that only build and run the model (`ps3 encode`, `ps3 eval`): read_config_file +
// overrides + resolve_defaults like load_run_config, but checks only what such a tool reads
// (model.preset, eval.look_close_steps), so a config with no run_dir, data or train section works;
// the model shape itself is checked when it is built (to_ps3_config) and data.tokenizer when it is
// needed.
proto::RunConfig load_model_config(const std::string& path,
                                   const std::vector<std::string>& overrides);

}  // namespace hd::launcher
