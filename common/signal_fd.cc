#include "common/signal_fd.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <string>

namespace sb {

Result<UniqueFd> BlockSignalsToFd(std::initializer_list<int> signals) {
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : signals) sigaddset(&mask, s);
  if (::sigprocmask(SIG_BLOCK, &mask, nullptr) < 0) {
    return Status::IoError(std::string("sigprocmask: ") + strerror(errno));
  }
  UniqueFd fd(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!fd.valid()) return Status::IoError(std::string("signalfd: ") + strerror(errno));
  return fd;
}

int ReadSignal(int signal_fd) {
  signalfd_siginfo si;
  ssize_t n = ::read(signal_fd, &si, sizeof si);
  return n == static_cast<ssize_t>(sizeof si) ? static_cast<int>(si.ssi_signo) : 0;
}

}  // namespace sb
