// Tests that need a fresh process per setting: HD_NUM_THREADS is read once per process, so a
// "same bits for any thread count" test runs its own binary again once per count.
#pragma once

#include <string>
#include <vector>

namespace hd::testing {

// Runs this test binary once per entry of `threads` with HD_NUM_THREADS set to it and only
// `gtest_filter` selected (a DISABLED_ child test, run with --gtest_also_run_disabled_tests).
// Returns, per run, the rest of the first output line that starts with `prefix` ("" if none).
std::vector<std::string> child_lines_by_thread_count(const std::string& gtest_filter,
                                                     const std::string& prefix,
                                                     const std::vector<int>& threads);

}  // namespace hd::testing
