// HandoffTransfer: the conversation of a hand-off over its unix socket
// (docs/UPGRADE.md, "The daemon ↔ shard contract"), on blocking calls
// bounded by a deadline.
//
// Owns: the order of the messages — the session record, the chunks of
// connections each with its fds (a chunk larger than one message continued
// in the next ones), the end, then the receiver's acknowledgement — and
// waiting for each within the time given. Does not: read the state out of
// the shard or put it back (worker/shard does), encode it (worker/
// handoff_state), or decide what to do on a failure (worker_main: the old
// process serves on, the new one exits). Used on the shard's loop thread
// while the loop is not running anything else: a hand-off is a few
// milliseconds, and nothing else may change the state meanwhile.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/unique_fd.h"
#include "worker/handoff_state.h"

namespace sb::worker::handoff {

// The end of the state and its acknowledgement: messages of their own, never
// a record (they do not begin with kMagic).
inline constexpr std::string_view kEndMessage = "handoff end";
inline constexpr std::string_view kAckMessage = "handoff ack";
// The new process cannot take the state (it says why after this prefix): it
// has touched none of the sockets, and the old one keeps them all.
inline constexpr std::string_view kRefusalPrefix = "handoff refused: ";

// The new process's socket at `path`: a stale file there removed, bound
// (SOCK_SEQPACKET, mode 0600: only this user may hand a process its
// connections), listening for the one old process.
Result<UniqueFd> ListenHandoff(const std::string& path);
// The old process's connection to it.
Result<UniqueFd> ConnectHandoff(const std::string& path);
// Accepts the old process on `listener`, waiting at most until
// `deadline_ms`.
Result<UniqueFd> AcceptHandoff(int listener, int64_t deadline_ms);

// The old process's side. Sends `session` (its connections and chunks
// counts are filled here), then `connections` in chunks, connection i with
// fds[i] (not closed: they stay the caller's until the acknowledgement),
// then the end, and waits for the acknowledgement, all before `deadline_ms`
// (monotonic). `*sent` is how many connections went (with their chunks,
// whole): those belong to the new process even if the rest failed — unless
// it refused the state (kRefused, `*sent` 0: it touched none of them).
Status SendState(int sock, Session session, std::span<const Connection> connections,
                 std::span<const int> fds, int64_t deadline_ms, size_t* sent);

// What the new process received: the session and every connection with its
// fd.
struct Received {
  Session session;
  std::vector<Connection> connections;
  std::vector<UniqueFd> fds;
};
// The new process's side: reads the session, the chunks it announced and the
// end before `deadline_ms`. Refused if a record does not decode, a chunk's
// fds do not match it, or anything comes out of order; kNotFound for a
// version this binary cannot read (roll back). The caller imports, then
// acknowledges with SendAck.
Result<Received> ReceiveState(int sock, int64_t deadline_ms);
Status SendAck(int sock);
// Instead of the acknowledgement: the state is not taken, and why.
Status SendRefusal(int sock, std::string_view why);

}  // namespace sb::worker::handoff
