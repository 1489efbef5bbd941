#include "monitoring/jsonl_writer.h"

#include <cerrno>
#include <cmath>
#include <cstring>

#include "autograd/error.h"

namespace hd::monitoring {

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += char(c);
        }
    }
  }
  return out + "\"";
}

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.9g", v);
  return buf;
}

// Unix time in microseconds. json_number's 9 significant digits are 10 s at today's ~1.7e9 s,
// too coarse to order or time steps; a double holds microseconds at this magnitude exactly enough.
std::string json_time(double unix_time) {
  if (!std::isfinite(unix_time)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.6f", unix_time);
  return buf;
}

JsonlWriter::JsonlWriter(const std::string& path, RunLabels labels)
    : file_(std::fopen(path.c_str(), "a")), labels_(std::move(labels)), path_(path) {
  HD_CHECK(file_ != nullptr, "JsonlWriter: cannot open '", path, "': ", std::strerror(errno));
}

JsonlWriter::~JsonlWriter() {
  std::fclose(file_);
}

std::string JsonlWriter::format(const StepReport& r, const RunLabels& labels, double unix_time) {
  std::string s =
      "{\"time\": " + json_time(unix_time) + ", \"run\": " + json_string(labels.run) +
      ", \"rank\": " + std::to_string(labels.rank) + ", \"stage\": " + json_string(labels.stage) +
      ", \"step\": " + std::to_string(r.step) + ", \"samples\": " + std::to_string(r.samples) +
      ", \"tokens\": " + std::to_string(r.tokens) + ", \"patches\": " + std::to_string(r.patches) +
      ", \"loss\": {";
  for (size_t i = 0; i < r.losses.size(); ++i) {
    s += (i ? ", " : "") + json_string(r.losses[i].first) + ": " + json_number(r.losses[i].second);
  }
  s += "}";
  if (!r.selection.empty()) {
    s += ", \"selection\": {";
    for (size_t i = 0; i < r.selection.size(); ++i)
      s += (i ? ", " : "") + json_string(r.selection[i].first) + ": " +
           json_number(r.selection[i].second);
    s += "}";
  }
  s += ", \"lr\": " + json_number(r.learning_rate) +
       ", \"grad_norm\": " + json_number(r.grad_norm) +
       ", \"step_seconds\": " + json_number(r.timing.total_seconds) + ", \"phase_seconds\": {";
  for (size_t p = 0; p < kPhaseCount; ++p) {
    s += json_string(phase_name(Phase(p))) + ": " + json_number(r.timing.phase_seconds[p]) + ", ";
  }
  s += "\"other\": " + json_number(r.timing.other_seconds()) + "}}";
  return s;
}

void JsonlWriter::write(const StepReport& report) {
  std::string line = format(report, labels_, unix_time_seconds()) + "\n";
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fflush(file_);
}

void JsonlWriter::write_event(const std::string& kind, const std::string& fields_json) {
  std::string line =
      "{\"time\": " + json_time(unix_time_seconds()) + ", \"run\": " + json_string(labels_.run) +
      ", \"rank\": " + std::to_string(labels_.rank) + ", \"event\": " + json_string(kind) +
      (fields_json.empty() ? "" : ", " + fields_json) + "}\n";
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fflush(file_);
}

}  // namespace hd::monitoring
