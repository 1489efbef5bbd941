// model.device (launcher/device_choice.h): the rules and messages for every kind of host, from
// the CUDA probe's answer and the launcher's local rank and size (plain inputs, so every case
// runs here without a GPU), plus this machine's real probe.
#include <gtest/gtest.h>

#include <string>

#include "autograd/error.h"
#include "launcher/device_choice.h"

namespace hd::launcher {
namespace {

cuda::DeviceProbe host_with(int gpus) {
  cuda::DeviceProbe p;
  p.device_count = gpus;
  if (gpus == 0) p.reason = "cudaErrorNoDevice: no CUDA-capable device is detected";
  return p;
}

std::string error_of(const std::string& setting, int gpus, int local_rank, int local_world) {
  try {
    choose_device(setting, host_with(gpus), local_rank, local_world);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(DeviceChoice, CpuIsTheDefaultAndNeedsNoGpu) {
  for (const std::string s : {"", "cpu"}) {
    DeviceChoice c = choose_device(s, host_with(0), 3, 4);
    EXPECT_EQ(c.device, Device::cpu()) << s;
    EXPECT_EQ(c.note, "") << s;
  }
}

TEST(DeviceChoice, CudaGivesEachLocalRankItsOwnGpu) {
  for (int r = 0; r < 4; ++r) {
    DeviceChoice c = choose_device("cuda", host_with(4), r, 4);
    EXPECT_EQ(c.device, Device::cuda(r));
  }
  // A single process without launcher variables is local rank 0 of 1.
  EXPECT_EQ(choose_device("cuda", host_with(1), -1, -1).device, Device::cuda(0));
}

TEST(DeviceChoice, CudaWithoutAGpuNamesTheSettingAndTheProbe) {
  const std::string e = error_of("cuda", 0, 0, 2);
  EXPECT_NE(e.find("model.device = 'cuda' on local rank 0"), std::string::npos) << e;
  EXPECT_NE(e.find("no CUDA device is usable on this host (cudaErrorNoDevice"), std::string::npos)
      << e;
  EXPECT_NE(e.find("set model.device: cpu or auto"), std::string::npos) << e;
}

TEST(DeviceChoice, MoreRanksPerHostThanGpusIsAnErrorThatSaysHowToStart) {
  const std::string e = error_of("cuda", 2, 3, 4);
  EXPECT_NE(e.find("local rank 3"), std::string::npos) << e;
  EXPECT_NE(e.find("4 ranks run on this host but it has 2 GPU(s)"), std::string::npos) << e;
  EXPECT_NE(e.find("--map-by ppr:2:node"), std::string::npos) << e;
  // Every rank of the host fails alike (rank 0 too), so no rank is left waiting in NCCL.
  EXPECT_NE(error_of("cuda", 2, 0, 4), "");
}

TEST(DeviceChoice, AutoUsesGpusOnlyWhenEveryRankHasOne) {
  DeviceChoice gpu = choose_device("auto", host_with(2), 1, 2);
  EXPECT_EQ(gpu.device, Device::cuda(1));
  EXPECT_NE(gpu.note.find("GPU 1 of 2"), std::string::npos) << gpu.note;
  DeviceChoice none = choose_device("auto", host_with(0), 0, 2);
  EXPECT_EQ(none.device, Device::cpu());
  EXPECT_NE(none.note.find("the CPU, no CUDA device is usable"), std::string::npos) << none.note;
  DeviceChoice few = choose_device("auto", host_with(1), 0, 2);
  EXPECT_EQ(few.device, Device::cpu());
  EXPECT_NE(few.note.find("2 ranks run on this host but it has 1 GPU(s)"), std::string::npos);
}

TEST(DeviceChoice, TheSecondHostDeviceIsForPlacementTests) {
  DeviceChoice c = choose_device("cpu:1", host_with(0), 0, 2);
  EXPECT_EQ(c.device, (Device{DeviceType::cpu, 1}));
  EXPECT_EQ(c.device.str(), "cpu:1");
  EXPECT_NE(c.note.find("device-placement tests"), std::string::npos) << c.note;
}

TEST(DeviceChoice, AnUnknownSettingIsRejected) {
  const std::string e = error_of("gpu", 8, 0, 1);
  EXPECT_NE(e.find("model.device = 'gpu' is not one of cpu, cuda, auto"), std::string::npos) << e;
}

// This machine, through the real probe: "auto" always gives a usable answer, and "cuda" is
// valid exactly when the probe found a device (the CPU CI machines: an error naming the reason).
TEST(DeviceChoice, ThisMachine) {
  const cuda::DeviceProbe probe = probe_devices_if_built();
  DeviceChoice a = choose_device("auto", probe, 0, 1);
  EXPECT_EQ(a.device.is_cpu(), probe.device_count == 0);
  if (probe.device_count == 0) {
    EXPECT_FALSE(probe.reason.empty());
    EXPECT_THROW(choose_device("cuda", probe, 0, 1), Error);
  } else {
    EXPECT_EQ(choose_device("cuda", probe, 0, 1).device, Device::cuda(0));
  }
}

}  // namespace
}  // namespace hd::launcher
