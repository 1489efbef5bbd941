// The run-folder lock (launcher/run_lock.h) in one process: two acquisitions are two open file
// descriptions, which flock treats like two processes. The end-to-end cases (a second mpirun job,
// a lock left by SIGKILLed ranks) are in reliability_e2e.py.
#include "launcher/run_lock.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace hd::launcher {
namespace {
namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("hd_run_lock_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  return d;
}

std::string read(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string hostname() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

TEST(RunLock, SecondHolderIsRefusedNamingTheFirst) {
  const fs::path dir = fresh_dir("busy");
  setenv("SLURM_JOB_ID", "777", 1);
  std::string notice = "x";
  auto lock = RunLock::acquire(dir, &notice);
  unsetenv("SLURM_JOB_ID");
  EXPECT_EQ(notice, "");  // a new folder: nothing to take over
  EXPECT_EQ(lock->path(), dir / kRunLockName);
  const std::string record = read(lock->path());
  EXPECT_NE(record.find("pid: " + std::to_string(getpid()) + "\n"), std::string::npos) << record;
  EXPECT_NE(record.find("job: 777 (SLURM_JOB_ID)\n"), std::string::npos) << record;
  try {
    RunLock::acquire(dir);
    FAIL() << "a second acquisition succeeded";
  } catch (const RunLockBusy& e) {
    const std::string msg = e.what();
    for (const std::string& want :
         {"run_dir '" + dir.string() + "' is locked by another job: host " + hostname(),
          ", pid " + std::to_string(getpid()) + ", job 777 (SLURM_JOB_ID), started ",
          "(lock file " + (dir / kRunLockName).string() + ")"})
      EXPECT_NE(msg.find(want), std::string::npos) << msg << "\nlacks: " << want;
  }
  lock.reset();
  EXPECT_EQ(read(dir / kRunLockName), "");  // released cleanly
  auto again = RunLock::acquire(dir, &notice);
  EXPECT_EQ(notice, "");  // a clean release is not a stale lock
  fs::remove_all(dir);
}

TEST(RunLock, StaleLockOfADeadProcessIsTakenOver) {
  const fs::path dir = fresh_dir("stale");
  fs::create_directories(dir);
  const pid_t child = fork();
  if (child == 0) _exit(0);
  waitpid(child, nullptr, 0);  // a pid that surely belongs to no process now
  std::ofstream(dir / kRunLockName)
      << "host: " << hostname() << "\npid: " << child << "\njob: \nstarted: 2024-01-01T00:00:00Z\n";
  std::string notice;
  auto lock = RunLock::acquire(dir, &notice);
  EXPECT_NE(notice.find("stale lock of host " + hostname() + ", pid " + std::to_string(child) +
                        ", no scheduler job id, started 2024-01-01T00:00:00Z: that process is "
                        "gone; taking it over"),
            std::string::npos)
      << notice;
  EXPECT_NE(read(dir / kRunLockName).find("pid: " + std::to_string(getpid())), std::string::npos);
  lock.reset();
  fs::remove_all(dir);
}

TEST(RunLock, UncreatableFolderIsAnError) {
  const fs::path file = fresh_dir("file");
  std::ofstream(file) << "x";
  try {
    RunLock::acquire(file / "run");
    FAIL() << "acquired under a regular file";
  } catch (const RunLockBusy&) {
    FAIL() << "reported as busy";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot be created"), std::string::npos) << e.what();
  }
  fs::remove(file);
}

}  // namespace
}  // namespace hd::launcher
