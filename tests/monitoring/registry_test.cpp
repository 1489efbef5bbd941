// The registry's naming rules and the text it serializes.
#include <gtest/gtest.h>

#include "autograd/error.h"
#include "monitoring/registry.h"

namespace hd::monitoring {
namespace {

TEST(MetricNames, AcceptsConventionalNames) {
  EXPECT_NO_THROW(check_metric_name("hdtrain_steps_total", MetricKind::counter));
  EXPECT_NO_THROW(check_metric_name("hdtrain_step_duration_seconds", MetricKind::histogram));
  EXPECT_NO_THROW(check_metric_name("hdtrain_memory_bytes", MetricKind::gauge));
  EXPECT_NO_THROW(check_metric_name("hdtrain_status", MetricKind::gauge));  // "_us" inside a word
}

TEST(MetricNames, RejectsBrokenConventions) {
  EXPECT_THROW(check_metric_name("steps_total", MetricKind::counter), Error);  // prefix
  EXPECT_THROW(check_metric_name("hdtrain_", MetricKind::gauge), Error);
  EXPECT_THROW(check_metric_name("hdtrain_Steps_total", MetricKind::counter), Error);
  EXPECT_THROW(check_metric_name("hdtrain_steps", MetricKind::counter), Error);  // no _total
  EXPECT_THROW(check_metric_name("hdtrain_loss_total", MetricKind::gauge), Error);
  EXPECT_THROW(check_metric_name("hdtrain_step_ms", MetricKind::gauge), Error);  // base units
  EXPECT_THROW(check_metric_name("hdtrain_step_milliseconds", MetricKind::histogram), Error);
  EXPECT_THROW(check_metric_name("hdtrain_heap_mb_used", MetricKind::gauge), Error);
  EXPECT_THROW(check_metric_name("hdtrain_x_bucket", MetricKind::histogram), Error);
}

TEST(MetricNames, ErrorNamesTheRule) {
  try {
    check_metric_name("hdtrain_steps", MetricKind::counter);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("_total"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("hdtrain_steps"), std::string::npos) << e.what();
  }
}

// prometheus-cpp writes the constant labels (run, rank, stage) first, then the metric's own.
TEST(MetricsRegistry, EverySeriesCarriesRunRankStage) {
  MetricsRegistry reg({.run = "r42", .rank = 3, .stage = "pretrain"});
  reg.counter("hdtrain_things_total", "things").Add({{"kind", "a"}}).Increment(2);
  reg.gauge("hdtrain_level", "level").Add({}).Set(1.5);
  const std::string text = reg.serialize();
  EXPECT_NE(text.find("# TYPE hdtrain_things_total counter"), std::string::npos) << text;
  EXPECT_NE(text.find("# HELP hdtrain_level level"), std::string::npos) << text;
  EXPECT_NE(
      text.find("hdtrain_things_total{rank=\"3\",run=\"r42\",stage=\"pretrain\",kind=\"a\"} 2"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find("hdtrain_level{rank=\"3\",run=\"r42\",stage=\"pretrain\"} 1.5"),
            std::string::npos)
      << text;
}

TEST(MetricsRegistry, SameNameSameKindIsOneFamily) {
  MetricsRegistry reg({});
  auto& a = reg.counter("hdtrain_x_total", "x");
  auto& b = reg.counter("hdtrain_x_total", "x");
  EXPECT_EQ(&a, &b);
  EXPECT_THROW(reg.gauge("hdtrain_x_total", "x"), Error);  // also breaks the _total rule
  reg.gauge("hdtrain_y", "y");
  EXPECT_THROW(reg.histogram("hdtrain_y", "y"), Error);  // kind clash
}

TEST(MetricsRegistry, HistogramSerializesBucketsSumAndCount) {
  MetricsRegistry reg({});
  auto& h = reg.histogram("hdtrain_step_duration_seconds", "t").Add({}, step_time_buckets());
  h.Observe(0.003);
  h.Observe(0.2);
  const std::string text = reg.serialize();
  EXPECT_NE(text.find("hdtrain_step_duration_seconds_bucket{"), std::string::npos);
  EXPECT_NE(text.find("le=\"0.005\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("le=\"+Inf\"} 2"), std::string::npos) << text;
  EXPECT_NE(
      text.find(
          "hdtrain_step_duration_seconds_count{rank=\"0\",run=\"default\",stage=\"train\"} 2"),
      std::string::npos)
      << text;
}

TEST(MetricsRegistry, RejectsBadRunLabels) {
  EXPECT_THROW(MetricsRegistry({.run = ""}), Error);
  EXPECT_THROW(MetricsRegistry({.run = "x", .rank = -1}), Error);
}

}  // namespace
}  // namespace hd::monitoring
