#include "broker/pending_presence.h"

#include <algorithm>
#include <utility>

namespace sb::broker {

std::string PendingPresence::EntryId(std::string_view key, std::string_view phx_ref) {
  // Length-prefixed: a key may hold any character, so no separator is safe.
  std::string id = std::to_string(key.size());
  id += ':';
  id += key;
  id += phx_ref;
  return id;
}

void PendingPresence::Add(std::string_view topic, const PresenceDelta& delta, int64_t now_us) {
  if (delta.empty()) return;
  auto it = topics_.find(topic);
  if (it == topics_.end()) {
    if (topics_.empty()) oldest_us_ = now_us;
    it = topics_.emplace(std::string(topic), Topic{.order = next_order_++, .entries = {}}).first;
  }
  for (const PresenceMeta& m : delta.joins) Join(it->second, m);
  for (const PresenceMeta& m : delta.leaves) Leave(it->second, m);
  // Everything cancelled out: the shard is owed nothing on the topic. (The
  // oldest time stays as it was, an upper bound on what still waits.)
  if (it->second.entries.empty()) topics_.erase(it);
}

void PendingPresence::Insert(Topic& t, std::string id, const PresenceMeta& m, bool joined,
                             bool known) {
  t.entries.emplace(std::move(id), Entry{.key = m.key,
                                         .phx_ref = m.phx_ref,
                                         .text = m.meta_json,
                                         .joined = joined,
                                         .known = known});
  ++metas_;
}

void PendingPresence::Join(Topic& t, const PresenceMeta& m) {
  std::string id = EntryId(m.key, m.phx_ref);
  auto e = t.entries.find(id);
  if (e == t.entries.end()) return Insert(t, std::move(id), m, /*joined=*/true, m.replaces);
  Entry& entry = e->second;
  if (!entry.joined && entry.text == m.meta_json) {
    // Left and came back as the shard knows it: nothing to say.
    t.entries.erase(e);
    --metas_;
    return;
  }
  // A waiting leave becomes a replacement of what the shard has; a waiting
  // join takes the newer text.
  entry.joined = true;
  entry.text = m.meta_json;
}

void PendingPresence::Leave(Topic& t, const PresenceMeta& m) {
  std::string id = EntryId(m.key, m.phx_ref);
  auto e = t.entries.find(id);
  if (e == t.entries.end()) return Insert(t, std::move(id), m, /*joined=*/false, /*known=*/true);
  Entry& entry = e->second;
  if (entry.joined && !entry.known) {
    // Joined and left before the shard heard of it.
    t.entries.erase(e);
    --metas_;
    return;
  }
  entry.joined = false;
  entry.text = m.meta_json;
}

void PendingPresence::Drop(std::string_view topic) {
  auto it = topics_.find(topic);
  if (it == topics_.end()) return;
  metas_ -= it->second.entries.size();
  topics_.erase(it);
}

std::vector<TopicDiff> PendingPresence::Take() {
  std::vector<std::pair<size_t, TopicDiff>> ordered;
  ordered.reserve(topics_.size());
  for (auto& [name, t] : topics_) {
    TopicDiff d{name, {}};
    for (auto& [id, e] : t.entries) {
      PresenceMeta m{std::move(e.key), std::move(e.phx_ref), std::move(e.text), e.known};
      if (e.joined) {
        d.delta.joins.push_back(std::move(m));
      } else {
        d.delta.leaves.push_back(std::move(m));
      }
    }
    ordered.emplace_back(t.order, std::move(d));
  }
  topics_.clear();
  metas_ = 0;
  std::sort(ordered.begin(), ordered.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<TopicDiff> out;
  out.reserve(ordered.size());
  for (auto& [order, d] : ordered) out.push_back(std::move(d));
  return out;
}

}  // namespace sb::broker
