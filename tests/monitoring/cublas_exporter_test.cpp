// Build notes P1: prometheus-cpp's civetweb Exposer cannot start threads in a process that links
// cuBLAS (libcublasLt's 92 KiB of static TLS does not fit civetweb's 100 KiB thread stacks). This
// binary links cuBLAS (and calls into it, so the library is really loaded) and checks that our
// MetricsServer starts and serves /metrics anyway. No GPU is needed: cublasGetProperty works
// without a driver.
#include <cublas_v2.h>
#include <gtest/gtest.h>
#include <link.h>

#include <cstring>

#include "monitoring/metrics_server.h"
#include "monitoring/training_metrics.h"
#include "tests/monitoring/http_client.h"

namespace hd::monitoring {
namespace {

bool cublaslt_loaded() {
  bool found = false;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        if (info->dlpi_name && std::strstr(info->dlpi_name, "libcublasLt")) {
          *static_cast<bool*>(data) = true;
        }
        return 0;
      },
      &found);
  return found;
}

TEST(CublasExporter, ServesMetricsInAProcessThatLinksCublas) {
  int major = -1;
  ASSERT_EQ(cublasGetProperty(MAJOR_VERSION, &major), CUBLAS_STATUS_SUCCESS);
  EXPECT_GT(major, 0);
  ASSERT_TRUE(cublaslt_loaded()) << "libcublasLt is not loaded: the test would prove nothing";

  MetricsRegistry reg({.run = "cublas"});
  TrainingMetrics metrics(reg, {});
  StepReport rep;
  rep.step = 7;
  rep.losses = {{"total", 0.25}};
  metrics.on_step(rep);
  MetricsServerConfig c;
  c.port_base = 0;
  MetricsServer server(c, [&] { return reg.serialize(); });
  std::string r = testing::http_get(server.port());
  EXPECT_NE(r.find("200 OK"), std::string::npos) << r;
  EXPECT_NE(r.find("hdtrain_step{rank=\"0\",run=\"cublas\",stage=\"train\"} 7"), std::string::npos)
      << r;
}

}  // namespace
}  // namespace hd::monitoring
