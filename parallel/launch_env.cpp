// Rank discovery from the launcher's environment (see LaunchInfo in process_group.h).
#include <cstdlib>
#include <string>

#include "autograd/error.h"
#include "parallel/process_group.h"

namespace hd::parallel {
namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  HD_CHECK(end && *end == '\0' && x >= 0, "launcher environment: ", name, "='", v,
           "' is not a non-negative integer");
  return int(x);
}

bool has(const char* name) {
  return std::getenv(name) != nullptr;
}

}  // namespace

LaunchInfo launch_info_from_env() {
  LaunchInfo info;
  if (has("OMPI_COMM_WORLD_RANK")) {
    info.source = "openmpi";
    info.rank = env_int("OMPI_COMM_WORLD_RANK", 0);
    info.world_size = env_int("OMPI_COMM_WORLD_SIZE", 1);
    info.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", -1);
    info.local_world_size = env_int("OMPI_COMM_WORLD_LOCAL_SIZE", -1);
  } else if (has("SLURM_PROCID") && has("SLURM_NTASKS")) {
    info.source = "slurm";
    info.rank = env_int("SLURM_PROCID", 0);
    info.world_size = env_int("SLURM_NTASKS", 1);
    info.local_rank = env_int("SLURM_LOCALID", -1);
    // SLURM_NTASKS_PER_NODE may be "4(x2)" on heterogeneous jobs; take the leading number.
    if (const char* v = std::getenv("SLURM_NTASKS_PER_NODE")) info.local_world_size = std::atoi(v);
    if (info.local_world_size <= 0) info.local_world_size = -1;
  } else if (has("PMI_RANK")) {
    info.source = "pmi";
    info.rank = env_int("PMI_RANK", 0);
    info.world_size = env_int("PMI_SIZE", 1);
  }
  HD_CHECK(info.world_size >= 1 && info.rank < info.world_size, "launcher environment (",
           info.source, "): rank ", info.rank, " is not below world size ", info.world_size);
  return info;
}

}  // namespace hd::parallel
