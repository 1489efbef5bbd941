// Console progress (terminal and plain modes), the JSON-lines file and the file_sd writer.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "autograd/error.h"
#include "monitoring/console.h"
#include "monitoring/discovery.h"
#include "monitoring/jsonl_writer.h"

namespace hd::monitoring {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "hd_mon_" + std::to_string(::getpid()) + "_" + name;
}

TEST(Progress, FormatsStepLossThroughputAndEta) {
  EXPECT_EQ(ProgressReporter::format_line(50, 200, 1.23456, 128.0, 3725),
            "step 50/200 (25.0%) | loss 1.235 | 128.0 samples/s | ETA 1h02m05s");
  EXPECT_EQ(ProgressReporter::format_line(7, 0, 0.5, 3.25, NAN),
            "step 7 | loss 0.5 | 3.2 samples/s");
  EXPECT_EQ(format_duration(65), "1m05s");
  EXPECT_EQ(format_duration(NAN), "?");
}

TEST(Progress, PlainModePrintsPeriodicLines) {
  const std::string path = temp_path("plain.txt");
  std::FILE* f = std::fopen(path.c_str(), "w");
  ProgressReporter p(
      {.total_steps = 10, .log_interval_seconds = 0, .mode = ProgressConfig::Mode::automatic},
      f);  // a file: not a terminal
  EXPECT_FALSE(p.is_terminal());
  for (int s = 0; s < 3; ++s) p.update(s, 1.0, 8);
  p.finish();
  std::fclose(f);
  const std::string text = read_file(path);
  EXPECT_EQ(text.find('\r'), std::string::npos) << text;
  EXPECT_NE(text.find("step 2/10"), std::string::npos) << text;
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 4) << text;  // 3 updates + finish
}

TEST(Progress, TerminalModeRedrawsInPlace) {
  const std::string path = temp_path("tty.txt");
  std::FILE* f = std::fopen(path.c_str(), "w");
  ProgressReporter p(
      {.total_steps = 10, .redraw_interval_seconds = 0, .mode = ProgressConfig::Mode::terminal}, f);
  for (int s = 0; s < 3; ++s) p.update(s, 1.0, 8);
  p.finish();
  std::fclose(f);
  const std::string text = read_file(path);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\r'), 4) << text;
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;  // only the final newline
  EXPECT_NE(text.find("\x1b[K"), std::string::npos);
}

// Under mpirun isatty() sees OpenMPI's pseudo-terminal: HD_PROGRESS decides in automatic mode.
TEST(Progress, EnvironmentOverridesTheTerminalCheck) {
  const std::string path = temp_path("env.txt");
  std::FILE* f = std::fopen(path.c_str(), "w");
  setenv("HD_PROGRESS", "terminal", 1);
  EXPECT_TRUE(ProgressReporter({.mode = ProgressConfig::Mode::automatic}, f).is_terminal());
  EXPECT_FALSE(ProgressReporter({.mode = ProgressConfig::Mode::plain}, f).is_terminal());
  setenv("HD_PROGRESS", "plain", 1);
  EXPECT_FALSE(ProgressReporter({.mode = ProgressConfig::Mode::automatic}, f).is_terminal());
  EXPECT_TRUE(ProgressReporter({.mode = ProgressConfig::Mode::terminal}, f).is_terminal());
  setenv("HD_PROGRESS", "fancy", 1);
  try {
    ProgressReporter p({.mode = ProgressConfig::Mode::automatic}, f);
    ADD_FAILURE() << "HD_PROGRESS=fancy was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("HD_PROGRESS must be 'plain' or 'terminal', got 'fancy'"),
              std::string::npos)
        << e.what();
  }
  unsetenv("HD_PROGRESS");
  std::fclose(f);
}

TEST(Jsonl, OneObjectPerLine) {
  const std::string path = temp_path("m.jsonl");
  std::remove(path.c_str());
  {
    JsonlWriter w(path, {.run = "r\"1", .rank = 2});
    StepReport r;
    r.step = 5;
    r.samples = 4;
    r.losses = {{"total", 0.5}, {"lm", NAN}};
    r.learning_rate = 0.001;
    r.timing.total_seconds = 0.25;
    r.timing.phase_seconds[size_t(Phase::forward)] = 0.1;
    w.write(r);
    w.write_event("checkpoint", "\"bytes\": 12");
  }
  const std::string text = read_file(path);
  ASSERT_EQ(std::count(text.begin(), text.end(), '\n'), 2) << text;
  EXPECT_NE(text.find("\"run\": \"r\\\"1\", \"rank\": 2"), std::string::npos) << text;
  EXPECT_NE(text.find("\"loss\": {\"total\": 0.5, \"lm\": null}"), std::string::npos) << text;
  EXPECT_NE(text.find("\"forward\": 0.1"), std::string::npos) << text;
  EXPECT_NE(text.find("\"other\": 0.15"), std::string::npos) << text;
  EXPECT_NE(text.find("\"event\": \"checkpoint\", \"bytes\": 12}"), std::string::npos) << text;
  EXPECT_THROW(JsonlWriter("/nonexistent-dir/x.jsonl", {}), Error);
}

TEST(FileSd, WritesOneTargetPerRankAtomically) {
  const auto targets = rank_targets({"127.0.0.1", "node2"}, 2, 9470, "run7");
  ASSERT_EQ(targets.size(), 4u);
  EXPECT_EQ(targets[3].host, "node2");
  EXPECT_EQ(targets[3].port, 9471);
  const std::string path = temp_path("targets.json");
  write_file_sd(path, targets);
  const std::string text = read_file(path);
  EXPECT_EQ(text, file_sd_json(targets));
  EXPECT_NE(text.find("{\"targets\": [\"node2:9471\"], \"labels\": {\"run\": \"run7\"}}"),
            std::string::npos)
      << text;
  EXPECT_EQ(access((path + ".tmp." + std::to_string(getpid())).c_str(), F_OK), -1);
  EXPECT_THROW(write_file_sd("/nonexistent-dir/t.json", targets), Error);
  EXPECT_THROW(rank_targets({"h"}, 0, 9470, "r"), Error);
}

}  // namespace
}  // namespace hd::monitoring
