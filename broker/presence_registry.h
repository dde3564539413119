// PresenceRegistry: the cluster's presence, as each link reported it.
//
// Owns: per topic, per link, key → metas, where a meta is the object a shard
// tracked (its "phx_ref" included) kept as JSON text; and the Phoenix texts
// built from it: `presence_diff` ({"joins":{...},"leaves":{...}}) for the
// changes, `presence_state` ({key:{"metas":[...]}}) for a topic across links
// (the shapes of worker/presence.h). Every change returns the diff of what
// actually changed, so a resent join or an unknown leave reaches no client.
// Does not: choose phx_refs (shards make them unique), parse wire frames
// (callers pass keys, refs and meta texts), or decide who receives a diff
// (the interest table does). Plain data on the broker's loop thread; the
// broker owns one. Memory of a topic is released when its last meta leaves.
//
// Metas stay text for the same reason as in worker/presence.h: they are
// written once and then only copied into states and diffs, which makes each
// of those a concatenation. Boost.JSON checks each meta once, on arrival, and
// escapes keys.
#pragma once

#include <cstddef>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "broker/link_table.h"
#include "broker/string_map.h"
#include "common/status.h"

namespace sb::broker {

struct PresenceMeta {
  std::string key;
  std::string phx_ref;
  // Joins: the meta object as JSON text; it must be an object whose
  // "phx_ref" is `phx_ref`. Leaves: ignored (the stored meta is what leaves).
  std::string meta_json;
  // In a PresenceDelta's joins: the meta was known with another text, which
  // this one replaces (not a new meta).
  bool replaces = false;
};

// Everything a link tracks on one topic (a resync sends one per topic).
struct TopicPresence {
  std::string topic;
  std::vector<PresenceMeta> metas;
};

// What changed on one topic: metas that joined (or whose text changed) and
// metas that left, each with its text (a leave carries the text that left).
// A meta is in at most one of the two.
struct PresenceDelta {
  std::vector<PresenceMeta> joins;
  std::vector<PresenceMeta> leaves;
  bool empty() const { return joins.empty() && leaves.empty(); }
};

// The presence_diff payload of `delta` ({"joins":{...},"leaves":{...}}),
// metas grouped by key, keys in order of first appearance.
std::string DiffJson(const PresenceDelta& delta);

// What changed on one topic.
struct TopicDiff {
  std::string topic;
  PresenceDelta delta;
};

class PresenceRegistry {
 public:
  // `link` reports joins and leaves on `topic`; joins are applied before
  // leaves (the order a Phoenix client applies a diff in). A meta is
  // identified by (key, phx_ref): joining one already known with the same
  // text changes nothing, with another text replaces it (and is a join in the
  // result, which a client applies as a replacement); joined twice in one
  // call, the last text counts. Leaving one not known changes nothing. Returns what changed,
  // nullopt if nothing did; Refused, changing nothing, if a join's meta is invalid.
  Result<std::optional<PresenceDelta>> ApplyDiff(LinkId link, std::string_view topic,
                                                 const std::vector<PresenceMeta>& joins,
                                                 const std::vector<PresenceMeta>& leaves);

  // `link` is gone: all its metas leave. Returns one diff per topic it had
  // metas on, each with every leave of that topic (grouped by key); topics
  // in no particular order.
  std::vector<TopicDiff> RemoveShard(LinkId link);

  // Resync: what `link` tracks becomes exactly `state` (a topic absent from
  // it has no metas of `link` any more). Returns one diff per topic whose
  // metas changed: joins for new or changed metas, leaves for vanished ones;
  // topics in no particular order. Refused, changing nothing, if a meta is
  // invalid.
  Result<std::vector<TopicDiff>> ReplaceShard(LinkId link, const std::vector<TopicPresence>& state);

  // Resync of one topic: what `link` tracks on `topic` becomes exactly
  // `metas` (its other topics unchanged). Returns what changed,
  // nullopt if nothing did; Refused, changing nothing, if a meta is invalid.
  // A peer node's per-topic snapshot (docs/CLUSTER.md) arrives this way.
  Result<std::optional<PresenceDelta>> ReplaceTopic(LinkId link, std::string_view topic,
                                                    const std::vector<PresenceMeta>& metas);

  // Every meta on `topic` of the links `include` accepts, link by link in
  // order of each link's first meta, each link's in join order.
  template <typename Pred>
  std::vector<PresenceMeta> Metas(std::string_view topic, Pred include) const {
    std::vector<PresenceMeta> out;
    auto t = topics_.find(topic);
    if (t == topics_.end()) return out;
    for (const auto& [l, keys] : t->second.links) {
      if (!include(l)) continue;
      for (const auto& [key, metas] : keys) {
        for (const Meta& m : metas) out.push_back({key, m.phx_ref, m.json});
      }
    }
    return out;
  }

  // presence_state of `topic` across links, without the metas of `except`
  // (kNoLink: all), "{}" if none. A key's metas are grouped, link by link in
  // order of each link's first meta on the topic, each link's in join order;
  // keys in no particular order.
  std::string StateJson(std::string_view topic, LinkId except = kNoLink) const;

  size_t topics() const { return topics_.size(); }
  size_t metas() const { return metas_; }
  size_t links() const { return by_link_.size(); }

 private:
  struct Meta {
    std::string phx_ref;
    std::string json;
  };
  using Keys = StringMap<std::vector<Meta>>;  // one link's metas on one topic, per key
  struct Topic {
    // A topic has metas from a handful of links: a vector, in first-report order.
    std::vector<std::pair<LinkId, Keys>> links;
  };
  using TopicMap = StringMap<Topic>;
  struct Leave {
    std::string_view key;
    std::string_view phx_ref;
  };

  // Applies validated changes; returns what changed or nullopt.
  std::optional<PresenceDelta> Apply(LinkId link, std::string_view topic,
                                     std::vector<const PresenceMeta*> joins,
                                     const std::vector<Leave>& leaves);
  // (key, phx_ref) of every meta `link` has on `topic` that is not in `keep`.
  std::vector<std::pair<std::string, std::string>> KeyRefs(
      LinkId link, std::string_view topic,
      const std::set<std::pair<std::string_view, std::string_view>>& keep) const;
  // Erases `link`'s entry in `topic` if it holds no key, and the topic if no
  // link is left. Invalidates `topic` when it erases it.
  void Prune(LinkId link, TopicMap::iterator topic);

  TopicMap topics_;
  // Topics each link has metas on: views into topics_' keys (nodes never
  // move; a topic lives while any link has metas on it).
  std::unordered_map<LinkId, std::unordered_set<std::string_view>> by_link_;
  size_t metas_ = 0;
};

}  // namespace sb::broker
