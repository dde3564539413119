// HandoffTransfer: the conversation of a hand-off over its unix socket
// (docs/UPGRADE.md, "The daemon ↔ shard contract"), on blocking calls
// bounded by a deadline.
//
// Owns: the order of the messages — sockets records (the fds of
// connections whose state follows, sent while the old process still
// serves), the session record, the chunks of connections each with its fds
// or naming connections whose fds came before (a chunk larger than one
// message continued in the next ones), the end (or an abort), then the
// receiver's acknowledgement (or refusal) — and waiting for each within the
// time given; for the new process, matching the fds that came before to
// their state, and telling the old one's crash (what came is kept) from its
// giving up (nothing is kept). Does not: read the state out of
// the shard or put it back (worker/shard does), encode it (worker/
// handoff_state), or decide what to do on a failure (worker_main: the old
// process serves on, the new one exits). Used on the shard's loop thread
// while the loop is not running anything else: a hand-off is a few tens of
// milliseconds, and nothing else may change the state meanwhile.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "common/unique_fd.h"
#include "worker/handoff_state.h"

namespace sb::worker::handoff {

// The end of the state and its acknowledgement: messages of their own, never
// a record (they do not begin with kMagic).
inline constexpr std::string_view kEndMessage = "handoff end";
// After the last sockets record, and its answer once the new process has
// taken every fd that came: the old one pauses only then, so that nobody
// waits while the new process is still installing sockets.
inline constexpr std::string_view kSocketsEndMessage = "handoff sockets end";
inline constexpr std::string_view kSocketsTakenMessage = "handoff sockets taken";
inline constexpr std::string_view kAckMessage = "handoff ack";
// The new process cannot take the state (it says why after this prefix): it
// has touched none of the sockets, and the old one keeps them all.
inline constexpr std::string_view kRefusalPrefix = "handoff refused: ";
// The old process calls the hand-off off before its end: the new one closes
// its copies untouched, and the old keeps every connection.
inline constexpr std::string_view kAbortMessage = "handoff abort";

// The new process's socket at `path`: a stale file there removed, bound
// (SOCK_SEQPACKET, mode 0600: only this user may hand a process its
// connections), listening for the one old process.
Result<UniqueFd> ListenHandoff(const std::string& path);
// The old process's connection to it.
Result<UniqueFd> ConnectHandoff(const std::string& path);
// Accepts the old process on `listener`, waiting at most until
// `deadline_ms`.
Result<UniqueFd> AcceptHandoff(int listener, int64_t deadline_ms);

// The old process's side, a step at a time: the shard exports and sends a
// batch of connections while the new process adopts the one before, so the
// hand-off takes about as long as the slower side alone. Each step waits at
// most until `deadline_ms` (monotonic) for room on the socket.
//
// Whatever fails, the old process keeps every connection: the new one
// writes nothing to a socket, nor reads one, before it has acknowledged
// the end, and the old process's copies of the fds keep the connections
// open whatever becomes of the new one's.
class StateSender {
 public:
  // The acknowledgement is awaited until `ack_deadline_ms`: later than the
  // new process's own deadline (it refuses rather than acknowledge past
  // it), so that an acknowledgement is never sent to a process that has
  // given up and serves on.
  StateSender(int sock, int64_t deadline_ms, int64_t ack_deadline_ms)
      : sock_(sock), deadline_ms_(deadline_ms), ack_deadline_ms_(ack_deadline_ms) {}

  // Before the session, while the old process serves on: the fds of up to
  // kMaxConnectionsPerChunk connections, fds[i] that of ids[i], in one
  // message; their state follows in Send (without fds). Never waits: says
  // whether the message went (or why not yet: SendResult).
  Result<SendResult> TrySendSockets(std::span<const uint64_t> ids, std::span<const int> fds);
  // After the last TrySendSockets: kSocketsEndMessage (false: no room yet),
  // then whether the new process has taken them all (false: not yet).
  // Neither waits.
  Result<bool> TryEndSockets();
  Result<bool> SocketsTaken();
  // The session record, announcing `connections` connections. Its chunk
  // count is left 0: the chunks go as they are made, up to the end message.
  Status Begin(Session session, size_t connections);
  // The next batch, connection i with fds[i] (not closed: they stay the
  // caller's until the acknowledgement), in chunks of at most
  // kMaxConnectionsPerChunk; or, with no fds, connections whose fds went in
  // TrySendSockets.
  Status Send(std::span<const Connection> connections, std::span<const int> fds);
  // The end, then the acknowledgement. kRefused if the new process refused
  // the state (also when a step failed because it refused and went away).
  Status Finish();
  // After a failed step, or to give up: tells the new process, if it can
  // still hear it, to close its copies untouched. Best effort: without the
  // end it takes nothing anyway.
  void Abort();

 private:
  // A refusal the new process left before it went away says why a step
  // failed.
  Status Failed(Status s);
  Status NonBlocking();

  int sock_;
  bool nonblocking_ = false;
  int64_t deadline_ms_;
  int64_t ack_deadline_ms_;
};

// The new process's side, a step at a time: the session, then each chunk as
// it comes (the caller adopts it before asking for the next), then the end;
// then SendAck, before `deadline_ms` only (see StateSender).
// Refused if a record does not decode, a chunk's fds do not match it, or
// anything comes out of order; kNotFound for a version this binary cannot
// read (roll back).
class StateReceiver {
 public:
  // The old process's pid and a pidfd on it, taken from the socket now
  // while it surely runs: if the socket closes before the end, whether it
  // has ended tells a crash (keep what came) from giving up (take nothing).
  StateReceiver(int sock, int64_t deadline_ms);
  // Closes the fds that came before their state and were never claimed.
  ~StateReceiver();
  StateReceiver(const StateReceiver&) = delete;
  StateReceiver& operator=(const StateReceiver&) = delete;

  // What is done with every fd as it arrives (`prepare`: made ready to
  // adopt, or closed if it cannot be) and with one that came before its
  // state and is then never claimed, before it is closed (`discard`); both
  // may run on the thread that calls Next. Unset, nothing is done.
  void SetSocketHooks(std::function<void(UniqueFd&)> prepare, std::function<void(int)> discard);

  // The sockets records, then the session record.
  Result<Session> Begin();
  // The next chunk into `*connections` and `*fds` (replaced; prepared);
  // false once the end came, checked against the session's counts (the
  // fds that came before and were not claimed are then discarded). Refused,
  // saying so, if the old process called the hand-off off (kAbortMessage),
  // or a chunk without fds names a connection whose fd did not come before.
  Result<bool> Next(std::vector<Connection>* connections, std::vector<UniqueFd>* fds);
  // After a failed step: true if the old process has ended (within
  // `wait_ms`), so the connections already taken are this process's alone.
  bool OldProcessEnded(int64_t wait_ms) const;

 private:
  // One record (its fds into `*fds`); with `message`, a first message that
  // is not a record (the end, an abort) is put there instead.
  Result<std::string> NextRecord(std::string_view what, std::vector<UniqueFd>* fds,
                                 std::optional<std::string>* message);

  void Prepare(std::span<UniqueFd> fds) const;
  void DiscardUnclaimed();

  int sock_;
  int64_t deadline_ms_;
  UniqueFd old_pidfd_;
  std::function<void(UniqueFd&)> prepare_;
  std::function<void(int)> discard_;
  // The fds that came in sockets records, by the old process's connection
  // id, until a chunk claims them.
  std::unordered_map<uint64_t, UniqueFd> sent_before_;
  uint64_t announced_ = 0;         // connections, from the session
  uint64_t chunks_announced_ = 0;  // 0: up to the end message
  uint64_t connections_ = 0;
  uint64_t chunks_ = 0;
};

// After the end: the state is taken.
Status SendAck(int sock);
// Instead of the acknowledgement: the state is not taken, and why.
Status SendRefusal(int sock, std::string_view why);

}  // namespace sb::worker::handoff
