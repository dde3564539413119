// RemotePresence: the other shards' presence on the topics this shard has
// subscribers for, as the broker reports it.
//
// Owns: per topic, the presence_state of every other shard (Phoenix's shape,
// {key: {"metas": [...]}}, metas carrying their "phx_ref"), kept by applying
// the broker's presence_diff messages and replaced by its snapshots; the
// diff a snapshot makes against what was known (what local clients must be
// told); and merging a topic's local and remote states for a joiner's
// presence_state. Does not: know links or shards (the broker already took
// this shard's own metas out), send anything, or decide which topics are
// kept — the hub drops a topic when its last local subscriber leaves.
// Plain data on the shard's loop thread; the hub owns one.
//
// Why Boost.JSON values here and text in worker/presence.h: remote presence
// changes arrive as diffs that must be merged meta by meta, which is what a
// parsed object is good at; it is read only when a client joins.
#pragma once

#include <boost/json/object.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/status.h"

namespace sb::worker {

class RemotePresence {
 public:
  // Applies a presence_diff ({"joins": {...}, "leaves": {...}}): a joined
  // meta replaces one of the same key and phx_ref, a leave removes it.
  // Refused, changing nothing, if `diff_json` is not of that shape.
  Status ApplyDiff(std::string_view topic, std::string_view diff_json);
  // What the other shards have on `topic` is now `state_json`. Returns the
  // presence_diff from what was known to it, nullopt if nothing changed;
  // Refused, changing nothing, if it is not a presence_state.
  Result<std::optional<std::string>> Replace(std::string_view topic, std::string_view state_json);
  void Drop(std::string_view topic) { topics_.erase(std::string(topic)); }
  // presence_state of `topic` on the other shards, "{}" if none known.
  std::string StateJson(std::string_view topic) const;
  // `local_state` (this shard's presence_state of `topic`) with the other
  // shards' metas added under the same keys: what a joiner gets.
  std::string MergedStateJson(std::string_view topic, std::string_view local_state) const;
  // Whether anything is known of `topic` (a snapshot or a diff came).
  bool Has(std::string_view topic) const { return topics_.contains(std::string(topic)); }
  size_t topics() const { return topics_.size(); }

 private:
  std::unordered_map<std::string, boost::json::object> topics_;
};

}  // namespace sb::worker
