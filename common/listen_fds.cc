#include "common/listen_fds.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>

namespace sb {

std::vector<ListenFd> TakeListenFds() {
  std::vector<ListenFd> out;
  const char* pid = ::getenv("LISTEN_PID");
  const char* fds = ::getenv("LISTEN_FDS");
  const char* names = ::getenv("LISTEN_FDNAMES");
  if (pid && fds && std::to_string(::getpid()) == pid) {
    int n = ::atoi(fds);
    std::string all = names ? names : "";
    size_t pos = 0;
    for (int i = 0; i < n; ++i) {
      size_t end = all.find(':', pos);
      std::string name = pos <= all.size() ? all.substr(pos, end - pos) : "";
      pos = end == std::string::npos ? all.size() + 1 : end + 1;
      int fd = 3 + i;
      ::fcntl(fd, F_SETFD, FD_CLOEXEC);
      out.push_back(ListenFd{fd, name.empty() ? "unknown" : name});
    }
  }
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  return out;
}

}  // namespace sb
