#include "common/fd_passing.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include <cstring>
#include <memory>

namespace sb {
namespace {

constexpr size_t kControlBytes = CMSG_SPACE(kMaxFdsPerMessage * sizeof(int));

std::string Errno(std::string_view what, int err) {
  std::string s = "fd passing: ";
  s += what;
  s += ": ";
  s += ::strerror(err);
  return s;
}

// Takes ownership of every fd the control messages of `msg` carry, in order.
void TakeFds(msghdr* msg, std::vector<UniqueFd>* out) {
  for (cmsghdr* c = CMSG_FIRSTHDR(msg); c != nullptr; c = CMSG_NXTHDR(msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char* data = CMSG_DATA(c);
    for (size_t i = 0; i < n; ++i) {
      int fd;
      // CMSG_DATA need not be aligned for int.
      std::memcpy(&fd, data + i * sizeof(int), sizeof(int));
      out->emplace_back(fd);
    }
  }
}

}  // namespace

Result<SendResult> SendFds(int sock, std::string_view bytes, std::span<const int> fds) {
  if (fds.size() > kMaxFdsPerMessage) {
    return Status::Refused("fd passing: " + std::to_string(fds.size()) +
                           " fds in one message, at most " + std::to_string(kMaxFdsPerMessage));
  }
  if (bytes.empty()) return Status::Refused("fd passing: an empty message");
  if (bytes.size() > kMaxFdMessageBytes) {
    return Status::Refused("fd passing: a message of " + std::to_string(bytes.size()) +
                           " bytes, at most " + std::to_string(kMaxFdMessageBytes));
  }
  iovec iov{.iov_base = const_cast<char*>(bytes.data()), .iov_len = bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) unsigned char control[kControlBytes];
  if (!fds.empty()) {
    const size_t data_bytes = fds.size() * sizeof(int);
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(data_bytes);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(data_bytes);
    std::memcpy(CMSG_DATA(c), fds.data(), data_bytes);
  }
  for (;;) {
    // MSG_NOSIGNAL: a peer that went away is an error value, not SIGPIPE.
    const ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n >= 0) {
      // A SOCK_SEQPACKET send is all or nothing; a stream socket could take
      // part, which this module does not support.
      if (static_cast<size_t>(n) != bytes.size()) {
        return Status::IoError("fd passing: sendmsg took part of a message (not SOCK_SEQPACKET?)");
      }
      return SendResult::kSent;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return SendResult::kWouldBlock;
    if (errno == ETOOMANYREFS) return SendResult::kTooManyInFlight;
    return Status::IoError(Errno("sendmsg", errno));
  }
}

Result<FdMessage> ReceiveFds(int sock, size_t max_bytes) {
  if (max_bytes == 0 || max_bytes > kMaxFdMessageBytes) {
    return Status::Refused("fd passing: a receive of " + std::to_string(max_bytes) +
                           " bytes, 1 to " + std::to_string(kMaxFdMessageBytes));
  }
  FdMessage out;
  // Read into a buffer kept for the thread, then copied to its size: a
  // string sized to the bound would be zero-filled (128 KiB) on every call,
  // also the ones that find nothing.
  thread_local const std::unique_ptr<char[]> buffer(new char[kMaxFdMessageBytes]);
  iovec iov{.iov_base = buffer.get(), .iov_len = max_bytes};
  alignas(cmsghdr) unsigned char control[kControlBytes];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  for (;;) {
    n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (n >= 0) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      out.kind = FdMessage::Kind::kWouldBlock;
      return out;
    }
    return Status::IoError(Errno("recvmsg", errno));
  }
  // Owned before anything is checked, so that a refusal closes them.
  TakeFds(&msg, &out.fds);
  if ((msg.msg_flags & MSG_CTRUNC) != 0) {
    return Status::Refused("fd passing: the message's fds were cut (MSG_CTRUNC)");
  }
  if ((msg.msg_flags & MSG_TRUNC) != 0) {
    return Status::Refused("fd passing: a message longer than " + std::to_string(max_bytes) +
                           " bytes (MSG_TRUNC)");
  }
  out.bytes.assign(buffer.get(), static_cast<size_t>(n));
  // SendFds never sends an empty message: nothing read is the peer's close.
  if (n == 0) {
    if (!out.fds.empty()) return Status::Refused("fd passing: fds with an empty message");
    out.kind = FdMessage::Kind::kClosed;
  }
  return out;
}

}  // namespace sb
