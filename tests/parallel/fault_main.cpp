// Fault injection driver, run under mpirun by expect_failure.sh (which checks exit codes, output
// and wall time). Modes:
//   throw: rank 1 throws an hd::Error; the others are waiting in an all-reduce.
//   hang:  rank 1 never joins a barrier; the watchdog on the others must fire.
//   kill:  rank 1 SIGKILLs itself; the others must not hang.
#include <mpi.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "autograd/error.h"
#include "parallel/process_group.h"

using namespace hd;
using namespace hd::parallel;

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  ProcessGroupOptions options;
  options.timeout_s = 3;  // HD_COLLECTIVE_TIMEOUT_S overrides
  auto pg = make_mpi_group(options);
  return run_or_abort(*pg, [&]() -> int {
    Tensor t = Tensor::empty({1024});
    for (int i = 0; i < 1024; ++i) t.data<float>()[i] = 1;
    pg->all_reduce(t, ReduceOp::sum).wait();  // one completed collective to name
    if (pg->rank() == 1) {
      if (mode == "throw") throw Error("injected failure on purpose");
      if (mode == "hang") {
        sleep(120);
        return 0;
      }
      if (mode == "kill") raise(SIGKILL);
    }
    pg->barrier().wait();
    pg->all_reduce(t, ReduceOp::sum).wait();
    std::fprintf(stderr, "rank %d: fault mode '%s' did not end the job\n", pg->rank(),
                 mode.c_str());
    return 3;
  });
}
