// What a run needs on disk before its first step: the dataset (synthesized when configured and
// absent), the tokenizer (trained on the training captions when absent) and the run folder with
// the resolved config.
//
// Why rank 0 alone prepares and the others poll the file system instead of waiting in a
// barrier: generating a 4K dataset can take longer than the collective watchdog allows a
// barrier to wait (300 s). If rank 0 fails, run_or_abort ends the job, so nobody polls forever.
// Why everything is written under a temporary name and renamed: a job killed while generating
// must not leave a half dataset that the next run would take for a complete one, and an existing
// dataset, tokenizer or run folder is never overwritten.
#pragma once

#include <string>

#include <memory>

#include "launcher/run_lock.h"
#include "parallel/process_group.h"
#include "proto/run_config.pb.h"

namespace hd::launcher {

// Collective. Rank 0 synthesizes data.dir (when data.synthesize.enabled and data.train_dir does
// not exist), trains data.tokenizer when it does not exist, creates run_dir and writes
// run_dir/config.textproto (the resolved config; a resumed run keeps the first one and writes
// config.resumed.textproto). Every rank returns once the files are there. Throws hd::Error naming
// the missing path when data.train_dir is absent and synthesis is off.
void prepare_run(const proto::RunConfig& config, const std::string& config_text,
                 parallel::ProcessGroup& pg);

// Collective: rank 0 takes the run-folder lock (held in `lock` until the job ends) and every rank
// learns whether it got it. False: another job holds run_dir, or it cannot be created (rank 0
// has said which, as "hdtrain <command>: error: ...").
bool lock_run_dir(const std::string& run_dir, parallel::ProcessGroup& pg,
                  std::unique_ptr<RunLock>& lock, const std::string& command);

}  // namespace hd::launcher
