// Upgrade: a shard process's part in an upgrade in place (docs/UPGRADE.md):
// the old process handing its connections over, the new one taking them.
//
// Owns: the steps and their timing on each side — for the old process
// (HandOff, on SIGUSR2), the fds sent ahead between loop turns while it
// serves on, waiting on the hand-off socket through the loop, then the
// state with everything paused; for the new process (ReceiveSocketsAhead,
// TakeOver), each fd prepared as it comes and each chunk adopted while the
// next is received on a thread of its own — the bounds of both (10 s, and
// 5 s more for the acknowledgement), and the test hook that pauses the new
// process at a chosen point. Does not: speak the conversation's messages
// (worker/handoff_transfer), encode the state (worker/handoff_state), or
// read it out of the shard and put it back (worker/shard).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/event_loop.h"
#include "common/status.h"
#include "worker/handoff_transfer.h"
#include "worker/shard.h"

namespace sb::worker {

// A hand-off's bound on each side, from the old process's SIGUSR2 and the
// new one's accept of the hand-off socket (which follows it closely).
inline constexpr int64_t kHandoffTimeoutMs = 10000;
// The old process waits this much longer for the acknowledgement than the
// new one may take to send it, so an acknowledgement never goes to a
// process that has given up and serves on.
inline constexpr int64_t kAckGraceMs = 5000;

// A test's hook into a hand-off (docs/UPGRADE.md, "Testing"):
// SWITCHBOARD_HANDOFF_PAUSE=sockets:N[:S] makes the new process stop
// receiving for S seconds (60 by default) once N fds have come (ahead of
// their state, as a rule), =chunks:N[:S] once N chunks of state have come,
// =acked[:S] once it has acknowledged the end, so that a test can kill one
// process or the other there. Unset, nothing pauses.
struct HandoffPause {
  uint64_t after_sockets = 0;  // 0: not
  uint64_t after_chunks = 0;   // 0: not
  bool after_ack = false;
  unsigned seconds = 60;

  static HandoffPause FromEnv();
  void Pause(std::string_view where) const;
};

// The old process's side. Start (on SIGUSR2) connects to the new process
// at `path` and sends the fds of every connection that will move, a few
// messages a loop turn while the shard serves on; once the new process has
// taken them all and nothing waits on the broker that only this process
// could answer (tried every 10 ms for a second), it sends the state with
// everything paused. `handed_over` runs once the new process has
// acknowledged (every socket is its own: exit, at once). Whatever fails before, it
// logs why and the shard serves on with every connection.
class HandOff {
 public:
  HandOff(EventLoop* loop, Shard* shard, std::string path, std::string name,
          std::function<void()> handed_over);
  ~HandOff();
  HandOff(const HandOff&) = delete;
  HandOff& operator=(const HandOff&) = delete;

  // Ignored while a hand-off is in progress.
  void Start();

 private:
  struct Outgoing;
  enum class Ahead { kAllSent, kMore, kNoRoom, kTooManyInFlight };
  Result<Ahead> SendSocketsAhead();
  void SendAhead();
  void EndAhead();
  void WhenReady(int64_t give_up_ms);
  bool HandOver();
  // Runs `then` once the hand-off socket is ready for `events`, or gives up
  // at the hand-off's deadline.
  void Await(uint32_t events, void (HandOff::*then)());
  void GiveUp(const Status& why);

  EventLoop* loop_;
  Shard* shard_;
  std::string path_;
  std::string name_;
  std::function<void()> handed_over_;
  std::unique_ptr<Outgoing> out_;  // while handing off
};

// The new process's side, before its shard exists: prepares every fd as it
// comes (Gateway::PrepareAdoption on `loop`'s epoll instance; one that
// cannot be is closed, logged), discards the ones never claimed, and
// applies the test hook's `sockets:N` pause.
void SetSocketHooks(handoff::StateReceiver& receiver, EventLoop* loop);

// The new process's side once `shard` exists with the old one's session:
// adopts each chunk as it comes (while the old process exports the next),
// then acknowledges the end. Nothing is written to a socket until the loop
// runs, after that: a refusal before it leaves every socket as the old
// process left it. An error (what failed, for the caller to log) if this
// process must exit instead of serving.
Status TakeOver(handoff::StateReceiver& receiver, int conn, Shard& shard, const std::string& name,
                int64_t start_ms);

}  // namespace sb::worker
