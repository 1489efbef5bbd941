// A JSON-lines file of per-step metrics for offline analysis (pandas.read_json(lines=True)):
// one object per step with the time, run, rank, step, losses, lr, grad norm and the step-time
// split. Each line is written with one fwrite and flushed, so a crashed run keeps every
// completed step and a reader never sees half a line.
#pragma once

#include <cstdio>
#include <string>

#include "monitoring/registry.h"
#include "monitoring/training_metrics.h"

namespace hd::monitoring {

class JsonlWriter {
 public:
  // Opens (appends to) `path`; throws hd::Error when it cannot.
  JsonlWriter(const std::string& path, RunLabels labels);
  ~JsonlWriter();
  JsonlWriter(const JsonlWriter&) = delete;
  JsonlWriter& operator=(const JsonlWriter&) = delete;

  void write(const StepReport& report);
  // An event that is not a step: {"event": kind, ...fields}. `fields_json` is a JSON object body
  // without braces, e.g. "\"bytes\": 12" (may be empty).
  void write_event(const std::string& kind, const std::string& fields_json);
  static std::string format(const StepReport& report, const RunLabels& labels, double unix_time);

 private:
  std::FILE* file_;
  RunLabels labels_;
  std::string path_;
};

// "x" -> "\"x\"" with JSON escapes.
std::string json_string(const std::string& s);
// A number, or null for NaN/inf (JSON has no NaN).
std::string json_number(double v);
// Unix time with microseconds ("time" of every line), or null.
std::string json_time(double unix_time);

}  // namespace hd::monitoring
