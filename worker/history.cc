#include "worker/history.h"

#include <algorithm>
#include <limits>
#include <span>

namespace sb::worker {

namespace {

uint32_t Limit(uint64_t n) {
  return static_cast<uint32_t>(std::min<uint64_t>(n, std::numeric_limits<uint32_t>::max()));
}

}  // namespace

Sequenced SequencedOf(const mesh::Message& msg) {
  Sequenced s;
  s.offset = msg.offset;
  s.stream = msg.stream;
  s.origin = msg.origin;
  s.seq = msg.seq;
  s.flags = msg.flags;
  s.stamp = msg.stamp;
  s.message = std::string(msg.body);
  return s;
}

std::string PackRestate(std::string_view topic, const Sequenced& m) {
  mesh::Message r;
  r.type = mesh::Type::kRestate;
  r.origin = m.origin;
  r.seq = m.seq;
  r.flags = static_cast<uint8_t>(m.flags | mesh::kFlagSequenced);
  r.stamp = m.stamp;
  r.topic = topic;
  r.body = m.message;
  r.offset = m.offset;
  r.stream = m.stream;
  return mesh::Pack(r);
}

Status DecodeHistory(const mesh::Message& answer, std::vector<Sequenced>* out) {
  if (answer.body.empty()) return Status::Ok();
  Status bad = Status::Ok();
  Status s = mesh::ForEachInBatch(answer.body, [&](std::span<const std::string_view> frames) {
    if (!bad.ok()) return;
    mesh::Message m;
    if (Status d = mesh::Decode(frames, &m); !d.ok()) {
      bad = d;
    } else if (m.type != mesh::Type::kDeliver || (m.flags & mesh::kFlagSequenced) == 0) {
      bad = Status::Refused("a history entry that is not a sequenced delivery");
    } else if (m.topic != answer.topic || m.stream != answer.stream) {
      bad = Status::Refused("a history entry of another topic or stream");
    } else {
      out->push_back(SequencedOf(m));
    }
  });
  return s.ok() ? bad : s;
}

HistoryStreams::HistoryStreams(HistoryOptions options) : options_(std::move(options)) {
  families_.resize(options_.rules.rules().size());
}

bool HistoryStreams::Keeps(std::string_view topic) const {
  return options_.rules.Find(topic) != nullptr;
}

HistoryStreams::Stream* HistoryStreams::Find(std::string_view topic) {
  auto it = streams_.find(std::string(topic));
  return it == streams_.end() ? nullptr : &it->second;
}

HistoryStreams::Stream& HistoryStreams::Get(std::string_view topic) {
  auto [it, added] = streams_.try_emplace(std::string(topic));
  if (added) {
    it->second.topic = it->first;
    it->second.rule = options_.rules.Find(topic);
  }
  return it->second;
}

void HistoryStreams::MaybeForget(const std::string& topic) {
  auto it = streams_.find(topic);
  if (it == streams_.end()) return;
  const Stream& s = it->second;
  if (s.state == Phase::kUnsubscribed && s.copies.empty() && s.fetch.id == 0 && s.parked.empty()) {
    streams_.erase(it);
  }
}

void HistoryStreams::EmitFetch(Stream& s, FetchKind kind, uint64_t after, uint32_t limit,
                               uint64_t join, Actions* out) {
  s.fetch = Fetch{next_fetch_id_++, kind, after, limit, join};
  HistoryAction a;
  a.kind = HistoryAction::Kind::kFetch;
  a.topic = s.topic;
  a.id = s.fetch.id;
  a.after = after;
  a.limit = limit;
  out->push_back(std::move(a));
  ++stats_.fetches;
}

void HistoryStreams::Reset(Stream& s, Actions* out) {
  HistoryAction a;
  a.kind = HistoryAction::Kind::kReset;
  a.topic = s.topic;
  out->push_back(std::move(a));
  ++stats_.resets;
}

void HistoryStreams::Reindex(Stream& s) {
  if (s.indexed) oldest_.erase({s.indexed_at, &s});
  s.indexed = !s.copies.empty();
  if (s.indexed) {
    s.indexed_at = s.copies.begin()->second->at_ms;
    oldest_.insert({s.indexed_at, &s});
  }
}

size_t HistoryStreams::FamilyOf(const Stream& s) const {
  return static_cast<size_t>(s.rule - options_.rules.rules().data());
}

void HistoryStreams::EraseCopy(Stream& s, std::map<uint64_t, Entry>::iterator it, Evicted why) {
  bytes_ -= it->second->message.size();
  --messages_;
  Family& f = families_[FamilyOf(s)];
  --f.messages;
  f.bytes -= it->second->message.size();
  ++stats_.evicted[static_cast<size_t>(why)];
  s.copies.erase(it);
}

void HistoryStreams::DropCopies(Stream& s) {
  while (!s.copies.empty()) EraseCopy(s, s.copies.begin(), Evicted::kStream);
  Reindex(s);
}

void HistoryStreams::AddCopy(Stream& s, const Entry& e) {
  if (s.rule == nullptr || !s.copies.emplace(e->offset, e).second) return;
  ++messages_;
  bytes_ += e->message.size();
  Family& f = families_[FamilyOf(s)];
  ++f.messages;
  f.bytes += e->message.size();
  while (s.copies.size() > s.rule->size) EraseCopy(s, s.copies.begin(), Evicted::kSize);
  Reindex(s);
  EvictForBytes();
}

void HistoryStreams::EvictForBytes() {
  // The process's bound: the topic whose oldest copy is oldest gives it up.
  while (bytes_ > options_.max_bytes && !oldest_.empty()) {
    Stream& s = *oldest_.begin()->second;
    EraseCopy(s, s.copies.begin(), Evicted::kBytes);
    Reindex(s);
  }
}

void HistoryStreams::OnSubscribed(std::string_view topic, Actions* out) {
  if (!Keeps(topic)) return;
  Stream& s = Get(topic);
  if (s.state != Phase::kUnsubscribed) return;
  // Deliveries are held until the position is known: the broker answers
  // after routing everything it sequenced before, so every offset beyond
  // the answer's top comes as a delivery.
  s.state = Phase::kSyncing;
  s.held.clear();
  EmitFetch(s, FetchKind::kPosition, 0, 0, 0, out);
}

void HistoryStreams::OnUnsubscribed(std::string_view topic) {
  Stream* s = Find(topic);
  if (s == nullptr) return;
  s->state = Phase::kUnsubscribed;
  s->held.clear();
  s->fetch = Fetch{};
  for (const Parked& p : s->parked) join_topics_.erase(p.join);
  s->parked.clear();
  MaybeForget(s->topic);
}

void HistoryStreams::OnDeliver(std::string_view topic, Sequenced message, int64_t now_ms,
                               Actions* out) {
  message.at_ms = now_ms;
  auto e = std::make_shared<const Sequenced>(std::move(message));
  if (!Keeps(topic)) {
    // The broker's rules say history, this shard's do not: delivered as it
    // comes, nothing kept.
    HistoryAction a;
    a.kind = HistoryAction::Kind::kDeliver;
    a.topic = std::string(topic);
    a.entry = std::move(e);
    out->push_back(std::move(a));
    return;
  }
  Stream& s = Get(topic);
  if (s.stream != 0 && e->stream != s.stream) {
    // The stream was lost (every copy died): what this shard held of the
    // old one is of no use, and its channels' clients must learn it.
    DropCopies(s);
    s.held.clear();
    if (s.state == Phase::kSynced) {
      Reset(s, out);
      s.state = Phase::kSyncing;
      EmitFetch(s, FetchKind::kPosition, 0, 0, 0, out);
    }
  }
  s.stream = e->stream;
  switch (s.state) {
    case Phase::kUnsubscribed: {
      // The shard's own publish coming back: no local subscriber waits in
      // order, the copy is what matters (a new broker rebuilds from it).
      if (s.copies.count(e->offset) != 0) {
        ++stats_.duplicates;
        return;
      }
      AddCopy(s, e);
      s.last = std::max(s.last, e->offset);
      HistoryAction a;
      a.kind = HistoryAction::Kind::kDeliver;
      a.topic = s.topic;
      a.entry = std::move(e);
      out->push_back(std::move(a));
      return;
    }
    case Phase::kSyncing:
      if (!s.held.emplace(e->offset, e).second) {
        ++stats_.duplicates;
        return;
      }
      AddCopy(s, e);
      return;
    case Phase::kSynced:
      if (e->offset <= s.last || !s.held.emplace(e->offset, e).second) {
        ++stats_.duplicates;
        return;
      }
      AddCopy(s, e);
      if (s.fetch.id != 0) return;  // held until the answer
      if (e->offset > s.last + 1) ++stats_.gaps;
      Settle(s, out);
      return;
  }
}

void HistoryStreams::OnHistory(std::string_view topic, uint64_t id, uint64_t stream, uint64_t top,
                               uint64_t /*first*/, std::vector<Sequenced> entries, int64_t now_ms,
                               Actions* out) {
  Stream* sp = Find(topic);
  if (sp == nullptr || id == 0 || sp->fetch.id != id) return;
  Stream& s = *sp;
  const Fetch f = s.fetch;
  s.fetch = Fetch{};
  const bool changed = stream != 0 && s.stream != 0 && stream != s.stream;
  if (changed) {
    // Not the stream this shard had: everything before the answer's top is
    // the new stream's past. Channels answered since the topic was synced
    // saw the old stream and are reset; while syncing, none was answered
    // (a join naming the old epoch is answered kOtherEpoch).
    DropCopies(s);
    for (auto it = s.held.begin(); it != s.held.end();) {
      it = it->second->stream != stream ? s.held.erase(it) : std::next(it);
    }
    if (s.state == Phase::kSynced) Reset(s, out);
    s.last = top;
  } else if (f.kind == FetchKind::kPosition) {
    s.last = top;
  }
  if (stream != 0) s.stream = stream;
  if (f.kind == FetchKind::kPosition) s.state = Phase::kSynced;
  Parked* asker = f.kind == FetchKind::kJoin && !s.parked.empty() && s.parked.front().join == f.join
                      ? &s.parked.front()
                      : nullptr;
  for (Sequenced& m : entries) {
    if (m.stream != s.stream) continue;
    m.at_ms = now_ms;
    auto e = std::make_shared<const Sequenced>(std::move(m));
    AddCopy(s, e);
    if (asker != nullptr) asker->got.emplace(e->offset, e);
    if (s.state == Phase::kSynced && e->offset > s.last) s.held.emplace(e->offset, e);
  }
  bool unfillable = false;
  if (!changed && f.kind == FetchKind::kGap && !s.held.empty() &&
      s.held.begin()->first > s.last + 1) {
    // The broker no longer holds the gap's start (its `first` is beyond it,
    // so the answer starts there, or it has none of it): the topic's
    // channels are reset and the stream goes on from what is held. Judged
    // by what came rather than by `first`, so that an answer that makes no
    // progress can never make the shard fetch the same range forever.
    unfillable = true;
    ++stats_.gaps_unfillable;
    Reset(s, out);
    s.last = s.held.begin()->first - 1;
  }
  if (!changed && asker != nullptr) {
    const uint64_t want = f.after + 1;
    if (asker->got.count(want) == 0 && s.copies.count(want) == 0) {
      // Nothing from where the join's missing messages start: the broker
      // has forgotten them (or never had them).
      Answer(s, asker->join, Recovery::kTooOld, {}, out);
    }
  }
  Settle(s, out);
  if (f.kind == FetchKind::kGap && !unfillable &&
      (s.fetch.id == 0 || s.fetch.kind != FetchKind::kGap)) {
    ++stats_.gaps_filled;
  }
}

void HistoryStreams::Join(uint64_t join_id, std::string_view topic, std::optional<Recover> recover,
                          Actions* out) {
  if (!Keeps(topic)) {
    HistoryAction a;
    a.kind = HistoryAction::Kind::kAnswer;
    a.topic = std::string(topic);
    a.join = join_id;
    a.recovery = Recovery::kNotAsked;
    out->push_back(std::move(a));
    ++stats_.answers[static_cast<size_t>(Recovery::kNotAsked)];
    return;
  }
  Stream& s = Get(topic);
  join_topics_[join_id] = s.topic;
  s.parked.push_back(Parked{join_id, recover, {}});
  Settle(s, out);
}

bool HistoryStreams::Holds(std::string_view topic, uint64_t offset) const {
  auto it = streams_.find(std::string(topic));
  return it != streams_.end() && it->second.state != Phase::kUnsubscribed &&
         it->second.held.contains(offset);
}

void HistoryStreams::ForgetJoin(uint64_t join_id) {
  auto it = join_topics_.find(join_id);
  if (it == join_topics_.end()) return;
  Stream* s = Find(it->second);
  join_topics_.erase(it);
  if (s == nullptr) return;
  // A fetch for it stays outstanding: the deliveries held meanwhile are
  // released by its answer.
  std::erase_if(s->parked, [&](const Parked& p) { return p.join == join_id; });
}

void HistoryStreams::OnBrokerUp(Actions* out) {
  for (auto& [topic, s] : streams_) {
    if (s.fetch.id == 0) continue;
    HistoryAction a;
    a.kind = HistoryAction::Kind::kFetch;
    a.topic = topic;
    a.id = s.fetch.id;
    a.after = s.fetch.after;
    a.limit = s.fetch.limit;
    out->push_back(std::move(a));
    ++stats_.fetches;
  }
}

void HistoryStreams::Settle(Stream& s, Actions* out) {
  if (s.state != Phase::kSynced) return;
  // Joins first, each answered up to the last offset delivered: every
  // delivery after its answer is beyond that.
  while (s.fetch.id == 0 && !s.parked.empty()) {
    if (!DecideFront(s, out)) return;
  }
  if (s.fetch.id != 0) return;
  while (!s.held.empty()) {
    auto it = s.held.begin();
    if (it->first <= s.last) {
      ++stats_.duplicates;
      s.held.erase(it);
      continue;
    }
    if (it->first != s.last + 1) break;
    s.last = it->first;
    HistoryAction a;
    a.kind = HistoryAction::Kind::kDeliver;
    a.topic = s.topic;
    a.entry = std::move(it->second);
    out->push_back(std::move(a));
    s.held.erase(it);
  }
  // A gap: nothing more on the topic until what is missing has come.
  if (!s.held.empty()) {
    EmitFetch(s, FetchKind::kGap, s.last, Limit(s.held.begin()->first - s.last - 1), 0, out);
  }
}

bool HistoryStreams::DecideFront(Stream& s, Actions* out) {
  Parked& p = s.parked.front();
  if (!p.recover) {
    Answer(s, p.join, Recovery::kNotAsked, {}, out);
    return true;
  }
  const Recover r = *p.recover;
  if (r.stream != s.stream) {
    Answer(s, p.join, Recovery::kOtherEpoch, {}, out);
    return true;
  }
  if (r.offset > s.last) {
    Answer(s, p.join, Recovery::kAhead, {}, out);
    return true;
  }
  if (s.last - r.offset > options_.recovery_max) {
    Answer(s, p.join, Recovery::kTooMany, {}, out);
    return true;
  }
  std::vector<Entry> messages;
  messages.reserve(s.last - r.offset);
  for (uint64_t o = r.offset + 1; o <= s.last; ++o) {
    auto c = s.copies.find(o);
    if (c != s.copies.end()) {
      messages.push_back(c->second);
      continue;
    }
    auto g = p.got.find(o);
    if (g != p.got.end()) {
      messages.push_back(g->second);
      continue;
    }
    // Fetched from the first one missing; the topic's deliveries wait.
    EmitFetch(s, FetchKind::kJoin, o - 1, Limit(s.last - o + 1), p.join, out);
    return false;
  }
  Answer(s, p.join, Recovery::kRecovered, std::move(messages), out);
  return true;
}

void HistoryStreams::Answer(Stream& s, uint64_t join, Recovery r, std::vector<Entry> messages,
                            Actions* out) {
  HistoryAction a;
  a.kind = HistoryAction::Kind::kAnswer;
  a.topic = s.topic;
  a.join = join;
  a.stream = s.stream;
  a.top = s.last;
  a.recovery = r;
  a.messages = std::move(messages);
  out->push_back(std::move(a));
  ++stats_.answers[static_cast<size_t>(r)];
  join_topics_.erase(join);
  std::erase_if(s.parked, [&](const Parked& p) { return p.join == join; });
}

void HistoryStreams::Expire(int64_t now_ms) {
  std::vector<std::string> empty;
  for (auto& [topic, s] : streams_) {
    if (s.rule == nullptr) continue;
    // By offset, which is the order they were sequenced in: the first one
    // within its TTL ends the scan.
    while (!s.copies.empty() && now_ms - s.copies.begin()->second->at_ms >= s.rule->ttl_ms) {
      EraseCopy(s, s.copies.begin(), Evicted::kTtl);
    }
    Reindex(s);
    if (s.copies.empty()) empty.push_back(topic);
  }
  for (const std::string& topic : empty) MaybeForget(topic);
}

void HistoryStreams::State(
    std::vector<mesh::StreamPosition>* positions,
    const std::function<void(std::string_view topic, const Sequenced&)>& restate,
    size_t max_restate_bytes) {
  size_t bytes = 0;
  for (const auto& [topic, s] : streams_) {
    if (s.copies.empty() || s.stream == 0) continue;
    positions->push_back({topic, s.stream, s.copies.rbegin()->first});
    // Newest first, and per topic a run down from its top: the messages a
    // rejoining client is likeliest to ask for.
    size_t left = s.copies.size();
    for (auto it = s.copies.rbegin(); it != s.copies.rend(); ++it) {
      const size_t size = topic.size() + it->second->message.size();
      if (bytes + size > max_restate_bytes) break;
      bytes += size;
      --left;
      restate(topic, *it->second);
    }
    stats_.restate_left_out += left;
  }
}

void HistoryStreams::ExportPositions(std::vector<handoff::StreamPosition>* out) const {
  const size_t first = out->size();
  for (const auto& [topic, s] : streams_) {
    if (s.state == Phase::kSynced && s.stream != 0) out->push_back({topic, s.stream, s.last});
  }
  std::sort(out->begin() + static_cast<std::ptrdiff_t>(first), out->end(),
            [](const handoff::StreamPosition& a, const handoff::StreamPosition& b) {
              return a.topic < b.topic;
            });
}

void HistoryStreams::ImportPositions(std::span<const handoff::StreamPosition> positions) {
  for (const handoff::StreamPosition& p : positions) {
    if (!Keeps(p.topic) || p.stream == 0) continue;
    Stream& s = Get(p.topic);
    s.state = Phase::kSynced;
    s.stream = p.stream;
    s.last = p.offset;
  }
}

}  // namespace sb::worker
