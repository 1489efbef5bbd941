#include "launcher/device_choice.h"

#include "autograd/error.h"

namespace hd::launcher {

DeviceChoice choose_device(const std::string& setting, const cuda::DeviceProbe& probe,
                           int local_rank, int local_world_size) {
  const std::string s = setting.empty() ? "cpu" : setting;
  HD_CHECK(s == "cpu" || s == "cuda" || s == "auto" || s == "cpu:1", "model.device = '", setting,
           "' is not one of cpu, cuda, auto");
  if (s == "cpu") return {Device::cpu(), ""};
  // The second host device of the placement tests (autograd/device.h): host memory and kernels,
  // a device of its own for every same-device check. Not for real runs: it only costs copies.
  if (s == "cpu:1")
    return {Device{DeviceType::cpu, 1},
            "model.device = 'cpu:1': the second host device (device-placement tests)"};
  if (local_rank < 0) local_rank = 0;
  if (local_world_size < 1) local_world_size = local_rank + 1;
  // Why this rank cannot have a GPU of its own ("" when it can).
  std::string missing;
  if (probe.device_count == 0) {
    missing = "no CUDA device is usable on this host (" +
              (probe.reason.empty() ? std::string("no device found") : probe.reason) + ")";
  } else if (local_world_size > probe.device_count) {
    missing = detail::concat(
        local_world_size, " ranks run on this host but it has ", probe.device_count,
        " GPU(s); hdtrain runs one process per GPU (local rank r on GPU r): "
        "start at most ",
        probe.device_count, " ranks per host (mpirun --map-by ppr:", probe.device_count, ":node)");
  }
  if (s == "cuda") {
    HD_CHECK(missing.empty(), "model.device = 'cuda' on local rank ", local_rank, ": ", missing,
             "; set model.device: cpu or auto");
    return {Device::cuda(local_rank), ""};
  }
  if (!missing.empty()) return {Device::cpu(), "model.device = 'auto': the CPU, " + missing};
  return {Device::cuda(local_rank),
          detail::concat("model.device = 'auto': GPU ", local_rank, " of ", probe.device_count)};
}

}  // namespace hd::launcher
