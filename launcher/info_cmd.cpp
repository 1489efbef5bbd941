// hdtrain info: what this binary is and what it can use here (version, build type, CUDA or why
// not, MPI, the launcher's world size, the configs shipped). It initialises nothing (no MPI_Init,
// no CUDA context), so it is safe as the first thing to run on a new machine or under mpirun.
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "launcher/command.h"
#include "ops/cpu/isa.h"
#include "ops/cpu/onednn_matmul.h"
#include "parallel/process_group.h"
#ifdef HD_HAVE_CUDA
#include "ops/cuda/device_probe.h"
#endif

namespace hd::launcher {
namespace {

constexpr const char* kUsage =
    "usage: hdtrain info\n"
    "  Prints the version, build type, CUDA devices (or why there are none), the MPI library,\n"
    "  the rank/world size when started by mpirun/srun, the CPU's vector extensions (and so how\n"
    "  train.precision bf16 computes here), and the configs in configs/.\n";

// The CPU flags that decide how bf16 computes (Linux /proc/cpuinfo; empty elsewhere).
std::string cpu_vector_flags() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::string found;
    for (const char* f : {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"}) {
      if ((" " + line + " ").find(std::string(" ") + f + " ") != std::string::npos) {
        found += found.empty() ? f : std::string(" ") + f;
      }
    }
    return found;
  }
  return "";
}

std::vector<std::string> configs_in(const std::filesystem::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return out;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec))
    if (e.path().extension() == ".textproto") out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

int run(const std::vector<std::string>& args) {
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  Args a(args, {}, {});
  std::printf("hdtrain %s (%s build)\n", HD_VERSION, HD_BUILD_TYPE);
#ifdef HD_HAVE_CUDA
  auto probe = cuda::probe_devices();
  if (probe.device_count > 0)
    std::printf("cuda: %d device(s), runtime %d\n", probe.device_count, probe.runtime_version);
  else
    std::printf("cuda: built with CUDA, but no device usable: %s\n", probe.reason.c_str());
#else
  std::printf("cuda: not built in (configured with -DHD_CUDA=OFF or nvcc not found); CPU only\n");
#endif
  char mpi_version[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int len = 0;
  MPI_Get_library_version(mpi_version, &len);  // allowed before MPI_Init (MPI-3)
  std::string mpi(mpi_version, size_t(len));
  if (auto nl = mpi.find_first_of("\n,"); nl != std::string::npos) mpi.resize(nl);
  std::printf("mpi: %s\n", mpi.c_str());
  auto li = parallel::launch_info_from_env();
  if (li.source == "default")
    std::printf("launch: not under mpirun/srun (world size 1)\n");
  else
    std::printf("launch: rank %d of %d (from %s)\n", li.rank, li.world_size, li.source.c_str());
  std::printf("cpu threads: %u hardware, HD_NUM_THREADS=%s\n", std::thread::hardware_concurrency(),
              std::getenv("HD_NUM_THREADS") ? std::getenv("HD_NUM_THREADS") : "(unset: all)");
  const std::string flags = cpu_vector_flags();
  std::printf("cpu vector extensions: %s\n", flags.empty() ? "(unknown)" : flags.c_str());
  // [Note: AVX-512 kernels] (ops/cpu/isa.h): which instantiation of the hot loops runs.
  const auto& isa = cpu::vector_isa();
  std::printf("cpu kernels: %s%s%s\n", isa.name.c_str(),
              isa.avx512 ? "" : " (AVX-512: ", isa.avx512 ? "" : (isa.reason + ")").c_str());
  // [Note: oneDNN GEMMs] (ops/cpu/onednn_matmul.h): what bf16 training does on this CPU.
  const auto& dnnl = cpu::onednn::capability();
  if (dnnl.bf16_matmul) {
    std::printf(
        "bf16 compute: GEMMs through oneDNN %s (ISA %s, kernel %s), f32 accumulation; "
        "norms, softmax and attention compute in f32\n",
        dnnl.version.c_str(), dnnl.isa.c_str(), dnnl.bf16_impl.c_str());
  } else {
    std::printf("bf16 compute: converted to f32 in the kernels, GEMMs on OpenBLAS (%s)\n",
                dnnl.reason.c_str());
  }
  // ops/cpu/attention_dpbf16.h: which bf16 attention runs for the heads it covers.
  std::printf("bf16 attention (head dims 16, 32, 64): %s\n",
              isa.avx512_bf16 ? "vdpbf16ps kernel (AVX512_BF16), f32 softmax and accumulators"
                              : "tiled path (this CPU runs no AVX512_BF16 kernels)");
  auto configs = configs_in("configs");
  if (configs.empty()) configs = configs_in(std::filesystem::path(HD_SOURCE_DIR) / "configs");
  std::printf("configs:%s\n",
              configs.empty() ? " none found (looked in ./configs and the source tree)" : "");
  for (const auto& c : configs) std::printf("  %s\n", c.c_str());
  return 0;
}

}  // namespace

HD_REGISTER_COMMAND(info, "version, build type, CUDA/MPI availability, world size, configs", run);

}  // namespace hd::launcher
