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

}  // namespace hd::parallel::testing

#define HD_REQUIRE_RANKS(n)                                                                      \
  do {                                                                                           \
    if (::hd::parallel::testing::world().world_size() < (n)) {                                   \
      GTEST_SKIP() << "needs " << (n) << " ranks, this run has "                                 \
                   << ::hd::parallel::testing::world().world_size() << " (run under mpirun -np " \
                   << (n) << ")";                                                                \
    }                                                                                            \
  } while (0)
