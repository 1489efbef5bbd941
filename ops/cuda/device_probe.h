// CUDA device discovery. A machine without a GPU or driver is a normal state (cudaGetDeviceCount
// returns cudaErrorInsufficientDriver, 35, when libcuda is absent): it reports zero devices and
// the reason, and everything runs on the CPU.
#pragma once

#include <string>

namespace hd::cuda {

struct DeviceProbe {
  int device_count = 0;
  std::string reason;  // why there are no devices ("" when device_count > 0)
  int runtime_version = 0;
};

// Safe to call on any machine; never throws.
DeviceProbe probe_devices();

}  // namespace hd::cuda
