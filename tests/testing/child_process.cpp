#include "tests/testing/child_process.h"

#include <unistd.h>

#include <cstdio>
#include <stdexcept>

namespace hd::testing {

std::vector<std::string> child_lines_by_thread_count(const std::string& gtest_filter,
                                                     const std::string& prefix,
                                                     const std::vector<int>& threads) {
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0) throw std::runtime_error("child_lines_by_thread_count: cannot read /proc/self/exe");
  exe[n] = 0;
  std::vector<std::string> lines;
  for (int t : threads) {
    const std::string cmd = "HD_NUM_THREADS=" + std::to_string(t) + " '" + exe +
                            "' --gtest_also_run_disabled_tests --gtest_filter=" + gtest_filter +
                            " 2>&1";
    FILE* f = popen(cmd.c_str(), "r");
    if (!f) throw std::runtime_error("child_lines_by_thread_count: cannot run " + cmd);
    char line[512];
    std::string found;
    while (std::fgets(line, sizeof(line), f)) {
      if (found.empty() && std::string(line).rfind(prefix, 0) == 0) found = line + prefix.size();
    }
    pclose(f);
    lines.push_back(found);
  }
  return lines;
}

}  // namespace hd::testing
