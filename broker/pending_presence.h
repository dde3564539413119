// PendingPresence: the presence changes one shard has not been sent yet,
// merged per topic.
//
// Owns: per topic, the net change since the shard was last sent that
// topic's diff (or a snapshot of it): metas that joined or changed text, and
// metas that left. A meta that joins and leaves again before it is sent
// cancels out; one that leaves and comes back unchanged cancels out too.
//
// Why: presence is state, not a stream. A shard that falls behind is owed
// what changed, not every step of it, so what waits for it is bounded by
// the presence itself (one entry per meta at most), never by the churn. At
// 250,000 joins on 13 shards the per-change diffs were 3 million messages
// through the broker's queues, which shed, and the repair (a snapshot of
// every topic) made the backlog worse; merged, a slow shard's queue holds
// at most one diff per topic from here, and each diff it reads says more.
// (Phoenix's tracker does the same between nodes: it sends merged deltas
// once per broadcast period.)
//
// Does not: decide when a shard is sent what waits (the router does, from
// the shard's backlog and the age of the oldest change), read clocks (times
// are passed in), or know the registry. Plain data on the broker's loop
// thread; one per shard link, owned with the link.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "broker/presence_registry.h"
#include "broker/string_map.h"

namespace sb::broker {

class PendingPresence {
 public:
  // `delta` happened on `topic` (joins before leaves, as the registry
  // reports them) at `now_us`.
  void Add(std::string_view topic, const PresenceDelta& delta, int64_t now_us);
  // The shard is sent a snapshot of `topic`: nothing of it waits any more.
  void Drop(std::string_view topic);
  // What waits, one diff per topic (topics in the order they first changed,
  // a topic whose changes cancelled out left out); leaves nothing waiting.
  std::vector<TopicDiff> Take();

  bool empty() const { return topics_.empty(); }
  size_t topics() const { return topics_.size(); }
  size_t metas() const { return metas_; }
  // When the oldest change still waiting came; meaningful unless empty().
  int64_t oldest_us() const { return oldest_us_; }

 private:
  struct Entry {
    std::string key;
    std::string phx_ref;
    std::string text;  // the meta's text: the joined one, or the one that left
    bool joined = false;
    // The shard already has a meta with this (key, phx_ref): a join then
    // replaces its text, and a leave after it must still be sent.
    bool known = false;
  };
  struct Topic {
    size_t order = 0;          // when it first changed, for Take's order
    StringMap<Entry> entries;  // by EntryId
  };

  static std::string EntryId(std::string_view key, std::string_view phx_ref);
  void Insert(Topic& t, std::string id, const PresenceMeta& m, bool joined, bool known);
  void Join(Topic& t, const PresenceMeta& m);
  void Leave(Topic& t, const PresenceMeta& m);

  StringMap<Topic> topics_;
  size_t next_order_ = 0;
  size_t metas_ = 0;
  int64_t oldest_us_ = 0;
};

}  // namespace sb::broker
