#include "supervisor/listen_sockets.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

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
  {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* res = nullptr;
    std::string port = std::to_string(s.port);
    int rc = ::getaddrinfo(s.host.c_str(), port.c_str(), &hints, &res);
    if (rc != 0) {
      return Status::IoError("unable to resolve socket '" + s.name + "' address " + s.host + ": " +
                             gai_strerror(rc));
    }
    UniqueFd fd(::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) {
      ::freeaddrinfo(res);
      return Status::IoError(std::string("socket: ") + strerror(errno));
    }
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int brc = ::bind(fd.get(), res->ai_addr, res->ai_addrlen);
    int bind_errno = errno;
    ::freeaddrinfo(res);
    if (brc < 0) {
      return Status::IoError("unable to bind socket '" + s.name + "' to " + s.host + ":" + port +
                             ": " + strerror(bind_errno));
    }
    if (::listen(fd.get(), s.backlog) < 0) {
      return Status::IoError("unable to listen on socket '" + s.name + "': " + strerror(errno));
    }
    fds_[s.name] = std::move(fd);
  }
  return Status::Ok();
}

int ListenSockets::fd(const std::string& name) const {
  auto it = fds_.find(name);
  return it == fds_.end() ? -1 : it->second.get();
}

int ListenSockets::port(const std::string& name) const {
  int f = fd(name);
  if (f < 0) return -1;
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(f, reinterpret_cast<sockaddr*>(&ss), &len) < 0) return -1;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
}

}  // namespace sb::supervisor
