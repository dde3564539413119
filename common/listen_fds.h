// Child side of systemd socket activation (LISTEN_FDS / LISTEN_PID /
// LISTEN_FDNAMES), as sd_listen_fds_with_names(3).
//
// Owns: reading the inherited listening sockets (fd 3, 4, ...) with their
// names, marking them CLOEXEC, and unsetting the variables so grandchildren
// do not take them for their own. Empty when not socket-activated.
#pragma once

#include <string>
#include <vector>

namespace sb {

struct ListenFd {
  int fd;
  std::string name;
};

std::vector<ListenFd> TakeListenFds();

}  // namespace sb
