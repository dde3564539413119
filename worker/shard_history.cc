// Shard: history — what the shard does for topics that keep history
// (docs/WORKER.md, History). The decisions are HistoryStreams' (worker/
// history); here they are performed: fetches go to the broker, deliveries to
// the topic's sockets with their offset, join answers and recovered messages
// to the joiner, the sender's ok once the broker has sequenced its
// broadcast, and the HTTP API's publish and history answers.
#include <spdlog/spdlog.h>

#include <tuple>
#include <utility>

#include "common/mono_time.h"
#include "protocol/history_spec.h"
#include "protocol/phoenix.h"
#include "protocol/phoenix_events.h"
#include "worker/shard.h"

namespace sb::worker {

namespace {

static_assert(std::tuple_size_v<decltype(WorkerCounters::history_recoveries)> ==
              static_cast<size_t>(Recovery::kCount));

// Fetches the shard makes for the HTTP API, apart from HistoryStreams' own.
constexpr uint64_t kApiFetchBit = uint64_t{1} << 63;

std::string PositionJson(uint64_t stream, uint64_t offset) {
  return "\"offset\":" + std::to_string(offset) + ",\"epoch\":\"" + history::FormatEpoch(stream) +
         "\"";
}

}  // namespace

// A push on a history topic went to the broker as `seq`: its sender is
// answered when it comes back sequenced.
void Shard::AwaitSequenced(uint64_t seq, const Action& a) {
  if (seq == 0) {
    // Over the mesh's bounds (the hub asked CanPublish first, so only a
    // broadcast too large for any broker gets here): refused, as a full
    // outbox refuses.
    if (a.conn != 0) {
      gateway_->Send(a.conn, false,
                     phx::EncodeReply(a.join_ref, a.ref, a.topic, phx::kStatusError,
                                      R"({"reason":"unavailable"})"));
    }
    if (api_context_ != 0) FailApiPublish(api_context_);
    return;
  }
  own_.emplace(seq, OwnPublish{.conn = a.conn,
                               .topic = a.topic,
                               .join_ref = a.join_ref,
                               .ref = a.ref,
                               .api = api_context_});
  if (api_context_ != 0) ++api_publishes_[api_context_].remaining;
}

void Shard::AnswerDroppedOwn() {
  // What the stream held and then dropped (its last subscriber left, a new
  // epoch) is never delivered in order: its sender is answered here.
  std::vector<std::pair<std::string, std::shared_ptr<const Sequenced>>> due;
  for (const auto& [seq, own] : own_) {
    if (own.sequenced && !history_->Holds(own.topic, own.sequenced->offset)) {
      due.emplace_back(own.topic, own.sequenced);
    }
  }
  for (const auto& [topic, entry] : due) AnswerOwn(topic, *entry);
}

void Shard::JoinHistory(const Action& a) {
  const uint64_t join = next_join_++;
  parked_.emplace(
      join, ParkedJoin{.conn = a.conn, .topic = a.topic, .join_ref = a.join_ref, .ref = a.ref});
  std::vector<HistoryAction> out;
  std::optional<Recover> recover;
  if (a.recover) recover = Recover{.stream = a.recover->stream, .offset = a.recover->offset};
  history_->Join(join, a.topic, recover, &out);
  PerformHistory(out);
}

void Shard::PerformHistory(std::vector<HistoryAction>& actions) {
  for (HistoryAction& h : actions) {
    switch (h.kind) {
      case HistoryAction::Kind::kFetch:
        // Not sent (no broker now): HistoryStreams sends it again once one
        // welcomes us (Welcomed).
        if (session_) session_->Fetch(h.id, h.topic, h.after, h.limit);
        break;
      case HistoryAction::Kind::kDeliver:
        DeliverInOrder(h.topic, *h.entry);
        break;
      case HistoryAction::Kind::kAnswer:
        AnswerJoin(h);
        break;
      case HistoryAction::Kind::kReset: {
        std::vector<Action> errored;
        hub_.ErrorTopic(h.topic, &errored);
        Perform(errored, 0);
        break;
      }
    }
  }
}

void Shard::DeliverInOrder(const std::string& topic, const Sequenced& entry) {
  const bool binary = (entry.flags & mesh::kFlagBinary) != 0;
  const bool mine = entry.origin == opt_.cluster.instance;
  // The sender's ok, in the stream's order: after every delivery before its
  // offset, before every one after it.
  const ConnId sender = mine ? AnswerOwn(topic, entry) : 0;
  const std::span<const ConnId> to = hub_.Deliver(topic);
  if (!to.empty()) {
    const std::string framed =
        binary ? entry.message : phx::WithOffsetRef(entry.message, entry.offset);
    counters_.deliveries.fetch_add(gateway_->Deliver(to, sender, binary, framed),
                                   std::memory_order_relaxed);
    if (entry.stamp != 0) {
      (mine ? turn_sequenced_stamps_ : turn_cluster_stamps_).push_back(entry.stamp);
    }
  }
}

ConnId Shard::AnswerOwn(const std::string& topic, const Sequenced& entry) {
  auto it = own_.find(entry.seq);
  if (it == own_.end()) return 0;
  OwnPublish own = std::move(it->second);
  own_.erase(it);
  if (own.conn != 0) {
    gateway_->Send(own.conn, false,
                   phx::EncodeReply(own.join_ref, own.ref, topic, phx::kStatusOk,
                                    "{" + PositionJson(entry.stream, entry.offset) + "}"));
  }
  if (own.api != 0) SequencedForApi(own.api, topic, &entry);
  return own.conn;
}

void Shard::AnswerJoin(const HistoryAction& h) {
  auto it = parked_.find(h.join);
  if (it == parked_.end()) return;
  ParkedJoin join = std::move(it->second);
  parked_.erase(it);
  ++counters_.history_recoveries[static_cast<size_t>(h.recovery)];
  // Left, or joined again, meanwhile: the answer is the old channel's.
  if (!hub_.JoinedAs(join.conn, join.topic, join.join_ref)) return;
  std::string response = "{" + PositionJson(h.stream, h.top) + ",\"recovered\":" +
                         (h.recovery == Recovery::kRecovered ? "true" : "false") + "}";
  gateway_->Send(join.conn, false,
                 phx::EncodeReply(join.join_ref, join.ref, join.topic, phx::kStatusOk, response));
  for (const auto& m : h.messages) {
    const bool binary = (m->flags & mesh::kFlagBinary) != 0;
    // Owed like a presence_state: a recovering client must get what it
    // missed whatever the socket's outbound bound.
    gateway_->Send(join.conn, binary,
                   binary ? m->message : phx::WithOffsetRef(m->message, m->offset),
                   /*owed=*/true);
  }
  counters_.history_recovered_messages.fetch_add(h.messages.size(), std::memory_order_relaxed);
  for (const Action& a : join.deferred) gateway_->Send(a.conn, a.binary, a.data, a.owed);
}

// --- From the broker ------------------------------------------------------------

void Shard::DeliverSequenced(std::string_view topic, const mesh::Message& msg) {
  const int64_t now = MonoNowMs();
  Sequenced entry = SequencedOf(msg);
  if (!history_) {
    // Sequenced for a shard that keeps no history (its --history differs
    // from its sender's): delivered as it is, without order or copies.
    Deliver(topic, msg.body, (msg.flags & mesh::kFlagBinary) != 0, entry.stamp);
    return;
  }
  const bool mine = entry.origin == opt_.cluster.instance;
  const uint64_t seq = entry.seq;
  std::vector<HistoryAction> out;
  history_->OnDeliver(topic, std::move(entry), now, &out);
  PerformHistory(out);
  // The stream delivers this shard's own broadcast in order, and its
  // sender's ok with it (DeliverInOrder) — unless the stream already had it
  // (a position fetched after it was sequenced): the sender is answered now.
  if (mine) {
    if (auto it = own_.find(seq); it != own_.end()) {
      it->second.sequenced = std::make_shared<const Sequenced>(SequencedOf(msg));
      if (!history_->Holds(topic, msg.offset)) AnswerOwn(std::string(topic), *it->second.sequenced);
    }
  }
  gateway_->Settle();
}

void Shard::History(const mesh::Message& msg) {
  std::vector<Sequenced> entries;
  const int64_t now = MonoNowMs();
  if (Status s = DecodeHistory(msg, &entries); !s.ok()) {
    spdlog::warn("shard {}: a history answer is malformed: {}", opt_.cluster.shard, s.message());
  }
  for (Sequenced& e : entries) e.at_ms = now;
  if ((msg.id & kApiFetchBit) != 0) {
    AnswerApiHistory(msg, entries);
  } else if (history_) {
    std::vector<HistoryAction> out;
    history_->OnHistory(msg.topic, msg.id, msg.stream, msg.top, msg.first, std::move(entries), now,
                        &out);
    PerformHistory(out);
  }
  gateway_->Settle();
}

void Shard::SequencedAcked(uint64_t seq) {
  auto it = own_.find(seq);
  if (it == own_.end()) return;
  // Acked and never delivered back: an HTTP API publish whose idempotency
  // key another shard's publish had claimed (the broker routed it to
  // nobody). Its request is answered ok, as a repeat is, without a position.
  OwnPublish own = std::move(it->second);
  own_.erase(it);
  if (own.conn != 0) {
    gateway_->Send(own.conn, false,
                   phx::EncodeReply(own.join_ref, own.ref, own.topic, phx::kStatusOk, "{}"));
  }
  if (own.api != 0) SequencedForApi(own.api, own.topic, nullptr);
}

void Shard::Welcomed() {
  welcomed_ = true;
  // Presence queries that came before the broker did: their subscribes
  // were not part of the hello (the hub's topics are).
  for (const auto& [topic, wait] : presence_waits_) {
    if (wait.subscribed) session_->Subscribe(topic);
  }
  if (!history_) return;
  std::vector<HistoryAction> out;
  history_->OnBrokerUp(&out);
  PerformHistory(out);
}

void Shard::HistoryState(std::vector<mesh::StreamPosition>* positions,
                         std::vector<std::string>* restates, size_t max_bytes) {
  if (!history_) return;
  history_->State(
      positions,
      [restates](std::string_view topic, const Sequenced& e) {
        restates->push_back(PackRestate(topic, e));
      },
      max_bytes);
}

// --- The HTTP API ----------------------------------------------------------------

void Shard::SequencedForApi(uint64_t api, const std::string& topic, const Sequenced* entry) {
  auto it = api_publishes_.find(api);
  if (it == api_publishes_.end()) return;
  ApiPublishWait& w = it->second;
  if (entry != nullptr) {
    if (!w.positions.empty()) w.positions.push_back(',');
    if (w.endpoint == ApiEndpoint::kPublish) {
      w.positions += PositionJson(entry->stream, entry->offset);
    } else {
      std::string name;
      phx::AppendJsonString(name, topic);
      w.positions += name + ":{" + PositionJson(entry->stream, entry->offset) + "}";
    }
  }
  if (--w.remaining == 0) {
    std::string body =
        w.endpoint == ApiEndpoint::kPublish
            ? (w.positions.empty() ? std::string(kApiOkBody) : "{\"ok\":true," + w.positions + "}")
            : "{\"ok\":true,\"offsets\":{" + w.positions + "}}";
    if (w.key) idempotency_.Insert(*w.key, body, MonoNowMs());
    gateway_->RespondApi(w.conn, w.endpoint, 200, body);
    api_publishes_.erase(it);
  }
}

void Shard::FailApiPublish(uint64_t api) {
  auto it = api_publishes_.find(api);
  if (it == api_publishes_.end()) return;
  gateway_->RespondApi(it->second.conn, it->second.endpoint, 413,
                       ApiErrorBody("too_large", "the broadcast is over the mesh's bound"));
  // Its other topics' answers find nobody waiting.
  api_publishes_.erase(it);
}

void Shard::ApiHistory(ConnId conn, const ApiRequest& r) {
  const std::string& topic = r.topics.front();
  if (!history_ || !history_->Keeps(topic)) {
    gateway_->RespondApi(conn, r.endpoint, 404,
                         ApiErrorBody("no_history", "the topic keeps no history"));
    return;
  }
  const uint64_t id = kApiFetchBit | next_api_fetch_++;
  if (!session_->up() || draining_ || !session_->Fetch(id, topic, r.since, r.limit)) {
    gateway_->RespondApi(conn, r.endpoint, 503,
                         ApiErrorBody("unavailable", "the broker is not connected"));
    return;
  }
  api_history_.emplace(id, ApiHistoryWait{conn, MonoNowMs() + kApiHistoryWaitMs});
}

void Shard::AnswerApiHistory(const mesh::Message& msg, const std::vector<Sequenced>& entries) {
  auto it = api_history_.find(msg.id);
  if (it == api_history_.end()) return;
  const ConnId conn = it->second.conn;
  api_history_.erase(it);
  std::string body = "{\"topic\":";
  phx::AppendJsonString(body, msg.topic);
  body += ",\"epoch\":\"" + history::FormatEpoch(msg.stream) +
          "\",\"top\":" + std::to_string(msg.top) + ",\"first\":" + std::to_string(msg.first) +
          ",\"messages\":[";
  bool first = true;
  for (const Sequenced& e : entries) {
    phx::Message m;
    phx::DecodeError err;
    // What a shard published is a text broadcast it encoded, or a binary
    // one: the latter's payload is bytes, not JSON, and is left out.
    if ((e.flags & mesh::kFlagBinary) != 0 || !phx::DecodeText(e.message, &m, &err)) continue;
    if (!first) body.push_back(',');
    first = false;
    body += "{\"offset\":" + std::to_string(e.offset) + ",\"event\":";
    phx::AppendJsonString(body, m.event);
    body += ",\"payload\":";
    body += m.payload;
    body.push_back('}');
  }
  body += "]}";
  gateway_->RespondApi(conn, ApiEndpoint::kHistory, 200, body);
}

void Shard::ExpireApiHistory(int64_t now_ms) {
  for (auto it = api_history_.begin(); it != api_history_.end();) {
    if (it->second.deadline_ms <= now_ms) {
      gateway_->RespondApi(it->second.conn, ApiEndpoint::kHistory, 503,
                           ApiErrorBody("unavailable", "the broker did not answer in time"));
      it = api_history_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace sb::worker
