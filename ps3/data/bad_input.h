// What the data pipeline does with bad input: by default skip, count, and log once per file;
// with `strict`, throw. The count is what the monitoring issue exports as a metric.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <set>
#include <string>

namespace hd::data {

class BadInputLog {
 public:
  explicit BadInputLog(bool strict = false) : strict_(strict) {}
  // `where` names the file (and member / key / index); `reason` says what is wrong.
  // Throws hd::Error when strict; otherwise counts and logs the first report per `where`.
  void report(const std::string& where, const std::string& reason);
  int64_t count() const { return count_.load(); }
  bool strict() const { return strict_; }
  void set_quiet(bool quiet) { quiet_ = quiet; }  // tests silence stderr

 private:
  bool strict_;
  bool quiet_ = false;
  std::atomic<int64_t> count_{0};
  std::mutex mu_;
  std::set<std::string> logged_;
};

}  // namespace hd::data
