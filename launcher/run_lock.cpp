// The run-folder lock (see run_lock.h for why flock plus a readable holder record).
#include "launcher/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <sstream>

namespace hd::launcher {
namespace {

namespace fs = std::filesystem;
using ::hd::detail::concat;

std::string this_host() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// The holder record: "key: value" lines (host, pid, job, started).
std::map<std::string, std::string> read_record(int fd) {
  std::string text;
  char buf[1024];
  for (off_t at = 0;;) {
    const ssize_t n = pread(fd, buf, sizeof buf, at);
    if (n <= 0) break;
    text.append(buf, size_t(n)), at += n;
  }
  std::map<std::string, std::string> out;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    const size_t colon = line.find(": ");
    if (colon != std::string::npos) out[line.substr(0, colon)] = line.substr(colon + 2);
  }
  return out;
}

std::string describe(const std::map<std::string, std::string>& r) {
  auto get = [&](const char* k, const char* absent) {
    auto it = r.find(k);
    return it == r.end() || it->second.empty() ? std::string(absent) : it->second;
  };
  if (r.empty()) return "a process that is just starting (its record is not written yet)";
  return concat(
      "host ", get("host", "?"), ", pid ", get("pid", "?"), ", ",
      r.count("job") && !r.at("job").empty() ? "job " + r.at("job") : "no scheduler job id",
      ", started ", get("started", "?"));
}

// A process with this pid runs on this machine (EPERM: it exists but is not ours). A zombie
// (dead, not yet reaped: common in containers whose init does not reap) counts as dead.
bool alive(const std::string& pid_text) {
  const long pid = std::strtol(pid_text.c_str(), nullptr, 10);
  if (pid <= 0 || (::kill(pid_t(pid), 0) != 0 && errno != EPERM)) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  const size_t paren = line.rfind(')');  // "pid (comm) S ...": comm may hold spaces
  return !(paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z');
}

}  // namespace

std::string scheduler_job_id() {
  for (const char* var : {"SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID", "FLUX_JOB_ID"}) {
    const char* v = std::getenv(var);
    if (v && *v) return concat(v, " (", var, ")");
  }
  return "";
}

std::unique_ptr<RunLock> RunLock::acquire(const fs::path& run_dir, std::string* notice) {
  if (notice) notice->clear();
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  HD_CHECK(!ec, "run_dir '", run_dir.string(), "' cannot be created: ", ec.message());
  const fs::path path = run_dir / kRunLockName;
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  HD_CHECK(fd >= 0, "cannot open the run-folder lock ", path.string(), ": ", std::strerror(errno));
  const int locked = ::flock(fd, LOCK_EX | LOCK_NB);
  const int err = errno;
  // Read after flock, so a busy message names the current holder (an empty record: it has just
  // taken the lock and not written it yet).
  const auto holder = read_record(fd);
  const std::string busy_message =
      concat("run_dir '", run_dir.string(), "' is locked by another job: ", describe(holder),
             " (lock file ", path.string(),
             "). Two jobs on one run folder would overwrite each other's checkpoints and "
             "metrics: wait for that job to end, stop it, or use another run_dir");
  if (locked != 0) {
    if (err == EWOULDBLOCK) {
      ::close(fd);
      throw RunLockBusy(busy_message);
    }
    // No flock on this file system: only a live holder on this host can be detected.
    if (holder.count("pid") && holder.count("host") && holder.at("host") == this_host() &&
        alive(holder.at("pid")) && holder.at("pid") != std::to_string(getpid())) {
      ::close(fd);
      throw RunLockBusy(busy_message);
    }
    if (notice)
      *notice =
          concat("the file system of run_dir '", run_dir.string(), "' refuses flock (",
                 std::strerror(err), "): the run-folder lock only detects a job on this host");
  } else if (!holder.empty() && notice) {
    // The lock was free, yet the record names a holder: it died without releasing it.
    const bool here = holder.count("host") && holder.at("host") == this_host();
    *notice = concat("run_dir '", run_dir.string(), "': stale lock of ", describe(holder), ": ",
                     here && holder.count("pid") && !alive(holder.at("pid"))
                         ? "that process is gone"
                         : "that process no longer holds the lock (it ended without releasing it)",
                     "; taking it over");
  }
  const std::string record =
      concat("host: ", this_host(), "\npid: ", getpid(), "\njob: ", scheduler_job_id(),
             "\nstarted: ", utc_now(), "\ncommand: hdtrain pretrain\n");
  if (::ftruncate(fd, 0) != 0 ||
      ::pwrite(fd, record.data(), record.size(), 0) != ssize_t(record.size()) || ::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error(
        concat("cannot write the run-folder lock ", path.string(), ": ", std::strerror(err)));
  }
  return std::unique_ptr<RunLock>(new RunLock(fd, path));
}

RunLock::~RunLock() {
  // An empty file means "released cleanly": the next job takes it without a stale-lock message.
  if (::ftruncate(fd_, 0) != 0) {
    // Nothing to do: the lock still goes with close(), the next job just reports it as stale.
  }
  ::close(fd_);
}

}  // namespace hd::launcher
