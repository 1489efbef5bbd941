// gtest main for multi-rank tests (build notes P11): MPI starts before the tests and ends after
// them; only rank 0 prints gtest's listener output so N ranks do not interleave reports, but
// every rank's exit code counts (mpirun fails if any rank fails).
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdlib>

#include "ops/factory.h"
#include "tests/parallel/mpi_main.h"
#ifdef HD_HAVE_CUDA
#include "ops/cuda/runtime.h"
#endif

namespace hd::parallel::testing {
namespace {
std::shared_ptr<ProcessGroup> g_world;
}
ProcessGroup& world() {
  return *g_world;
}
std::shared_ptr<ProcessGroup> world_ptr() {
  return g_world;
}

std::string no_device_reason() {
#ifdef HD_HAVE_CUDA
  int64_t missing = 0;
  if (!cuda::available() || world().local_rank() >= cuda::device_count()) missing = 1;
  Tensor flag = full({1}, double(missing), DType::i64);
  world().all_reduce(flag, ReduceOp::max).wait();
  if (flag.item<int64_t>() == 0) return "";
  if (!cuda::available()) return "no CUDA device: " + cuda::unavailable_reason();
  return "no CUDA device: a rank has no GPU of its own (local rank >= device count)";
#else
  return "no CUDA device: this build has HD_CUDA=OFF";
#endif
}

std::shared_ptr<ProcessGroup> nccl_ptr() {
  static std::shared_ptr<ProcessGroup> group = make_nccl_group(world_ptr());
  return group;
}
}  // namespace hd::parallel::testing

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  ::testing::InitGoogleTest(&argc, argv);
  int rc = 0;
  {
    hd::parallel::ProcessGroupOptions options;
    options.timeout_s = 60;  // HD_COLLECTIVE_TIMEOUT_S overrides
    hd::parallel::testing::g_world = hd::parallel::make_mpi_group(options);
    int rank = hd::parallel::testing::g_world->rank();
    if (rank != 0) {
      auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
      delete listeners.Release(listeners.default_result_printer());
    }
    rc = RUN_ALL_TESTS();
    // Every rank must agree on the outcome, so a failure on rank 2 fails rank 0 too.
    hd::Tensor flag = hd::Tensor::empty({1}, hd::DType::i64);
    flag.data<int64_t>()[0] = rc;
    hd::parallel::testing::g_world->all_reduce(flag, hd::parallel::ReduceOp::max).wait();
    rc = int(flag.data<int64_t>()[0]);
    hd::parallel::testing::g_world.reset();
  }
  MPI_Finalize();
  return rc;
}
