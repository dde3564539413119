// Signals as readable fds: the one way Switchboard programs take signals.
//
// Owns: blocking a set of signals for the calling thread (and the threads it
// starts later) and opening a non-blocking, close-on-exec signalfd for them,
// so they arrive on the event loop like any other input instead of in an
// async handler. Children get a clean mask back in the launcher.
#pragma once

#include <initializer_list>

#include "common/status.h"
#include "common/unique_fd.h"

namespace sb {

Result<UniqueFd> BlockSignalsToFd(std::initializer_list<int> signals);

// Reads one pending signal number from a signalfd; 0 when none is pending.
int ReadSignal(int signal_fd);

}  // namespace sb
