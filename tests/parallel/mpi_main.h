// Shared by every MPI test binary: one process group for the whole binary (MPI is initialised
// once per process), and a skip for cases that need more ranks than the run has.
#pragma once
#include <gtest/gtest.h>

#include <memory>

#include "parallel/process_group.h"

namespace hd::parallel::testing {

// The binary's MPI group; created by the main in mpi_main.cpp before any test runs.
ProcessGroup& world();
std::shared_ptr<ProcessGroup> world_ptr();

// "" when every rank has a GPU of its own (device = local rank), else the reason, the same on
// every rank: the ranks agree through the MPI group first, so a rank without a device never
// leaves the others waiting in NCCL.
std::string no_device_reason();
// The binary's NCCL group over the world (created on first use; needs no_device_reason() == "").
std::shared_ptr<ProcessGroup> nccl_ptr();

}  // namespace hd::parallel::testing

#define HD_REQUIRE_NCCL()                                          \
  do {                                                             \
    std::string why = ::hd::parallel::testing::no_device_reason(); \
    if (!why.empty()) GTEST_SKIP() << why;                         \
  } while (0)

#define HD_REQUIRE_RANKS(n)                                                                      \
  do {                                                                                           \
    if (::hd::parallel::testing::world().world_size() < (n)) {                                   \
      GTEST_SKIP() << "needs " << (n) << " ranks, this run has "                                 \
                   << ::hd::parallel::testing::world().world_size() << " (run under mpirun -np " \
                   << (n) << ")";                                                                \
    }                                                                                            \
  } while (0)
