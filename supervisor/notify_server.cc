#include "supervisor/notify_server.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace sb::supervisor {

bool NotifyHasReady(std::string_view d) {
  size_t start = 0;
  while (start <= d.size()) {
    size_t end = d.find('\n', start);
    if (end == std::string_view::npos) end = d.size();
    if (d.substr(start, end - start) == "READY=1") return true;
    start = end + 1;
  }
  return false;
}

std::optional<std::string_view> NotifyStatus(std::string_view d) {
  std::optional<std::string_view> status;
  size_t start = 0;
  while (start <= d.size()) {
    size_t end = d.find('\n', start);
    if (end == std::string_view::npos) end = d.size();
    std::string_view line = d.substr(start, end - start);
    if (line.starts_with("STATUS=")) status = line.substr(7);
    start = end + 1;
  }
  return status;
}

Result<std::unique_ptr<NotifyServer>> NotifyServer::Create(const std::string& path) {
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) {
    return Status::InvalidConfig("notify socket path too long: " + path);
  }
  UniqueFd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return Status::IoError(std::string("socket: ") + strerror(errno));
  int one = 1;
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0) {
    return Status::IoError(std::string("SO_PASSCRED: ") + strerror(errno));
  }
  // Large enough that a burst of children becoming ready at once never drops.
  int rcvbuf = 1 << 20;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  ::unlink(path.c_str());
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
    return Status::IoError("bind " + path + ": " + strerror(errno));
  }
  ::chmod(path.c_str(), 0600);
  return std::unique_ptr<NotifyServer>(new NotifyServer(std::move(fd), path));
}

NotifyServer::~NotifyServer() { ::unlink(path_.c_str()); }

void NotifyServer::Drain(const std::function<void(pid_t)>& on_ready,
                         const std::function<void(pid_t, std::string_view)>& on_status) {
  for (;;) {
    char buf[4096];
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
    iovec iov{buf, sizeof buf};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(fd_.get(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // EAGAIN: drained
    }
    pid_t sender = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
        ucred cred;
        memcpy(&cred, CMSG_DATA(c), sizeof cred);
        sender = cred.pid;
      }
    }
    if (sender <= 0) continue;
    std::string_view datagram(buf, static_cast<size_t>(n));
    if (on_status) {
      if (std::optional<std::string_view> status = NotifyStatus(datagram))
        on_status(sender, *status);
    }
    if (NotifyHasReady(datagram)) on_ready(sender);
  }
}

}  // namespace sb::supervisor
