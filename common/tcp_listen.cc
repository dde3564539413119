#include "common/tcp_listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include <cstdlib>

namespace sb {

Result<UniqueFd> ListenTcp(const std::string& host, int port, int backlog, bool reuseport) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string port_text = std::to_string(port);
  const std::string where = host + ":" + port_text;
  if (int rc = ::getaddrinfo(host.c_str(), port_text.c_str(), &hints, &res); rc != 0) {
    return Status::IoError("unable to resolve " + host + ": " + gai_strerror(rc));
  }
  UniqueFd fd(::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) {
    int err = errno;
    ::freeaddrinfo(res);
    return Status::IoError("unable to create a socket for " + where + ": " + strerror(err));
  }
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuseport && ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
    int err = errno;
    ::freeaddrinfo(res);
    return Status::IoError("unable to set SO_REUSEPORT for " + where + ": " + strerror(err));
  }
  int rc = ::bind(fd.get(), res->ai_addr, res->ai_addrlen);
  int err = errno;
  ::freeaddrinfo(res);
  if (rc < 0) return Status::IoError("unable to bind to " + where + ": " + strerror(err));
  if (::listen(fd.get(), backlog) < 0) {
    return Status::IoError("unable to listen on " + where + ": " + strerror(errno));
  }
  return fd;
}

int BoundPort(int fd) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) < 0) return 0;
  if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&a)->sin_port);
  if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&a)->sin6_port);
  return 0;
}

Result<UniqueFd> ListenTcpSpec(const std::string& spec, int backlog) {
  std::string host = "127.0.0.1", port = spec;
  if (size_t colon = spec.rfind(':'); colon != std::string::npos) {
    host = spec.substr(0, colon);
    port = spec.substr(colon + 1);
  }
  char* end = nullptr;
  long p = std::strtol(port.c_str(), &end, 10);
  if (port.empty() || *end != '\0' || p < 0 || p > 65535 || host.empty()) {
    return Status::InvalidConfig("--listen " + spec + ": expected host:port");
  }
  return ListenTcp(host, static_cast<int>(p), backlog);
}

std::string BoundAddress(int fd) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  char ip[INET6_ADDRSTRLEN] = {};
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) < 0) return "inherited socket";
  if (a.ss_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&a)->sin_addr, ip, sizeof ip);
    return std::string(ip) + ":" + std::to_string(BoundPort(fd));
  }
  if (a.ss_family == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&a)->sin6_addr, ip, sizeof ip);
    return "[" + std::string(ip) + "]:" + std::to_string(BoundPort(fd));
  }
  return "inherited socket";
}

}  // namespace sb
