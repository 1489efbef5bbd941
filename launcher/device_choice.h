// Which device a rank trains on (model.device), decided before MPI starts so that a wrong
// setting ends the job at once with a message naming the setting, the host and the rank.
//
// Rules: "cpu" -> the host ("cpu:1": the second host device of the placement tests). "cuda" -> GPU
// local_rank: one process per GPU (NCCL's model and llm.c's), so the host must have at least as
// many GPUs as ranks on it; no GPU, or fewer GPUs than ranks, is an error. "auto" -> cuda when that
// would be valid, else cpu with a note. The inputs are plain values (the CUDA probe's answer, the
// launcher's local rank and size) so the rules are tested on any machine
// (tests/launcher/device_choice_test.cpp).
// `hdtrain pretrain` and `hdtrain run` train on the chosen device (launcher/trainer.cpp,
// launcher/vilahd_stage.cpp; issue 18).
#pragma once
#include <cstdio>
#include <string>

#include "autograd/device.h"
#include "ops/cuda/device_probe.h"

namespace hd::launcher {

struct DeviceChoice {
  Device device;
  std::string note;  // why "auto" chose what it chose ("" otherwise)
};

// `setting` is model.device ("" means cpu). local_rank / local_world_size come from the
// launcher (-1 when unknown: a single process is local rank 0 of 1). Throws hd::Error.
DeviceChoice choose_device(const std::string& setting, const cuda::DeviceProbe& probe,
                           int local_rank, int local_world_size);

// The CUDA probe where the including binary has the CUDA backend, else "no device" with the
// reason (inline so hd_launcher_config itself needs no CUDA runtime).
inline cuda::DeviceProbe probe_devices_if_built() {
#ifdef HD_HAVE_CUDA
  return cuda::probe_devices();
#else
  cuda::DeviceProbe p;
  p.reason = "this build has no CUDA backend (configured with HD_CUDA=OFF)";
  return p;
#endif
}

// choose_device with this machine's probe, taken only when the setting asks for a GPU (probing
// initialises the CUDA runtime).
inline DeviceChoice choose_device_here(const std::string& setting, int local_rank,
                                       int local_world_size) {
  const bool needs_probe = setting == "cuda" || setting == "auto";
  return choose_device(setting, needs_probe ? probe_devices_if_built() : cuda::DeviceProbe{},
                       local_rank, local_world_size);
}

// For the commands, before MPI starts: chooses this rank's device from model.device, prints
// auto's note on rank 0, and on an error prints it with the rank and returns false (the command
// exits 2; every rank checks alike).
inline bool choose_device_or_report(const char* command, const std::string& setting, int rank,
                                    int local_rank, int local_world_size, DeviceChoice& out) {
  try {
    out = choose_device_here(setting, local_rank, local_world_size);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hdtrain %s: error (rank %d): %s\n", command, rank, e.what());
    return false;
  }
  // stderr: stdout stays the config alone under --print-config.
  if (rank == 0 && !out.note.empty())
    std::fprintf(stderr, "hdtrain %s: %s\n", command, out.note.c_str());
  return true;
}

}  // namespace hd::launcher
