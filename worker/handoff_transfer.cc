#include "worker/handoff_transfer.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <string>
#include <utility>

#include "common/fd_passing.h"
#include "common/mono_time.h"

namespace sb::worker::handoff {
namespace {

// Waits for `events` on `sock` until `deadline_ms`.
Status Wait(int sock, short events, int64_t deadline_ms, std::string_view what) {
  for (;;) {
    const int64_t left = deadline_ms - MonoNowMs();
    if (left <= 0)
      return Status::IoError(std::string("hand-off: timed out waiting for ") + std::string(what));
    pollfd p{.fd = sock, .events = events, .revents = 0};
    const int n = ::poll(&p, 1, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::IoError(std::string("hand-off: poll: ") + strerror(errno));
    if (n > 0) return Status::Ok();
  }
}

Status SendMessage(int sock, std::string_view bytes, std::span<const int> fds,
                   int64_t deadline_ms) {
  for (;;) {
    Result<SendResult> r = SendFds(sock, bytes, fds);
    if (!r.ok()) return r.status();
    if (r.value() == SendResult::kSent) return Status::Ok();
    if (r.value() == SendResult::kTooManyInFlight) {
      // Writable or not, the receiver must take some fds first.
      if (MonoNowMs() >= deadline_ms)
        return Status::IoError("hand-off: timed out with fds in flight");
      ::usleep(1000);
      continue;
    }
    if (Status s = Wait(sock, POLLOUT, deadline_ms, "room to send"); !s.ok()) return s;
  }
}

Result<FdMessage> Receive(int sock, int64_t deadline_ms, std::string_view what) {
  for (;;) {
    Result<FdMessage> m = ReceiveFds(sock);
    if (!m.ok()) return m.status();
    if (m.value().kind == FdMessage::Kind::kClosed) {
      return Status::IoError(std::string("hand-off: the peer closed before ") + std::string(what));
    }
    if (m.value().kind == FdMessage::Kind::kMessage) return m;
    if (Status s = Wait(sock, POLLIN, deadline_ms, what); !s.ok()) return s;
  }
}

// The new process's refusal, if `m` is one: what the old process reports.
std::optional<Status> RefusalIn(const FdMessage& m) {
  if (m.kind != FdMessage::Kind::kMessage || !m.bytes.starts_with(kRefusalPrefix)) {
    return std::nullopt;
  }
  return Status::Refused("hand-off: the new process refused the state: " +
                         m.bytes.substr(kRefusalPrefix.size()));
}

// A few bytes on a socket nobody else writes to, the peer reading it: sent
// at once, or an error.
Status SendNote(int sock, std::string_view message, std::string_view what) {
  Result<SendResult> r = SendFds(sock, message, {});
  if (!r.ok()) return r.status();
  if (r.value() != SendResult::kSent) {
    return Status::IoError("hand-off: " + std::string(what) + " not sent");
  }
  return Status::Ok();
}

// Every wait is bounded by poll, so the socket's own calls must not block.
Status NonBlocking(int sock) {
  const int flags = ::fcntl(sock, F_GETFL);
  if (flags < 0 || ::fcntl(sock, F_SETFL, flags | O_NONBLOCK) < 0) {
    return Status::IoError(std::string("hand-off: fcntl: ") + strerror(errno));
  }
  return Status::Ok();
}

}  // namespace

namespace {

Result<sockaddr_un> AddressOf(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    return Status::InvalidConfig("hand-off socket path empty or too long: " + path);
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

}  // namespace

Result<UniqueFd> ListenHandoff(const std::string& path) {
  Result<sockaddr_un> addr = AddressOf(path);
  if (!addr.ok()) return addr.status();
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return Status::IoError(std::string("hand-off: socket: ") + strerror(errno));
  // The file of a process that did not clean up (killed mid-upgrade).
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Status::IoError("hand-off: remove " + path + ": " + strerror(errno));
  }
  // Made 0600 from the start: no moment when another user could connect.
  const mode_t old_mask = ::umask(0177);
  const int bound =
      ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr.value()), sizeof(sockaddr_un));
  const int bind_errno = errno;
  ::umask(old_mask);
  if (bound != 0) return Status::IoError("hand-off: bind " + path + ": " + strerror(bind_errno));
  if (::listen(fd.get(), 1) != 0) {
    return Status::IoError("hand-off: listen " + path + ": " + strerror(errno));
  }
  return fd;
}

Result<UniqueFd> ConnectHandoff(const std::string& path) {
  Result<sockaddr_un> addr = AddressOf(path);
  if (!addr.ok()) return addr.status();
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return Status::IoError(std::string("hand-off: socket: ") + strerror(errno));
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr.value()), sizeof(sockaddr_un)) !=
      0) {
    return Status::IoError("hand-off: connect " + path + ": " + strerror(errno));
  }
  return fd;
}

Result<UniqueFd> AcceptHandoff(int listener, int64_t deadline_ms) {
  if (Status s = NonBlocking(listener); !s.ok()) return s;
  for (;;) {
    UniqueFd fd(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
    if (fd.get() >= 0) return fd;
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      return Status::IoError(std::string("hand-off: accept: ") + strerror(errno));
    }
    if (Status s = Wait(listener, POLLIN, deadline_ms, "the old process"); !s.ok()) return s;
  }
}

Status StateSender::NonBlocking() {
  if (nonblocking_) return Status::Ok();
  if (Status s = handoff::NonBlocking(sock_); !s.ok()) return s;
  nonblocking_ = true;
  return Status::Ok();
}

Result<SendResult> StateSender::TrySendSockets(std::span<const uint64_t> ids,
                                               std::span<const int> fds) {
  if (fds.size() != ids.size()) return Status::Internal("hand-off: an fd per connection");
  if (Status s = NonBlocking(); !s.ok()) return s;
  Result<std::string> record = EncodeSockets(ids);
  if (!record.ok()) return record.status();
  // 253 ids are 2 KiB: one message, never continued.
  Result<SendResult> r = SendFds(sock_, record.value(), fds);
  if (!r.ok()) return Failed(r.status());
  return r.value();
}

Result<bool> StateSender::TryEndSockets() {
  if (Status s = NonBlocking(); !s.ok()) return s;
  Result<SendResult> r = SendFds(sock_, kSocketsEndMessage, {});
  if (!r.ok()) return Failed(r.status());
  return r.value() == SendResult::kSent;
}

Result<bool> StateSender::SocketsTaken() {
  Result<FdMessage> m = ReceiveFds(sock_);
  if (!m.ok()) return Failed(m.status());
  if (m.value().kind == FdMessage::Kind::kClosed) {
    return Failed(Status::IoError("hand-off: the peer closed before taking the sockets"));
  }
  if (m.value().kind != FdMessage::Kind::kMessage) return false;
  if (std::optional<Status> refused = RefusalIn(m.value())) return *refused;
  if (m.value().bytes != kSocketsTakenMessage || !m.value().fds.empty()) {
    return Status::Refused("hand-off: the answer is not that the sockets are taken");
  }
  return true;
}

Status StateSender::Begin(Session session, size_t connections) {
  if (Status s = NonBlocking(); !s.ok()) return s;
  session.connections = connections;
  session.chunks = 0;
  Result<std::string> record = EncodeSession(session);
  if (!record.ok()) return record.status();
  for (std::string_view part : SplitRecord(record.value())) {
    if (Status s = SendMessage(sock_, part, {}, deadline_ms_); !s.ok()) return Failed(s);
  }
  return Status::Ok();
}

Status StateSender::Send(std::span<const Connection> connections, std::span<const int> fds) {
  if (!fds.empty() && fds.size() != connections.size()) {
    return Status::Internal("hand-off: an fd per connection, or none");
  }
  Result<std::vector<Chunk>> chunks = EncodeChunks(connections);
  if (!chunks.ok()) return chunks.status();
  for (const Chunk& chunk : chunks.value()) {
    const std::vector<std::string_view> parts = SplitRecord(chunk.record);
    for (size_t i = 0; i < parts.size(); ++i) {
      // The fds ride with the record's first message.
      std::span<const int> with =
          i == 0 && !fds.empty() ? fds.subspan(chunk.first, chunk.count) : std::span<const int>();
      if (Status s = SendMessage(sock_, parts[i], with, deadline_ms_); !s.ok()) return Failed(s);
    }
  }
  return Status::Ok();
}

Status StateSender::Finish() {
  if (Status s = SendMessage(sock_, kEndMessage, {}, deadline_ms_); !s.ok()) return Failed(s);
  Result<FdMessage> ack = Receive(sock_, ack_deadline_ms_, "the acknowledgement");
  if (!ack.ok()) return Failed(ack.status());
  if (std::optional<Status> refused = RefusalIn(ack.value())) return *refused;
  if (ack.value().bytes != kAckMessage || !ack.value().fds.empty()) {
    return Status::Refused("hand-off: the answer is not an acknowledgement");
  }
  return Status::Ok();
}

void StateSender::Abort() {
  // Best effort: a new process that cannot hear it never got the end, so it
  // serves nothing and closes its copies when it gives up or is killed.
  (void)SendFds(sock_, kAbortMessage, {});
}

Status StateSender::Failed(Status s) {
  // A refusal stays queued for us after the peer has closed. A peer that
  // closed with our chunks unread makes the next read fail first
  // (ECONNRESET, reported once), so a second read may still find it.
  for (int attempt = 0; attempt < 2; ++attempt) {
    Result<FdMessage> m = ReceiveFds(sock_);
    if (!m.ok()) continue;
    if (std::optional<Status> refused = RefusalIn(m.value())) return *refused;
    break;
  }
  return s;
}

StateReceiver::StateReceiver(int sock, int64_t deadline_ms)
    : sock_(sock), deadline_ms_(deadline_ms) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.pid > 0) {
    old_pidfd_ = UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, cred.pid, 0)));
  }
}

StateReceiver::~StateReceiver() { DiscardUnclaimed(); }

void StateReceiver::SetSocketHooks(std::function<void(UniqueFd&)> prepare,
                                   std::function<void(int)> discard) {
  prepare_ = std::move(prepare);
  discard_ = std::move(discard);
}

void StateReceiver::Prepare(std::span<UniqueFd> fds) const {
  if (!prepare_) return;
  for (UniqueFd& fd : fds) prepare_(fd);
}

void StateReceiver::DiscardUnclaimed() {
  // Connections the old process closed (or could not export) after their
  // fds came: its exit closes them, once this copy is gone too.
  for (auto& [id, fd] : sent_before_) {
    if (discard_ && fd.get() >= 0) discard_(fd.get());
  }
  sent_before_.clear();
}

Result<std::string> StateReceiver::NextRecord(std::string_view what, std::vector<UniqueFd>* fds,
                                              std::optional<std::string>* message) {
  // Reads one whole record, from as many messages as it takes; the fds come
  // with its first. A message that is not a record (the end, an abort) is
  // returned in `*message` instead.
  RecordAssembler assembler;
  bool first = true;
  while (!assembler.complete()) {
    Result<FdMessage> m = Receive(sock_, deadline_ms_, what);
    if (!m.ok()) return m.status();
    if (first && message != nullptr && !m.value().bytes.starts_with(std::string_view(kMagic, 4))) {
      if (!m.value().fds.empty()) return Status::Refused("hand-off: fds with a message");
      *message = std::move(m.value().bytes);
      return std::string();
    }
    if (!first && !m.value().fds.empty()) {
      return Status::Refused("hand-off: fds with a record's continuation");
    }
    if (first) *fds = std::move(m.value().fds);
    first = false;
    if (Status s = assembler.Add(m.value().bytes); !s.ok()) return s;
  }
  return assembler.Take();
}

Result<Session> StateReceiver::Begin() {
  if (Status s = NonBlocking(sock_); !s.ok()) return s;
  std::vector<UniqueFd> fds;
  Result<std::string> record = Status::Ok();
  for (;;) {
    std::optional<std::string> message;
    record = NextRecord("the session record", &fds, &message);
    if (!record.ok()) return record.status();
    if (message) {
      if (*message == kAbortMessage) {
        return Status::Refused("hand-off: the old process called it off");
      }
      if (*message != kSocketsEndMessage) {
        return Status::Refused("hand-off: a message where the session record belongs");
      }
      if (Status s = SendNote(sock_, kSocketsTakenMessage, "the answer"); !s.ok()) return s;
      continue;
    }
    Result<Header> h = DecodeHeader(record.value());
    if (!h.ok()) return h.status();
    if (h->kind != RecordKind::kSockets) break;
    Result<std::vector<uint64_t>> ids = DecodeSockets(record.value(), fds.size());
    if (!ids.ok()) return ids.status();
    Prepare(fds);
    for (size_t i = 0; i < fds.size(); ++i) {
      if (!sent_before_.emplace(ids.value()[i], std::move(fds[i])).second) {
        return Status::Refused("hand-off: the socket of connection " +
                               std::to_string(ids.value()[i]) + " came twice");
      }
    }
  }
  if (!fds.empty()) return Status::Refused("hand-off: fds with the session record");
  Result<Session> session = DecodeSession(record.value());
  if (!session.ok()) return session.status();
  announced_ = session->connections;
  chunks_announced_ = session->chunks;
  return session;
}

Result<bool> StateReceiver::Next(std::vector<Connection>* connections, std::vector<UniqueFd>* fds) {
  connections->clear();
  fds->clear();
  std::optional<std::string> message;
  Result<std::string> chunk = NextRecord("a chunk of connections or the end", fds, &message);
  if (!chunk.ok()) return chunk.status();
  if (message) {
    if (*message == kAbortMessage) {
      return Status::Refused("hand-off: the old process called it off");
    }
    if (*message != kEndMessage || connections_ != announced_ ||
        (chunks_announced_ != 0 && chunks_ != chunks_announced_)) {
      return Status::Refused("hand-off: the state does not end where the session said (" +
                             std::to_string(connections_) + " connections came, " +
                             std::to_string(announced_) + " announced)");
    }
    DiscardUnclaimed();
    return false;
  }
  const bool sent_before = fds->empty();
  Result<std::vector<Connection>> conns =
      DecodeChunk(chunk.value(), sent_before ? kFdsSentBefore : fds->size());
  if (!conns.ok()) return conns.status();
  if (sent_before) {
    for (const Connection& c : conns.value()) {
      auto it = sent_before_.find(c.id);
      if (it == sent_before_.end()) {
        return Status::Refused("hand-off: connection " + std::to_string(c.id) +
                               " came without its socket");
      }
      fds->push_back(std::move(it->second));
      sent_before_.erase(it);
    }
  } else {
    Prepare(*fds);
  }
  connections_ += conns->size();
  ++chunks_;
  if (connections_ > announced_) {
    return Status::Refused("hand-off: more connections came than the session announced");
  }
  *connections = std::move(conns).value();
  return true;
}

bool StateReceiver::OldProcessEnded(int64_t wait_ms) const {
  if (old_pidfd_.get() < 0) return false;
  pollfd p{.fd = old_pidfd_.get(), .events = POLLIN, .revents = 0};
  int n;
  do {
    n = ::poll(&p, 1, static_cast<int>(wait_ms));
  } while (n < 0 && errno == EINTR);
  return n > 0;
}

Status SendRefusal(int sock, std::string_view why) {
  std::string message(kRefusalPrefix);
  message.append(why.substr(0, 4096));
  return SendNote(sock, message, "refusal");
}

Status SendAck(int sock) { return SendNote(sock, kAckMessage, "acknowledgement"); }

}  // namespace sb::worker::handoff
