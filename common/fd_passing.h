// FdPassing: bytes and the file descriptors that ride with them over a unix
// socket (SCM_RIGHTS), one message at a time.
//
// Owns: the sendmsg / recvmsg calls and their control messages: bounds (fds
// per message, bytes per message), EINTR, the close-on-exec flag of what is
// received, and closing everything received when a message is refused. Does
// not: open or choose the socket, wait for it (a non-blocking socket answers
// kWouldBlock; the caller's loop waits for EPOLLIN / EPOLLOUT), or give the
// bytes any meaning (worker/handoff_state does). Free functions, any thread.
//
// The socket is meant to be AF_UNIX SOCK_SEQPACKET: it keeps message
// boundaries (one send is one receive, whole or not at all, so a state chunk
// and its fds arrive together and cannot be split or merged with the next),
// is connection-oriented (the peer's exit reads as kClosed, unlike
// SOCK_DGRAM), and is ordered. With SOCK_STREAM the fds would attach to
// whichever byte the kernel chose and a reader could see them with half a
// chunk.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/unique_fd.h"

namespace sb {

// The kernel's SCM_MAX_FD: sendmsg refuses more fds in one message.
inline constexpr size_t kMaxFdsPerMessage = 253;

// The largest message SendFds sends. A SOCK_SEQPACKET message must fit in the
// sender's socket buffer (the kernel refuses len > SO_SNDBUF - 32 with
// EMSGSIZE), whose default (net.core.wmem_default) is 212,992 bytes and which
// an unprivileged process can raise only up to net.core.wmem_max. 128 KiB
// fits the default with room, on any machine, without a setsockopt; larger
// state is split by the caller into several messages.
inline constexpr size_t kMaxFdMessageBytes = 128 * 1024;

enum class SendResult : uint8_t {
  kSent,        // the whole message, fds included, was queued
  kWouldBlock,  // non-blocking socket, buffer full: nothing sent, wait for EPOLLOUT
  // The kernel's bound on fds sent and not yet received (ETOOMANYREFS: more
  // than the sender's RLIMIT_NOFILE in flight for its user, unless it has
  // CAP_SYS_RESOURCE): nothing sent; try again once the receiver has taken
  // some. The socket may well be writable meanwhile, so EPOLLOUT does not
  // say when.
  kTooManyInFlight,
};

// Sends `bytes` (1..kMaxFdMessageBytes) with `fds` (at most
// kMaxFdsPerMessage; not closed: the receiver gets duplicates) as one
// message. Refused, nothing sent, when a bound is broken or `bytes` is empty
// (an empty message reads like the peer's close). Other failures (the peer
// gone: EPIPE, a bad fd) are IoError. EINTR is retried.
Result<SendResult> SendFds(int sock, std::string_view bytes, std::span<const int> fds);

struct FdMessage {
  enum class Kind : uint8_t {
    kMessage,     // `bytes` and `fds` hold one message
    kWouldBlock,  // non-blocking socket, nothing to read: wait for EPOLLIN
    kClosed,      // the peer closed its end
  };
  Kind kind = Kind::kMessage;
  std::string bytes;
  // In the order they were sent, close-on-exec (MSG_CMSG_CLOEXEC, so no
  // child started before the receiver takes them inherits one).
  std::vector<UniqueFd> fds;
};

// Receives one message of at most `max_bytes` (at most kMaxFdMessageBytes)
// and up to kMaxFdsPerMessage fds. A message cut by the kernel (longer than
// `max_bytes`: MSG_TRUNC; more fds than room: MSG_CTRUNC) is refused, and
// every fd it carried is closed. EINTR is retried.
Result<FdMessage> ReceiveFds(int sock, size_t max_bytes = kMaxFdMessageBytes);

}  // namespace sb
