#include "supervisor/listen_sockets.h"

#include <utility>

#include "common/tcp_listen.h"

namespace sb::supervisor {

Result<ListenSockets> ListenSockets::Bind(const std::vector<SocketSpec>& specs) {
  ListenSockets out;
  for (const SocketSpec& s : specs) {
    Status st = out.Add(s);
    if (!st.ok()) return st;
  }
  return out;
}

Status ListenSockets::Add(const SocketSpec& s) {
  Result<UniqueFd> fd = ListenTcp(s.host, s.port, s.backlog);
  if (!fd.ok()) return Status::IoError("socket '" + s.name + "': " + fd.status().message());
  fds_[s.name] = std::move(fd.value());
  return Status::Ok();
}

int ListenSockets::fd(const std::string& name) const {
  auto it = fds_.find(name);
  return it == fds_.end() ? -1 : it->second.get();
}

int ListenSockets::port(const std::string& name) const {
  int f = fd(name);
  return f < 0 ? -1 : BoundPort(f);
}

}  // namespace sb::supervisor
