// ListenSockets: the listening sockets declared under `sockets:` in YAML.
//
// Owns: one bound, listening TCP socket per declaration, created once when
// the daemon starts and kept for its whole life, so a child that crashes
// never closes the port: clients wait in the backlog until the next
// incarnation accepts them. The fds are CLOEXEC in the daemon; the launcher
// hands them to the children that name them. Does not: accept connections.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/unique_fd.h"
#include "supervisor/tree_spec.h"

namespace sb::supervisor {

class ListenSockets {
 public:
  static Result<ListenSockets> Bind(const std::vector<SocketSpec>& specs);
  // Binds one more (a reload declared it). On error nothing changes.
  Status Add(const SocketSpec& spec);
  // Closes one (a reload removed it; no child uses it any more).
  void Close(const std::string& name) { fds_.erase(name); }

  // The daemon-side fd of socket `name`, or -1.
  int fd(const std::string& name) const;
  // The port actually bound (useful with port 0).
  int port(const std::string& name) const;

 private:
  std::map<std::string, UniqueFd> fds_;
};

}  // namespace sb::supervisor
