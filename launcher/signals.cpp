// Stop-signal handlers (see signals.h for why they only set a flag).
#include "launcher/signals.h"

#include <atomic>
#include <csignal>
#include <cstdio>

namespace hd::launcher {
namespace {

std::atomic<int> g_signal{0};
static_assert(std::atomic<int>::is_always_lock_free, "a signal handler needs a lock-free flag");

extern "C" void on_stop_signal(int sig) {
  int expected = 0;
  if (!g_signal.compare_exchange_strong(expected, sig) && sig == SIGTERM) {
    // Second SIGTERM: the default action (terminate) now.
    std::signal(SIGTERM, SIG_DFL);
    std::raise(SIGTERM);
  }
}

}  // namespace

void install_stop_signal_handlers() {
  struct sigaction sa = {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // blocking reads and MPI progress continue after the handler
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGUSR1, &sa, nullptr);
}

int stop_signal_received() {
  return g_signal.load();
}

void clear_stop_signal() {
  g_signal.store(0);
}

const char* stop_signal_name(int sig) {
  if (sig == SIGTERM) return "SIGTERM";
  if (sig == SIGUSR1) return "SIGUSR1";
  return "a stop signal";
}

}  // namespace hd::launcher
