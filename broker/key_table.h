// KeyTable: the idempotency keys of the node's keyed publishes, as the
// broker has seen them.
//
// Owns: which (key, topic) claims were made within mesh::kKeyTtlMs, by which
// publish (origin instance and seq), bounded to max_entries (the oldest
// forgotten first, counted); and the decision for a keyed publish: the first
// of its claim, the same publish again (a shard re-sending after a broker
// change), or a repeat (docs/PROTOCOL.md, Idempotency). Claims also come from
// hellos (what a shard accepted under the previous broker), with their age.
// Does not: route, ack or read clocks (times are passed in, monotonic ms).
// Plain data on the broker's loop thread; the router owns one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "protocol/mesh.h"

namespace sb::broker {

class KeyTable {
 public:
  explicit KeyTable(size_t max_entries = mesh::kMaxHelloKeys) : max_entries_(max_entries) {}

  enum class Verdict : uint8_t {
    kFirst,   // no claim: recorded now; route the publish
    kSame,    // claimed by this very publish (origin and seq): route it again
    kRepeat,  // claimed by another publish: do not route
  };
  // A keyed publish of `topic` by `origin` numbered `seq`, at `now_ms`.
  Verdict Claim(std::string_view key, std::string_view topic, uint64_t origin, uint64_t seq,
                int64_t now_ms);
  // A claim a shard's hello restates: made `age_ms` before `now_ms`. Of two
  // restatements of one claim the older is kept (the publish the last
  // broker saw first, as far as the shards' clocks tell); one past
  // kKeyTtlMs is ignored.
  void Restore(std::string_view key, std::string_view topic, uint64_t origin, uint64_t seq,
               uint32_t age_ms, int64_t now_ms);

  size_t size() const { return by_claim_.size(); }
  uint64_t evicted() const { return evicted_; }

 private:
  struct Entry {
    int64_t at_ms;
    uint64_t origin;
    uint64_t seq;
  };
  // The key and topic as one string: the key's length first, so no two
  // (key, topic) pairs make the same string.
  static std::string ClaimOf(std::string_view key, std::string_view topic);
  void Expire(int64_t now_ms);
  void Insert(std::string claim, Entry entry);

  size_t max_entries_;
  std::unordered_map<std::string, Entry> by_claim_;
  // (at_ms, claim), oldest first: hellos restore claims out of order, so a
  // set rather than a deque.
  std::set<std::pair<int64_t, std::string>> by_age_;
  uint64_t evicted_ = 0;
};

}  // namespace sb::broker
