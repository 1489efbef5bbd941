#include <cuda_runtime.h>

#include "ops/cuda/device_probe.h"

namespace hd::cuda {

// A trivial kernel so every build compiles device code for the configured arches.
__global__ void fill_kernel(float* out, float value, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = value;
}

DeviceProbe probe_devices() {
  DeviceProbe probe;
  cudaRuntimeGetVersion(&probe.runtime_version);
  cudaError_t err = cudaGetDeviceCount(&probe.device_count);
  if (err != cudaSuccess) {
    probe.device_count = 0;
    probe.reason = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error state
  } else if (probe.device_count == 0) {
    probe.reason = "no CUDA devices";
  }
  return probe;
}

}  // namespace hd::cuda
