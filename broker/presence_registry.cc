#include "broker/presence_registry.h"

#include <algorithm>
#include <boost/json.hpp>
#include <exception>
#include <set>

namespace sb::broker {
namespace {

// The nesting a shard accepts from its clients (protocol/phoenix.h
// kMaxJsonDepth); a meta the shard let through must pass here too.
constexpr int kMaxMetaDepth = 64;

Status ValidateJoin(const PresenceMeta& m) {
  if (m.phx_ref.empty()) return Status::Refused("presence meta without phx_ref");
  boost::json::parse_options options;
  options.max_depth = kMaxMetaDepth;
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(
      boost::json::string_view(m.meta_json.data(), m.meta_json.size()), ec, {}, options);
  if (ec || !v.is_object()) return Status::Refused("presence meta is not a JSON object");
  const boost::json::value* ref = v.get_object().if_contains("phx_ref");
  if (!ref || !ref->is_string() || ref->get_string() != m.phx_ref) {
    return Status::Refused("presence meta's phx_ref does not match");
  }
  return Status::Ok();
}

// Boost.JSON reports allocation failure by throwing; it stops here.
Status ValidateJoins(const std::vector<PresenceMeta>& joins) {
  try {
    for (const PresenceMeta& m : joins) {
      if (Status s = ValidateJoin(m); !s.ok()) return s;
    }
    return Status::Ok();
  } catch (const std::exception& e) {
    return Status::Internal(std::string("presence meta: ") + e.what());
  }
}

// Metas grouped by key, keys in order of first appearance: the body of a
// presence_state, or of one side of a presence_diff.
class Groups {
 public:
  void Add(std::string_view key, std::string_view meta_json) {
    auto it = index_.find(key);
    if (it == index_.end()) {
      index_.emplace(std::string(key), groups_.size());
      groups_.emplace_back(std::string(key), std::string(meta_json));
      return;
    }
    std::string& metas = groups_[it->second].second;
    metas += ',';
    metas += meta_json;
  }
  bool empty() const { return groups_.empty(); }

  // {"key":{"metas":[...]},...}: keys escaped by Boost.JSON, metas already JSON.
  void AppendTo(std::string& out) const {
    out += '{';
    for (size_t i = 0; i < groups_.size(); ++i) {
      if (i > 0) out += ',';
      out += boost::json::serialize(
          boost::json::string_view(groups_[i].first.data(), groups_[i].first.size()));
      out += ":{\"metas\":[";
      out += groups_[i].second;
      out += "]}";
    }
    out += '}';
  }

 private:
  std::vector<std::pair<std::string, std::string>> groups_;  // key, its metas joined by ','
  StringMap<size_t> index_;
};

}  // namespace

std::string DiffJson(const PresenceDelta& delta) {
  Groups joins;
  Groups leaves;
  for (const PresenceMeta& m : delta.joins) joins.Add(m.key, m.meta_json);
  for (const PresenceMeta& m : delta.leaves) leaves.Add(m.key, m.meta_json);
  std::string out = "{\"joins\":";
  joins.AppendTo(out);
  out += ",\"leaves\":";
  leaves.AppendTo(out);
  out += '}';
  return out;
}

void PresenceRegistry::Prune(LinkId link, TopicMap::iterator topic) {
  auto& links = topic->second.links;
  auto entry =
      std::find_if(links.begin(), links.end(), [&](const auto& e) { return e.first == link; });
  if (entry == links.end() || !entry->second.empty()) return;
  links.erase(entry);
  auto mine = by_link_.find(link);
  mine->second.erase(std::string_view(topic->first));
  if (mine->second.empty()) by_link_.erase(mine);
  if (links.empty()) topics_.erase(topic);
}

std::optional<PresenceDelta> PresenceRegistry::Apply(LinkId link, std::string_view topic,
                                                     std::vector<const PresenceMeta*> joins,
                                                     const std::vector<Leave>& leaves) {
  // A meta joined twice in one call counts once, its last text winning: one
  // diff must never show a client two metas with the same phx_ref.
  if (joins.size() > 1) {
    std::set<std::pair<std::string_view, std::string_view>> seen;
    std::vector<const PresenceMeta*> last;
    for (auto m = joins.rbegin(); m != joins.rend(); ++m) {
      if (seen.emplace((*m)->key, (*m)->phx_ref).second) last.push_back(*m);
    }
    if (last.size() != joins.size()) joins.assign(last.rbegin(), last.rend());
  }
  PresenceDelta delta;
  auto t = topics_.find(topic);
  if (t == topics_.end()) {
    if (joins.empty()) return std::nullopt;
    t = topics_.emplace(std::string(topic), Topic{}).first;
  }
  auto& links = t->second.links;
  auto entry =
      std::find_if(links.begin(), links.end(), [&](const auto& e) { return e.first == link; });
  if (entry == links.end()) {
    if (joins.empty()) return std::nullopt;
    links.emplace_back(link, Keys{});
    entry = std::prev(links.end());
    by_link_[link].insert(std::string_view(t->first));
  }
  Keys& keys = entry->second;

  for (const PresenceMeta* m : joins) {
    auto k = keys.find(m->key);
    if (k == keys.end()) k = keys.emplace(m->key, std::vector<Meta>{}).first;
    auto meta = std::find_if(k->second.begin(), k->second.end(),
                             [&](const Meta& x) { return x.phx_ref == m->phx_ref; });
    bool replaces = false;
    if (meta == k->second.end()) {
      k->second.push_back(Meta{m->phx_ref, m->meta_json});
      ++metas_;
    } else if (meta->json != m->meta_json) {
      meta->json = m->meta_json;
      replaces = true;
    } else {
      continue;
    }
    delta.joins.push_back({m->key, m->phx_ref, m->meta_json, replaces});
  }
  for (const Leave& l : leaves) {
    auto k = keys.find(l.key);
    if (k == keys.end()) continue;
    auto meta = std::find_if(k->second.begin(), k->second.end(),
                             [&](const Meta& x) { return x.phx_ref == l.phx_ref; });
    if (meta == k->second.end()) continue;
    delta.leaves.push_back({std::string(l.key), std::move(meta->phx_ref), std::move(meta->json)});
    k->second.erase(meta);
    --metas_;
    if (k->second.empty()) keys.erase(k);
  }
  Prune(link, t);
  if (delta.empty()) return std::nullopt;
  return delta;
}

Result<std::optional<PresenceDelta>> PresenceRegistry::ApplyDiff(
    LinkId link, std::string_view topic, const std::vector<PresenceMeta>& joins,
    const std::vector<PresenceMeta>& leaves) {
  if (Status s = ValidateJoins(joins); !s.ok()) return s;
  std::vector<const PresenceMeta*> join_ptrs;
  join_ptrs.reserve(joins.size());
  for (const PresenceMeta& m : joins) join_ptrs.push_back(&m);
  std::vector<Leave> leave_refs;
  leave_refs.reserve(leaves.size());
  for (const PresenceMeta& m : leaves) leave_refs.push_back({m.key, m.phx_ref});
  return Apply(link, topic, join_ptrs, leave_refs);
}

std::vector<TopicDiff> PresenceRegistry::RemoveShard(LinkId link) {
  std::vector<TopicDiff> out;
  auto mine = by_link_.find(link);
  if (mine == by_link_.end()) return out;
  // The views name topics this loop erases; each is copied before its topic goes.
  std::unordered_set<std::string_view> topics = std::move(mine->second);
  by_link_.erase(mine);
  out.reserve(topics.size());
  for (std::string_view name : topics) {
    auto t = topics_.find(name);
    auto& links = t->second.links;
    auto entry =
        std::find_if(links.begin(), links.end(), [&](const auto& e) { return e.first == link; });
    TopicDiff d{std::string(name), {}};
    for (auto& [key, metas] : entry->second) {
      for (Meta& m : metas) {
        d.delta.leaves.push_back({key, std::move(m.phx_ref), std::move(m.json)});
      }
      metas_ -= metas.size();
    }
    out.push_back(std::move(d));
    links.erase(entry);
    if (links.empty()) topics_.erase(t);
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> PresenceRegistry::KeyRefs(
    LinkId link, std::string_view topic,
    const std::set<std::pair<std::string_view, std::string_view>>& keep) const {
  std::vector<std::pair<std::string, std::string>> out;
  auto t = topics_.find(topic);
  if (t == topics_.end()) return out;
  for (const auto& [l, keys] : t->second.links) {
    if (l != link) continue;
    for (const auto& [key, metas] : keys) {
      for (const Meta& m : metas) {
        if (!keep.contains({key, m.phx_ref})) out.emplace_back(key, m.phx_ref);
      }
    }
  }
  return out;
}

Result<std::vector<TopicDiff>> PresenceRegistry::ReplaceShard(
    LinkId link, const std::vector<TopicPresence>& state) {
  // The new state per topic (a topic listed twice is merged; Apply counts a
  // meta listed twice once).
  StringMap<std::vector<const PresenceMeta*>> wanted;
  for (const TopicPresence& tp : state) {
    if (Status s = ValidateJoins(tp.metas); !s.ok()) return s;
    auto& metas = wanted[tp.topic];
    for (const PresenceMeta& m : tp.metas) metas.push_back(&m);
  }
  std::vector<TopicDiff> out;
  // Leaves as views into `gone`, a copy: Apply erases the stored originals
  // while it walks the list.
  auto apply = [&](std::string_view topic, const std::vector<const PresenceMeta*>& joins,
                   const std::vector<std::pair<std::string, std::string>>& gone) {
    std::vector<Leave> leaves;
    leaves.reserve(gone.size());
    for (const auto& [key, ref] : gone) leaves.push_back({key, ref});
    if (auto delta = Apply(link, topic, joins, leaves)) {
      out.push_back(TopicDiff{std::string(topic), std::move(*delta)});
    }
  };

  // Topics the link had metas on and no longer has: everything leaves.
  std::vector<std::string> dropped;
  if (auto mine = by_link_.find(link); mine != by_link_.end()) {
    for (std::string_view topic : mine->second) {
      if (!wanted.contains(topic)) dropped.emplace_back(topic);
    }
  }
  for (const std::string& topic : dropped) apply(topic, {}, KeyRefs(link, topic, {}));

  // Kept or new topics: leaves for what the new state lacks; joins for all
  // of it, of which Apply skips the metas already known unchanged.
  for (const auto& [topic, metas] : wanted) {
    std::set<std::pair<std::string_view, std::string_view>> present;
    for (const PresenceMeta* m : metas) present.emplace(m->key, m->phx_ref);
    apply(topic, metas, KeyRefs(link, topic, present));
  }
  return out;
}

Result<std::optional<PresenceDelta>> PresenceRegistry::ReplaceTopic(
    LinkId link, std::string_view topic, const std::vector<PresenceMeta>& metas) {
  if (Status s = ValidateJoins(metas); !s.ok()) return s;
  std::vector<const PresenceMeta*> joins;
  joins.reserve(metas.size());
  std::set<std::pair<std::string_view, std::string_view>> present;
  for (const PresenceMeta& m : metas) {
    joins.push_back(&m);
    present.emplace(m.key, m.phx_ref);
  }
  // Leaves as views into `gone`, a copy: Apply erases the stored originals.
  const std::vector<std::pair<std::string, std::string>> gone = KeyRefs(link, topic, present);
  std::vector<Leave> leaves;
  leaves.reserve(gone.size());
  for (const auto& [key, ref] : gone) leaves.push_back({key, ref});
  return Apply(link, topic, std::move(joins), leaves);
}

std::string PresenceRegistry::StateJson(std::string_view topic, LinkId except) const {
  Groups state;
  if (auto t = topics_.find(topic); t != topics_.end()) {
    for (const auto& [link, keys] : t->second.links) {
      if (link == except) continue;
      for (const auto& [key, metas] : keys) {
        for (const Meta& m : metas) state.Add(key, m.json);
      }
    }
  }
  std::string out;
  state.AppendTo(out);
  return out;
}

}  // namespace sb::broker
