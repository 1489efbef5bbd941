// The stages of a staged run (`hdtrain run`, proto StageConfig): defaults, validation, the PS3
// stage's own run config, `--set stages.N.FIELD=VALUE` overrides and each stage's folder.
//
// Why a stage's fields are validated up front, all of them, before MPI starts: a pipeline runs
// for hours, and a typo in its last stage must not surface after the first stage has trained.
// Every message names the field as a user writes it, "stages[2].trainable", and the rule.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "proto/run_config.pb.h"

namespace hd::launcher {

inline const char* const kStageKinds = "ps3_pretrain, vilahd_align, vilahd_sft, eval";

bool is_vila_stage(const proto::StageConfig& s);  // vilahd_align or vilahd_sft

// Fills the stage defaults (trainable parts per kind, sft/mc paths under data.dir, max_length,
// grad_clip, max_look_close, vilahd.llm_preset/look_close_mode). After resolve_defaults.
void resolve_stage_defaults(proto::RunConfig& config);

// Throws hd::Error naming the first bad field ("config: stages[1].kind = 'sfft' is not one of
// ..."). world_size 0 skips the checks that need it.
void validate_stages(const proto::RunConfig& config, int world_size);

// The run config that `run_pretrain` runs for ps3_pretrain stage `index`: the `train` section
// with the stage's steps, global_batch, lr, warmup_steps, min_lr and stop_at_step; run_dir and
// the metrics file in the stage's folder; `init_from` as checkpoint.init_from.
proto::RunConfig ps3_stage_config(const proto::RunConfig& config, int index,
                                  const std::filesystem::path& stage_dir);

// run_dir/stages/<index, 2 digits>_<kind>.
std::filesystem::path stage_dir(const proto::RunConfig& config, int index);

// "stages.N.FIELD=VALUE" (N 0-based) sets one field of stage N; any other assignment goes to
// apply_override. Throws naming the argument.
void apply_run_override(proto::RunConfig& config, const std::string& assignment);

// read_config_file + overrides + resolve_defaults + resolve_stage_defaults + validate_stages.
proto::RunConfig load_staged_config(const std::string& path,
                                    const std::vector<std::string>& overrides, int world_size);

}  // namespace hd::launcher
