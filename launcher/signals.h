// SIGTERM / SIGUSR1 -> "checkpoint at the next step boundary and exit 0".
//
// Why a flag and not work in the handler: a handler may only touch lock-free atomics, and the
// ranks must stop at the SAME step or the ones that stop would leave the others waiting in a
// collective forever. So the handler only records the signal; the trainer all-reduces (max) the
// flag once per step, and every rank sees the stop request at the same boundary even when the
// scheduler signalled only one of them (Slurm signals every task, a user's kill only one).
//
// A second SIGTERM while the first is still pending restores the default action and re-raises
// it: an operator who means "now" (or MPI_Abort's SIGTERM after a failure) is not ignored.
#pragma once

namespace hd::launcher {

// Installs the handlers for SIGTERM and SIGUSR1 (idempotent).
void install_stop_signal_handlers();
// The signal number received since installation (0: none).
int stop_signal_received();
// Forgets a received signal (tests run several phases in one process).
void clear_stop_signal();
// "SIGTERM", "SIGUSR1", or "signal N".
const char* stop_signal_name(int signal_number);

}  // namespace hd::launcher
