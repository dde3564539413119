#include "broker/history_store.h"

#include <algorithm>
#include <limits>
#include <utility>

namespace sb::broker {

namespace {
size_t Index(HistoryEviction r) { return static_cast<size_t>(r); }
constexpr int64_t kNever = std::numeric_limits<int64_t>::max();
}  // namespace

HistoryStore::HistoryStore(HistoryOptions options) : options_(std::move(options)) {
  if (!options_.new_stream) {
    // Only a caller that does not care (a test of something else): distinct
    // per store, never 0.
    options_.new_stream = [n = uint64_t{0}]() mutable { return ++n; };
  }
  next_expiry_us_ = kNever;
  for (const history::Rule& r : options_.rules.rules()) families_.push_back({r.pattern});
  families_.push_back({""});
}

uint64_t HistoryStore::NewStream() {
  uint64_t s = options_.new_stream();
  if (options_.stream_tag != 0) {
    // The node's tag above, the source's low bits below (never 0 there, so
    // that two starts of one node differ in the low half).
    while ((s & 0xffffffffULL) == 0) s = options_.new_stream();
    return (uint64_t{options_.stream_tag} << 32) | (s & 0xffffffffULL);
  }
  while (s == 0) s = options_.new_stream();
  return s;
}

bool HistoryStore::Own(uint64_t stream) const {
  return options_.stream_tag == 0 || (stream >> 32) == options_.stream_tag;
}

void HistoryStore::Replace(Topic& t, uint64_t stream, uint64_t top) {
  while (!t.held.empty()) Erase(t, t.held.begin(), HistoryEviction::kEpoch);
  t.by_publish.clear();
  t.stream = stream;
  t.top = top;
}

bool HistoryStore::Accept(std::string_view topic, uint64_t stream, const Entry& entry,
                          int64_t now_us) {
  auto found = topics_.find(topic);
  Topic& t = found != topics_.end() ? found->second : Create(topic, stream, entry.offset);
  if (t.stream != stream) {
    ++counters_.replaced;
    Replace(t, stream, entry.offset);
  }
  if (t.held.contains(entry.offset)) {
    ++counters_.accept_duplicates;
    return false;
  }
  ++counters_.accepted;
  t.top = std::max(t.top, entry.offset);
  Entry e = entry;
  e.arrival_us = now_us;
  Hold(t, std::move(e));
  return true;
}

void HistoryStore::AcceptPosition(std::string_view topic, uint64_t stream, uint64_t top) {
  auto found = topics_.find(topic);
  if (found == topics_.end()) {
    Create(topic, stream, top);
    return;
  }
  Topic& t = found->second;
  if (t.stream != stream) {
    ++counters_.replaced;
    Replace(t, stream, top);
    return;
  }
  t.top = std::max(t.top, top);
}

HistoryStore::Topic& HistoryStore::Create(std::string_view topic, uint64_t stream, uint64_t top) {
  Topic t;
  t.stream = stream;
  t.top = top;
  if (const history::Rule* rule = options_.rules.Find(topic)) {
    t.size = rule->size;
    t.ttl_us = rule->ttl_ms * 1000;
    t.family = static_cast<size_t>(rule - options_.rules.rules().data());
  } else {
    t.family = families_.size() - 1;
    // A shard sequences it, so a shard's rule names it: the broker's rules
    // differ from the shards'. Kept all the same, by the default.
    ++counters_.unconfigured_topics;
    t.size = kDefaultHistorySize;
    t.ttl_us = kDefaultHistoryTtlMs * 1000;
  }
  return topics_.emplace(std::string(topic), std::move(t)).first->second;
}

HistoryStore::Topic& HistoryStore::Get(std::string_view topic) {
  if (auto it = topics_.find(topic); it != topics_.end()) return it->second;
  return Create(topic, NewStream(), 0);
}

void HistoryStore::Erase(Topic& t, std::map<uint64_t, Entry>::iterator it, HistoryEviction reason) {
  const Entry& e = it->second;
  if (auto p = t.by_publish.find({e.origin, e.seq});
      p != t.by_publish.end() && p->second == e.offset) {
    t.by_publish.erase(p);
  }
  --messages_;
  bytes_ -= e.body.size();
  --families_[t.family].messages;
  families_[t.family].bytes -= e.body.size();
  ++counters_.evicted[Index(reason)];
  t.held.erase(it);
}

void HistoryStore::DropStaleArrivals() {
  // Messages that went by TTL or SIZE leave their arrivals behind; once
  // they are most of the FIFO it is rebuilt, so it stays within twice what
  // is held (amortized: each rebuild follows as many removals).
  if (arrivals_.size() <= 2 * messages_ + 1024) return;
  std::deque<Arrival> live;
  for (const Arrival& a : arrivals_) {
    auto it = a.topic->held.find(a.offset);
    if (it != a.topic->held.end() && it->second.serial == a.serial) live.push_back(a);
  }
  arrivals_.swap(live);
}

void HistoryStore::Hold(Topic& t, Entry entry) {
  entry.serial = next_serial_++;
  const uint64_t offset = entry.offset;
  arrivals_.push_back({&t, offset, entry.serial});
  next_expiry_us_ = std::min(next_expiry_us_, entry.arrival_us + t.ttl_us);
  ++messages_;
  bytes_ += entry.body.size();
  ++families_[t.family].messages;
  families_[t.family].bytes += entry.body.size();
  t.by_publish.emplace(Publish{entry.origin, entry.seq}, offset);
  t.held.emplace(offset, std::move(entry));
  // The topic's SIZE newest stay (a restated one older than all of them
  // goes at once).
  while (t.held.size() > t.size) Erase(t, t.held.begin(), HistoryEviction::kSize);
  // Then the process's bound: the oldest to arrive, whatever its topic.
  while (bytes_ > options_.max_bytes && !arrivals_.empty()) {
    const Arrival a = arrivals_.front();
    arrivals_.pop_front();
    auto it = a.topic->held.find(a.offset);
    if (it != a.topic->held.end() && it->second.serial == a.serial) {
      Erase(*a.topic, it, HistoryEviction::kBytes);
    }
  }
  DropStaleArrivals();
}

HistoryStore::Position HistoryStore::Sequence(std::string_view topic, uint64_t origin, uint64_t seq,
                                              uint8_t flags, uint64_t stamp, std::string_view body,
                                              int64_t now_us) {
  Topic& t = Get(topic);
  if (!Own(t.stream)) {
    // A copy of another node's stream: that node owned the topic, and this
    // one cannot know its last offset for sure. A new epoch (docs/CLUSTER.md).
    ++counters_.taken_over;
    Replace(t, NewStream(), 0);
  }
  if (auto it = t.by_publish.find({origin, seq}); it != t.by_publish.end()) {
    // Sequenced before (by this broker, or the last one: a shard restated
    // it): the origin's client learns the offset it already has.
    ++counters_.resequenced;
    return {it->second, t.stream};
  }
  ++counters_.sequenced;
  const uint64_t offset = ++t.top;
  Hold(t, Entry{.offset = offset,
                .origin = origin,
                .seq = seq,
                .flags = flags,
                .stamp = stamp,
                .body = std::string(body),
                .arrival_us = now_us});
  return {offset, t.stream};
}

HistoryStore::Answer HistoryStore::Fetch(std::string_view topic, uint64_t after, uint32_t limit,
                                         size_t max_bytes, size_t overhead, int64_t now_us) {
  ++counters_.fetches;
  Expire(now_us);
  const Topic& t = Get(topic);
  Answer a;
  a.stream = t.stream;
  a.top = t.top;
  a.first = t.held.empty() ? t.top + 1 : t.held.begin()->first;
  if (limit == 0) return a;
  size_t bytes = 0;
  for (auto it = t.held.upper_bound(after); it != t.held.end() && a.messages.size() < limit; ++it) {
    bytes += it->second.body.size() + overhead;
    // Past the bound: the rest is fetched on from the last one given.
    if (bytes > max_bytes && !a.messages.empty()) break;
    a.messages.push_back(&it->second);
  }
  return a;
}

void HistoryStore::RestatePosition(std::string_view topic, uint64_t stream, uint64_t top) {
  auto it = topics_.find(topic);
  if (it == topics_.end()) {
    Create(topic, stream, top);
    return;
  }
  Topic& t = it->second;
  if (t.stream != stream) {
    // The first hello's stream stays: every shard holds the same one unless
    // the topic was lost, and then the shard on the other learns it by its
    // next delivery or fetch.
    ++counters_.stream_conflicts;
    return;
  }
  t.top = std::max(t.top, top);
}

void HistoryStore::Restate(std::string_view topic, uint64_t stream, const Entry& entry,
                           int64_t now_us) {
  auto found = topics_.find(topic);
  Topic& t = found != topics_.end() ? found->second : Create(topic, stream, entry.offset);
  if (t.stream != stream) {
    ++counters_.stream_conflicts;
    return;
  }
  if (t.held.contains(entry.offset)) {
    // Every shard that got it restates it.
    ++counters_.restate_duplicates;
    return;
  }
  ++counters_.restated;
  t.top = std::max(t.top, entry.offset);
  Entry e = entry;
  e.arrival_us = now_us;
  Hold(t, std::move(e));
}

void HistoryStore::Expire(int64_t now_us) {
  if (now_us < next_expiry_us_) return;
  int64_t next = kNever;
  for (auto& [name, t] : topics_) {
    // In offset order: a topic's messages arrive in it, but for restates
    // (which all arrive, at once, before anything new).
    while (!t.held.empty() && now_us - t.held.begin()->second.arrival_us >= t.ttl_us) {
      Erase(t, t.held.begin(), HistoryEviction::kTtl);
    }
    if (!t.held.empty()) next = std::min(next, t.held.begin()->second.arrival_us + t.ttl_us);
  }
  next_expiry_us_ = next;
  DropStaleArrivals();
}

std::optional<HistoryStore::TopicView> HistoryStore::Find(std::string_view topic) const {
  auto it = topics_.find(topic);
  if (it == topics_.end()) return std::nullopt;
  const Topic& t = it->second;
  return TopicView{t.stream, t.top, t.held.empty() ? t.top + 1 : t.held.begin()->first,
                   t.held.size()};
}

}  // namespace sb::broker
