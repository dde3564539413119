// Presence: who is tracked on one topic of this shard, and the diffs.
//
// Owns: key → metas for one topic, where each meta is the client's meta
// object with our "phx_ref" added, and the JSON texts Phoenix clients expect:
// `presence_state` ({key: {"metas": [...]}}) and `presence_diff`
// ({"joins": {...}, "leaves": {...}}), as phoenix.js's Presence syncs them.
// Does not: choose phx_refs (the hub makes them unique per shard), know
// sockets or join_refs, or send anything. Plain data on the shard's loop
// thread; the hub owns one per topic that has presence.
//
// Metas are stored as serialized JSON text: they are written once at track
// time and then only copied into states and diffs, so keeping them as text
// makes every later presence_state a concatenation.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/status.h"

namespace sb::worker {

class Presence {
 public:
  // Tracks one meta under `key`. `meta_json` is the client's meta object as
  // JSON text ("" means {}); its own "phx_ref", if any, is replaced by ours,
  // which comes first in the stored object. Returns the presence_diff with
  // this one join, or Refused if `meta_json` is not a JSON object. A key may
  // hold several metas (one per tracking socket). `phx_ref` must be unique.
  Result<std::string> Track(std::string_view key, std::string_view phx_ref,
                            std::string_view meta_json);

  // Removes the meta `phx_ref` of `key`. Returns the presence_diff with its
  // leave, or nullopt if no such meta is tracked.
  std::optional<std::string> Untrack(std::string_view key, std::string_view phx_ref);

  // Removes several metas at once (a socket or a whole shard went away) and
  // returns ONE presence_diff with every leave, grouped by key; nullopt if
  // none of them was tracked.
  std::optional<std::string> UntrackMany(
      const std::vector<std::pair<std::string, std::string>>& key_refs);

  // {key: {"metas": [...]}, ...}, "{}" when empty. Metas of a key are in
  // track order; keys are in no particular order.
  std::string StateJson() const;

  // The stored meta (with its "phx_ref") of `key` / `phx_ref`; nullptr if
  // not tracked. Valid until the next change.
  const std::string* MetaJson(std::string_view key, std::string_view phx_ref) const;
  // Calls `fn(key, phx_ref, meta_json)` for every meta.
  template <typename Fn>
  void ForEach(Fn&& fn) const {
    for (const auto& [key, metas] : keys_) {
      for (const Meta& m : metas) fn(key, m.phx_ref, m.json);
    }
  }
  bool empty() const { return keys_.empty(); }
  size_t keys() const { return keys_.size(); }

 private:
  struct Meta {
    std::string phx_ref;
    std::string json;  // the full meta object, "phx_ref" included
  };
  // Removes one meta; moves its JSON into `*json`. False if not tracked.
  bool Remove(std::string_view key, std::string_view phx_ref, std::string* json);

  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, std::vector<Meta>, StringHash, std::equal_to<>> keys_;
};

}  // namespace sb::worker
