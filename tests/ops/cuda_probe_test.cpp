// Device discovery must work on any machine: with a GPU it finds it, without one it reports
// zero devices and why, and never throws.
#include <gtest/gtest.h>

#ifdef HD_HAVE_CUDA
#include "ops/cuda/device_probe.h"

TEST(CudaProbe, ReportsDevicesOrAReason) {
  hd::cuda::DeviceProbe probe = hd::cuda::probe_devices();
  EXPECT_GT(probe.runtime_version, 0);
  if (probe.device_count == 0) {
    EXPECT_FALSE(probe.reason.empty());
    std::printf("no GPU here: %s\n", probe.reason.c_str());
  } else {
    EXPECT_TRUE(probe.reason.empty());
  }
  // A second probe gives the same answer (the sticky error was cleared).
  EXPECT_EQ(hd::cuda::probe_devices().device_count, probe.device_count);
}
#else
TEST(CudaProbe, BuiltWithoutCuda) {
  GTEST_SKIP() << "this build has HD_CUDA=OFF (no nvcc found at configure time)";
}
#endif
