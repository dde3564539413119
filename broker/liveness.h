// Liveness: which links have gone silent, and when to send heartbeats.
//
// Owns: per link, when the broker last heard anything from it; the time the
// broker last sent its own heartbeats. Heartbeats go both ways: the broker
// sends one to every link each interval, and any frame from a link (its
// heartbeat or anything else) counts as hearing from it. A link silent for
// more than interval × misses is dead.
// Does not: read clocks (times are monotonic milliseconds passed in), send,
// or clean up a dead link's interests, presences and queue — the caller does
// that with what Expired returns. Plain data on the broker's loop thread.
//
// Expiry scans every link: a broker has a handful of links (its node's
// shards and the peer brokers), and Cron runs a few times per interval.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <unordered_map>
#include <vector>

#include "broker/link_table.h"
#include "common/status.h"

namespace sb::broker {

struct LivenessPolicy {
  int64_t interval_ms = 1000;  // heartbeat period, both ways
  int misses = 3;              // silent intervals before a link is dead
};

// InvalidConfig unless interval_ms > 0 and misses > 0.
Status ValidateLivenessPolicy(const LivenessPolicy& policy);

class Liveness {
 public:
  // `policy` must pass ValidateLivenessPolicy (the program aborts otherwise).
  explicit Liveness(LivenessPolicy policy);

  // A frame arrived from `link` at `now_ms`; starts tracking a new link.
  // Time never goes back: an earlier `now_ms` than already recorded is ignored.
  void OnHeard(LinkId link, int64_t now_ms);
  // Stops tracking `link` (it disconnected or was removed).
  void Remove(LinkId link);

  // Links silent for more than interval × misses at `now_ms`, in increasing
  // id order. They stop being tracked: each dead link is reported once.
  std::vector<LinkId> Expired(int64_t now_ms);
  // When the earliest tracked link would expire (the first time at which
  // Expired returns it), nullopt if none is tracked: for the loop's timer.
  std::optional<int64_t> NextExpiry() const;

  // The broker itself did not run for `ms` (a late tick): silence in that
  // time was its own, not the links', so every link is credited with it.
  void Forgive(int64_t ms);

  // When the broker's next heartbeats are due: `now_ms` if none was sent yet
  // or they are overdue, else the last send plus the interval.
  int64_t NextHeartbeatDue(int64_t now_ms) const;
  // The broker sent its heartbeats at `now_ms`.
  void OnHeartbeatSent(int64_t now_ms) { last_sent_ms_ = now_ms; }

  bool tracked(LinkId link) const { return last_heard_.contains(link); }
  size_t size() const { return last_heard_.size(); }
  int64_t timeout_ms() const { return policy_.interval_ms * policy_.misses; }

 private:
  LivenessPolicy policy_;
  std::optional<int64_t> last_sent_ms_;
  std::unordered_map<LinkId, int64_t> last_heard_;
};

}  // namespace sb::broker
