// TrainingMetrics exports every series the dashboard and alerts use, with the right values.
#include <gtest/gtest.h>

#include <cmath>
#include <thread>

#include "autograd/error.h"
#include "autograd/tensor.h"
#include "monitoring/monitor.h"
#include "monitoring/step_timer.h"
#include "monitoring/training_metrics.h"

namespace hd::monitoring {
namespace {

bool has(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

TEST(TrainingMetrics, ExportsTheFullMetricSetBeforeTheFirstStep) {
  MetricsRegistry reg({.run = "r", .rank = 1});
  TrainingMetrics m(reg, {.world_size = 2, .local_rank = 1, .total_steps = 100});
  const std::string t = reg.serialize();
  for (const char* name : {"hdtrain_steps_total",
                           "hdtrain_step{",
                           "hdtrain_samples_total",
                           "hdtrain_tokens_total",
                           "hdtrain_patches_total",
                           "hdtrain_loss{",
                           "hdtrain_learning_rate",
                           "hdtrain_grad_norm",
                           "hdtrain_step_duration_seconds_bucket",
                           "phase=\"data_wait\"}",
                           "stage=\"train\",phase=\"communication\"}",
                           "hdtrain_last_step_phase_seconds",
                           "op=\"all_reduce\"}",
                           "hdtrain_collective_seconds_total",
                           "device=\"cpu\",kind=\"peak\"}",
                           "hdtrain_checkpoints_total{",
                           "result=\"failed\"",
                           "hdtrain_checkpoint_duration_seconds_bucket",
                           "hdtrain_samples_skipped_total{",
                           "hdtrain_nonfinite_losses_total",
                           "hdtrain_last_step_timestamp_seconds",
                           "hdtrain_build_info{",
                           "hdtrain_run_info{",
                           "hdtrain_training_active",
                           "hdtrain_world_size",
                           "hdtrain_target_steps"}) {
    EXPECT_TRUE(has(t, name)) << name;
  }
  EXPECT_TRUE(has(t, "world_size=\"2\"")) << t;
}

TEST(TrainingMetrics, OnStepUpdatesCountersGaugesAndHeartbeat) {
  MetricsRegistry reg({});
  TrainingMetrics m(reg, {.loss_terms = {"total", "contrastive_global"}});
  StepTimer timer;
  {
    auto p = timer.phase(Phase::forward);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  StepReport r;
  r.step = 41;
  r.samples = 32;
  r.tokens = 1000;
  r.patches = 196;
  r.losses = {{"total", 2.5}, {"contrastive_global", 1.25}, {"selection_dice", 0.5}};
  r.learning_rate = 1e-4;
  r.grad_norm = 3.0;
  r.timing = timer.finish();
  const double before = unix_time_seconds();
  EXPECT_TRUE(m.on_step(r));
  r.step = 42;
  EXPECT_TRUE(m.on_step(r));
  const std::string t = reg.serialize();
  const std::string lbl = "rank=\"0\",run=\"default\",stage=\"train\"";
  EXPECT_TRUE(has(t, "hdtrain_steps_total{" + lbl + "} 2")) << t;
  EXPECT_TRUE(has(t, "hdtrain_step{" + lbl + "} 42")) << t;
  EXPECT_TRUE(has(t, "hdtrain_samples_total{" + lbl + "} 64")) << t;
  EXPECT_TRUE(has(t, "hdtrain_tokens_total{" + lbl + "} 2000")) << t;
  EXPECT_TRUE(has(t, "hdtrain_loss{" + lbl + ",term=\"selection_dice\"} 0.5")) << t;
  EXPECT_TRUE(has(t, "hdtrain_learning_rate{" + lbl + "} 0.0001")) << t;
  EXPECT_TRUE(has(t, "hdtrain_step_duration_seconds_count{" + lbl + "} 2")) << t;
  // The heartbeat moved to "now".
  const size_t p = t.find("hdtrain_last_step_timestamp_seconds{" + lbl + "} ");
  ASSERT_NE(p, std::string::npos);
  const double hb = std::stod(t.substr(t.find("} ", p) + 2));
  EXPECT_GE(hb, before - 1);
  EXPECT_LE(hb, unix_time_seconds() + 1);
}

TEST(TrainingMetrics, CountsNonFiniteLossesCheckpointsCollectivesAndSkips) {
  MetricsRegistry reg({});
  TrainingMetrics m(reg, {});
  StepReport r;
  r.losses = {{"total", NAN}};
  EXPECT_FALSE(m.on_step(r));
  r.losses = {{"total", INFINITY}};
  EXPECT_FALSE(m.on_step(r));
  m.on_checkpoint(1000, 2.0, true);
  m.on_checkpoint(0, 1.0, false);
  m.on_collective("all_gather", 4096, 0.5);
  m.on_collective("all_gather", 4096, 0.25);
  m.on_skipped_samples("decode_error", 3);
  m.set_memory("cuda:0", {.current_bytes = 10, .peak_bytes = 20, .cached_bytes = 5});
  m.set_active(false);
  const std::string t = reg.serialize();
  const std::string lbl = "rank=\"0\",run=\"default\",stage=\"train\"";
  EXPECT_TRUE(has(t, "hdtrain_nonfinite_losses_total{" + lbl + "} 2")) << t;
  EXPECT_TRUE(has(t, "hdtrain_checkpoints_total{" + lbl + ",result=\"ok\"} 1")) << t;
  EXPECT_TRUE(has(t, "hdtrain_checkpoints_total{" + lbl + ",result=\"failed\"} 1")) << t;
  EXPECT_TRUE(has(t, "hdtrain_checkpoint_bytes_total{" + lbl + "} 1000")) << t;
  EXPECT_TRUE(has(t, "hdtrain_collective_bytes_total{" + lbl + ",op=\"all_gather\"} 8192")) << t;
  EXPECT_TRUE(has(t, "hdtrain_collective_seconds_total{" + lbl + ",op=\"all_gather\"} 0.75")) << t;
  EXPECT_TRUE(has(t, "hdtrain_collective_calls_total{" + lbl + ",op=\"all_gather\"} 2")) << t;
  EXPECT_TRUE(has(t, "hdtrain_samples_skipped_total{" + lbl + ",reason=\"decode_error\"} 3")) << t;
  EXPECT_TRUE(has(t, "hdtrain_memory_bytes{" + lbl + ",device=\"cuda:0\",kind=\"peak\"} 20")) << t;
  EXPECT_TRUE(has(t, "hdtrain_training_active{" + lbl + "} 0")) << t;
}

// The value of the first sample line of `series` (name{labels} value), or NaN.
double sample(const std::string& text, const std::string& series) {
  const size_t at = text.find(series);
  if (at == std::string::npos) return NAN;
  return std::strtod(text.c_str() + at + series.size(), nullptr);
}

// A Monitor told the model's device exports that device's allocator beside the host's, at start
// and after each step. cpu:1 (a second host device, autograd/device.h) shares the host
// allocator, so its figures are the host's: what a GPU run exports under "cuda:N".
TEST(Monitor, ExportsTheModelDevicesMemoryBesideTheHosts) {
  const Device second{DeviceType::cpu, 1};
  MonitorConfig mc;
  mc.serve = false, mc.progress = false;
  mc.accelerator = second;
  Monitor mon(mc);
  const std::string lbl = "rank=\"0\",run=\"default\",stage=\"train\"";
  const std::string current =
      "hdtrain_memory_bytes{" + lbl + ",device=\"cpu:1\",kind=\"current\"} ";
  const std::string peak = "hdtrain_memory_bytes{" + lbl + ",device=\"cpu:1\",kind=\"peak\"} ";
  EXPECT_FALSE(std::isnan(sample(mon.registry().serialize(), current)));  // before any step

  Tensor held = Tensor::empty({1 << 20}, DType::f32, second);  // 4 MiB on the device
  StepReport r;
  r.losses = {{"total", 1.0}};
  mon.on_step(r);
  const MemoryStats stats = allocator_for(second).stats();
  const std::string t = mon.registry().serialize();
  EXPECT_GE(sample(t, current), double(4 << 20)) << t;
  EXPECT_EQ(sample(t, current), double(stats.current_bytes)) << t;
  EXPECT_EQ(sample(t, peak), double(stats.peak_bytes)) << t;
  EXPECT_TRUE(has(t, "device=\"cpu\",kind=\"current\"")) << t;  // the host's too

  MonitorConfig host_only;
  host_only.serve = false, host_only.progress = false;
  Monitor plain(host_only);
  plain.on_step(r);
  EXPECT_FALSE(has(plain.registry().serialize(), "device=\"cpu:1\"")) << "no device series";
}

TEST(TrainingMetrics, RejectsUnboundedLabelValues) {
  MetricsRegistry reg({});
  TrainingMetrics m(reg, {});
  StepReport r;
  r.losses = {{"Sample 123 loss", 1.0}};
  EXPECT_THROW(m.on_step(r), Error);
  EXPECT_THROW(m.on_collective("", 1, 1), Error);
}

TEST(StepTimer, PhasesAccumulateAndOtherIsTheRemainder) {
  StepTimer timer;
  {
    auto p = timer.phase(Phase::data_wait);
    std::this_thread::sleep_for(std::chrono::milliseconds(4));
  }
  {
    auto p = timer.phase(Phase::backward);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    p.stop();
    p.stop();                                                   // idempotent
    std::this_thread::sleep_for(std::chrono::milliseconds(3));  // counts as "other"
  }
  timer.add(Phase::backward, 0.001);
  StepTiming t = timer.finish();
  EXPECT_GE(t[Phase::data_wait], 0.004);
  EXPECT_GE(t[Phase::backward], 0.003);
  EXPECT_GE(t.other_seconds(), 0.002);
  double sum = t.other_seconds();
  for (double s : t.phase_seconds) sum += s;
  EXPECT_NEAR(sum, t.total_seconds, 1e-9 + 0.001);  // the 0.001 added by hand overlaps "other"
  EXPECT_STREQ(phase_name(Phase::communication), "communication");
  timer.restart();
  EXPECT_EQ(timer.finish()[Phase::data_wait], 0.0);
}

}  // namespace
}  // namespace hd::monitoring
