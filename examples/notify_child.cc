// notify_child: the smallest well-behaved Switchboard child. It reports
// READY=1 on $NOTIFY_SOCKET (the systemd notify protocol), then waits for
// SIGTERM and exits 0. Plain libc only, so its start-up costs what a process
// start costs and nothing more: the restart benchmark uses it to measure the
// supervisor's own share of crash -> ready latency.
#include <signal.h>

#include "common/sd_notify.h"

int main() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigprocmask(SIG_BLOCK, &set, nullptr);
  sb::SdNotify("READY=1");
  int sig = 0;
  sigwait(&set, &sig);
  return 0;
}
