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
// Metas are kept as JSON text, as in worker/presence.h and the broker's
// registry: every shard holds this copy of the whole node's presence, and a
// joiner's presence_state is read from it, so the copy must be small and a
// state a concatenation. Boost.JSON parses each diff and snapshot once, to
// check its shape and split it into metas.
#pragma once

#include <boost/container/small_vector.hpp>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/status.h"

namespace sb::worker {

class RemotePresence {
 public:
  // Applies a presence_diff ({"joins": {...}, "leaves": {...}}), joins
  // first: a joined meta replaces one of the same key and phx_ref (and goes
  // last under its key), a leave removes it. Refused, changing nothing, if
  // `diff_json` is not of that shape.
  Status ApplyDiff(std::string_view topic, std::string_view diff_json);
  // What the other shards have on `topic` is now `state_json`. Returns the
  // presence_diff from what was known to it (joins: new metas and those
  // whose text changed; leaves: the known metas it lacks), nullopt if
  // nothing changed; Refused, changing nothing, if it is not a
  // presence_state.
  Result<std::optional<std::string>> Replace(std::string_view topic, std::string_view state_json);
  void Drop(std::string_view topic);
  // presence_state of `topic` on the other shards, "{}" if none known. A
  // key's metas in the order they came; keys in no particular order.
  std::string StateJson(std::string_view topic) const;
  // `local_state` (this shard's presence_state of `topic`) with the other
  // shards' metas added under the same keys, after the local ones: what a
  // joiner gets. `local_state` as it is when no remote meta is known.
  std::string MergedStateJson(std::string_view topic, std::string_view local_state) const;
  // Whether anything is known of `topic` (a snapshot or a diff came), even
  // if it has no metas.
  bool Has(std::string_view topic) const { return topics_.find(topic) != topics_.end(); }
  size_t topics() const { return topics_.size(); }
  // Metas held, all topics.
  size_t metas() const { return count_.metas; }
  // Text held: each key once per topic, each meta's phx_ref and JSON.
  size_t bytes() const { return count_.bytes; }

 private:
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  template <typename V>
  using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

  // One meta: its phx_ref and its JSON text in one allocation.
  class Meta {
   public:
    Meta(std::string_view ref, std::string_view json);
    std::string_view ref() const { return std::string_view(text_).substr(0, ref_size_); }
    std::string_view json() const { return std::string_view(text_).substr(ref_size_); }
    size_t bytes() const { return text_.size(); }

   private:
    std::string text_;
    uint32_t ref_size_;
  };
  // A key has one meta per tracking socket: nearly always one.
  using Metas = boost::container::small_vector<Meta, 1>;
  using Keys = StringMap<Metas>;

  // Metas and bytes held (as metas() and bytes() count them).
  struct Count {
    size_t metas = 0;
    size_t bytes = 0;
  };

  // Adds `meta` under `key`, replacing one of its phx_ref, into `keys` and
  // `count`.
  static void Join(Keys& keys, std::string_view key, Meta meta, Count& count);
  // Removes the meta `ref` of `key`, if known; a key left without metas goes.
  static void Leave(Keys& keys, std::string_view key, std::string_view ref, Count& count);
  // Takes all of `keys` out of the counts.
  void Uncount(const Keys& keys);

  StringMap<Keys> topics_;
  Count count_;
};

}  // namespace sb::worker
