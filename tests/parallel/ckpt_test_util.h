// Helpers shared by the multi-rank checkpoint tests: a per-suite scratch folder every rank agrees
// on, and an error's message (or "" when nothing was thrown) for message checks.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>

#include "autograd/error.h"
#include "tests/parallel/mpi_main.h"

namespace hd::parallel::testing {

// $HD_CKPT_SCRATCH (or the temp folder) / suite / test_np<N>, emptied by rank 0; all ranks wait.
inline std::filesystem::path ckpt_scratch(const std::string& suite, const std::string& test) {
  const char* base = std::getenv("HD_CKPT_SCRATCH");
  std::filesystem::path dir =
      std::filesystem::path(base ? base : std::filesystem::temp_directory_path().string()) / suite /
      (test + "_np" + std::to_string(world().world_size()));
  if (world().rank() == 0)
    std::filesystem::remove_all(dir), std::filesystem::create_directories(dir);
  world().barrier().wait();
  return dir;
}

inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace hd::parallel::testing

#define EXPECT_HAS(msg, want) \
  EXPECT_NE((msg).find(want), std::string::npos) << "'" << (msg) << "' lacks '" << (want) << "'"
