// One job per run folder: an exclusive lock on run_dir/hdtrain.lock, taken by rank 0 before the
// run touches the folder and held until the job ends.
//
// Why: two jobs on one run_dir (a requeued job whose old instance still runs, a copy-pasted
// launch) both train, delete each other's half-written .tmp checkpoints and interleave their
// metrics files; the damage shows up days later. The second job must stop at once and say who
// holds the folder.
//
// Why flock(2) on a file rather than "the file exists": the kernel drops a flock when its holder
// dies, however it dies (SIGKILL, node OOM), so a dead job never blocks the next one. The file's
// content (host, pid, job id, start time) is for people and messages: a lock file with content
// whose lock is free was left by a process that died without releasing it (a clean end empties
// the file), and the next job takes it over and says so. flock is coherent across nodes on local
// file systems, NFSv4 and most cluster file systems (Lustre needs the `flock` mount option); where
// flock is refused (ENOLCK), the lock falls back to the content: a live pid on this host holds it.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "autograd/error.h"

namespace hd::launcher {

inline constexpr const char* kRunLockName = "hdtrain.lock";

// Another process holds the run folder; what() names it (host, pid, job id, start time) and the
// lock file.
class RunLockBusy : public Error {
 public:
  using Error::Error;
};

// "4242 (SLURM_JOB_ID)" from the first scheduler variable set (Slurm, PBS, LSF, SGE, Flux), or ""
// when none is.
std::string scheduler_job_id();

class RunLock {
 public:
  // Creates run_dir if needed and takes run_dir/hdtrain.lock, writing this process's host, pid,
  // job id and start time into it. Throws RunLockBusy when another process holds it, hd::Error
  // when the file cannot be created. `notice` receives a message when a stale lock (left by a
  // dead process) was taken over or the file system refused flock; "" otherwise.
  static std::unique_ptr<RunLock> acquire(const std::filesystem::path& run_dir,
                                          std::string* notice = nullptr);
  ~RunLock();  // empties the file and releases the lock
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  RunLock(int fd, std::filesystem::path path) : fd_(fd), path_(std::move(path)) {}
  int fd_;
  std::filesystem::path path_;
};

}  // namespace hd::launcher
