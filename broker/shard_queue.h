// ShardQueue: what the broker holds for one link, and the credit it may use.
//
// Owns: the link's outbound queue (FIFO), the credit the link has granted,
// the overload policy applied when the queue is full, and counters. Flow
// control is explicit demand, as in GenStage: the link grants n, the broker
// sends at most n more messages, and everything else waits here — so the
// depth reported (messages and bytes) is the real backlog for that link, and
// a link that stops granting fills only its own queue, never slowing others.
// Does not: send, read clocks (enqueue times are passed in), or decide what
// a disconnect means — Push reports it and the caller drops the link.
// Plain data on the broker's loop thread; one per link, owned with the link.
//
// Bounds apply to everything queued, sendable or not. The loop drains
// sendable messages (PopSendable) before it reads more input for the same
// turn, so in steady state the queue holds only what waits for credit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace sb::broker {

enum class OverloadPolicy : uint8_t {
  kShedOldest,  // drop from the head until the new message fits; count the drops
  kDisconnect,  // drop the whole queue and report the link for disconnection
};

struct QueuePolicy {
  size_t max_messages = 10'000;
  size_t max_bytes = 64u << 20;
  OverloadPolicy overload = OverloadPolicy::kShedOldest;
};

// InvalidConfig unless both bounds are nonzero.
Status ValidateQueuePolicy(const QueuePolicy& policy);

// One message's bytes, immutable and shared by every queue it is in: a
// broadcast to five shards is one buffer and five references.
//
// Why std::shared_ptr (an atomic count) and not a plain-counter buffer like
// the shard's: the broker's fan-out is per link (a handful of shards and
// peers), not per socket, so a broadcast costs a few locked increments; and
// an atomic count is what lets the link layer hand the bytes to libzmq
// without a copy (zmq_msg_init_data's free function runs on libzmq's I/O
// thread, which then holds the last reference).
using Payload = std::shared_ptr<const std::string>;

struct QueuedMessage {
  Payload payload;
  size_t bytes = 0;         // what the bounds count: the payload plus any envelope frames
  int64_t enqueued_us = 0;  // monotonic, from the caller
  uint64_t tag = 0;         // the caller's: what the message is, for its accounting of drops
};

enum class PushOutcome : uint8_t {
  kQueued,      // queued; nothing dropped
  kShed,        // queued after `dropped` older messages were dropped (kShedOldest)
  kTooLarge,    // not queued: larger than max_bytes alone; the queue is untouched
  kDisconnect,  // not queued; the queue was dropped (`dropped` messages, the new one
                // included) and the link must be disconnected (kDisconnect)
};

struct PushResult {
  PushOutcome outcome = PushOutcome::kQueued;
  size_t dropped = 0;
};

class ShardQueue {
 public:
  // `policy` must pass ValidateQueuePolicy (checked: the program aborts
  // otherwise, since the configuration was validated at startup).
  explicit ShardQueue(QueuePolicy policy);

  // Queues `msg` at the tail, applying the overload policy if it does not
  // fit. After a kDisconnect the queue is closed: every later Push returns
  // kDisconnect (dropping that message), Grant is ignored and PopSendable
  // returns nothing, until the caller removes the link.
  // Every message the call drops (shed from the head, the queue dropped on
  // kDisconnect, or `msg` itself when it is not queued) is appended to
  // `*dropped` when given, so the caller can account for what it carried.
  [[nodiscard]] PushResult Push(QueuedMessage msg, std::vector<QueuedMessage>* dropped = nullptr);

  // The link asks for `n` more messages. Credit accumulates (saturating).
  void Grant(uint64_t n);
  // The link started over (it said hello again): its credit becomes `n`,
  // whatever was granted before. Queued messages stay queued.
  void ResetCredit(uint64_t n);
  // Puts `msgs` (oldest first) back at the head, ahead of everything queued:
  // messages that were popped to be sent but never reached the link (the
  // send failed, or the connection they went on closed before crediting
  // them). The bounds do not apply — these are older than anything queued,
  // and at most the link's credit window of them comes back — and they
  // count as not sent. Dropped (as dropped_disconnect) if the queue is closed.
  void Requeue(std::vector<QueuedMessage> msgs);
  // The link is gone: everything queued is dropped (counted as
  // dropped_disconnect) and returned, oldest first; the queue closes.
  std::vector<QueuedMessage> Close();

  // Moves up to min(credit, max) messages from the head to `*out` (appended,
  // oldest first), each consuming one credit. Returns how many.
  size_t PopSendable(std::vector<QueuedMessage>* out,
                     size_t max = std::numeric_limits<size_t>::max());

  size_t depth_messages() const { return queue_.size(); }
  size_t depth_bytes() const { return bytes_; }
  uint64_t credit() const { return credit_; }
  bool closed() const { return closed_; }
  // Enqueue time of the head, for a queue-delay gauge; nullopt when empty.
  std::optional<int64_t> oldest_enqueued_us() const;
  const QueuePolicy& policy() const { return policy_; }

  // Monotonic. Every pushed message ends up in exactly one place:
  // pushed == sent + dropped_shed + dropped_disconnect + dropped_too_large
  //           + depth_messages().
  struct Counters {
    uint64_t pushed = 0;    // Push calls
    uint64_t enqueued = 0;  // pushes that entered the queue
    uint64_t sent = 0;
    uint64_t sent_bytes = 0;
    uint64_t dropped_shed = 0;        // shed from the head (kShedOldest)
    uint64_t dropped_disconnect = 0;  // dropped with the queue, or pushed after it closed
    uint64_t dropped_too_large = 0;   // refused alone (kTooLarge)
    uint64_t dropped_bytes = 0;       // bytes of all dropped messages
  };
  const Counters& counters() const { return counters_; }

 private:
  bool Fits(size_t bytes) const {
    return queue_.size() < policy_.max_messages && bytes_ + bytes <= policy_.max_bytes;
  }
  void DropHead(std::vector<QueuedMessage>* dropped);

  QueuePolicy policy_;
  std::deque<QueuedMessage> queue_;
  size_t bytes_ = 0;
  uint64_t credit_ = 0;
  bool closed_ = false;
  Counters counters_;
};

}  // namespace sb::broker
