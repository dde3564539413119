#include "worker/hub.h"

#include <algorithm>
#include <boost/json.hpp>
#include <charconv>
#include <exception>
#include <unordered_set>
#include <utility>

#include "protocol/json_depth.h"
#include "protocol/limits.h"
#include "protocol/phoenix_events.h"
#include "worker/auth.h"

namespace sb::worker {
namespace {

using phx::kClose;
using phx::kHeartbeat;
using phx::kJoin;
using phx::kLeave;
using phx::kPhoenixTopic;
using phx::kPresenceDiff;
using phx::kPresenceState;

constexpr std::string_view kOk = phx::kStatusOk;
constexpr std::string_view kEmpty = "{}";

// Events only the server may send; a client sending one is answered, never relayed.
bool IsReserved(std::string_view event) {
  return phx::IsServerOnlyEvent(event) || event == kHeartbeat;
}

std::string ReasonJson(std::string_view reason) {
  std::string out = "{\"reason\":";
  phx::AppendJsonString(out, reason);
  out += '}';
  return out;
}

Action Send(ConnId conn, std::string data) {
  return Action{.kind = Action::Kind::kSend, .conn = conn, .data = std::move(data)};
}

Action Broadcast(std::string_view topic, ConnId except, std::string data, bool binary = false) {
  return Action{.kind = Action::Kind::kBroadcast,
                .conn = except,
                .topic = std::string(topic),
                .data = std::move(data),
                .binary = binary};
}

void ReplyError(ConnId conn, const phx::Message& msg, const std::optional<std::string>& join_ref,
                std::string_view reason, std::vector<Action>* out) {
  out->push_back(Send(
      conn, phx::EncodeReply(join_ref, msg.ref, msg.topic, phx::kStatusError, ReasonJson(reason))));
}

// phx_close for a channel: [jr, jr, topic, "phx_close", {}]. A channel joined
// with a null join_ref (Phoenix allows it) closes with [null, null, ...].
std::string CloseFrame(const std::optional<std::string>& join_ref, std::string_view topic) {
  return join_ref ? phx::EncodeChannelEvent(*join_ref, topic, kClose)
                  : phx::EncodePush(std::nullopt, topic, kClose, kEmpty);
}

// What a join's payload asks for: {"presence": {"key": "...", "meta": {...}}}.
struct PresenceRequest {
  std::string key;
  std::string meta_json;  // "" when absent
};
enum class PresenceParse { kNone, kTrack, kInvalid };

PresenceParse ParseJoinPresence(std::string_view payload, PresenceRequest* request) {
  // Boost.JSON throws only on allocation failure; a join that cannot be
  // parsed for that reason is refused like a malformed one.
  try {
    boost::json::parse_options options;
    options.max_depth = phx::kMaxJsonDepth;  // the decoder let this depth through
    boost::system::error_code ec;
    boost::json::value v = boost::json::parse(
        boost::json::string_view(payload.data(), payload.size()), ec, {}, options);
    // A payload that is not an object carries no join params to read.
    if (ec || !v.is_object()) return PresenceParse::kNone;
    const boost::json::value* presence = v.get_object().if_contains("presence");
    if (presence == nullptr) return PresenceParse::kNone;
    if (!presence->is_object()) return PresenceParse::kInvalid;
    const boost::json::value* key = presence->get_object().if_contains("key");
    if (key == nullptr || !key->is_string() || key->get_string().empty()) {
      return PresenceParse::kInvalid;
    }
    request->key = std::string(key->get_string());
    const boost::json::value* meta = presence->get_object().if_contains("meta");
    if (meta != nullptr) {
      // Deeper than the mesh can carry in a hello: refused here, with a
      // reason, rather than making the shard's next hello unacceptable.
      if (!meta->is_object() || JsonDepth(*meta) > limits::kMaxPresenceMetaDepth) {
        return PresenceParse::kInvalid;
      }
      request->meta_json = boost::json::serialize(meta->get_object());
    }
    return PresenceParse::kTrack;
  } catch (const std::exception&) {
    return PresenceParse::kInvalid;
  }
}

// A join's {"recover": {"epoch": "<16 hex digits>", "offset": N}}: N a
// non-negative integer or its decimal string (what a delivery's ref slot
// held). Anything else asks for nothing: the join is answered with the
// current position and recovered:false, and the app reloads its state.
std::optional<history::Position> ParseRecover(std::string_view payload) {
  try {
    boost::json::parse_options options;
    options.max_depth = phx::kMaxJsonDepth;
    boost::system::error_code ec;
    boost::json::value v = boost::json::parse(
        boost::json::string_view(payload.data(), payload.size()), ec, {}, options);
    if (ec || !v.is_object()) return std::nullopt;
    const boost::json::object* r = nullptr;
    if (const boost::json::value* rv = v.get_object().if_contains("recover")) r = rv->if_object();
    if (r == nullptr) return std::nullopt;
    const boost::json::value* epoch = r->if_contains("epoch");
    const boost::json::value* offset = r->if_contains("offset");
    if (!epoch || !epoch->is_string() || !offset) return std::nullopt;
    std::optional<uint64_t> stream = history::ParseEpoch(epoch->get_string());
    if (!stream) return std::nullopt;
    history::Position p{.stream = *stream};
    if (const auto* u = offset->if_uint64()) {
      p.offset = *u;
    } else if (const auto* i = offset->if_int64(); i && *i >= 0) {
      p.offset = static_cast<uint64_t>(*i);
    } else if (const auto* d = offset->if_double();
               d && *d >= 0 && *d <= 9007199254740992.0 &&
               *d == static_cast<double>(static_cast<uint64_t>(*d))) {
      p.offset = static_cast<uint64_t>(*d);
    } else if (const auto* str = offset->if_string()) {
      // Digits only (from_chars takes no sign or space for an unsigned
      // type), all of them, at most 2^64 - 1.
      const char* end = str->data() + str->size();
      if (const auto [last, ec] = std::from_chars(str->data(), end, p.offset);
          ec != std::errc() || last != end) {
        return std::nullopt;
      }
    } else {
      return std::nullopt;
    }
    return p;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace

Hub::Hub(HubLimits limits, std::string ref_prefix, const ClusterView* cluster)
    : limits_(limits), ref_prefix_(std::move(ref_prefix)), cluster_(cluster) {}

// Every entry point that appends actions ends here: a broadcast goes to the
// topic's subscribers as they are once the whole call has changed the
// tables (a leaving socket is gone, an emptied topic has nobody).
void Hub::Resolve(std::vector<Action>* out, size_t first) const {
  for (size_t i = first; i < out->size(); ++i) {
    Action& a = (*out)[i];
    if (a.kind != Action::Kind::kBroadcast || a.sequenced) continue;
    const std::vector<ConnId>* subs = Subscribers(a.topic);
    a.recipients = subs ? std::span<const ConnId>(*subs) : std::span<const ConnId>();
  }
}

void Hub::Connect(ConnId conn, std::optional<Identity> identity) {
  std::unique_ptr<const std::vector<std::string>> patterns;
  if (identity) {
    patterns =
        std::make_unique<const std::vector<std::string>>(std::move(identity->topic_patterns));
  }
  conns_.try_emplace(conn, std::move(patterns), limits_);
}

void Hub::Handle(ConnId id, const phx::Message& msg, int64_t now_ms, std::vector<Action>* out) {
  const size_t first = out->size();
  HandleOne(id, msg, now_ms, out);
  Resolve(out, first);
}

void Hub::HandleOne(ConnId id, const phx::Message& msg, int64_t now_ms, std::vector<Action>* out) {
  // Heartbeats are answered whatever the socket's state or rate: they are
  // what keeps phoenix.js from reconnecting.
  if (msg.topic == kPhoenixTopic && msg.event == kHeartbeat) {
    out->push_back(Send(id, phx::EncodeReply(msg.join_ref, msg.ref, msg.topic, kOk, kEmpty)));
    return;
  }
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  Conn& conn = it->second;
  now_ms_ = now_ms;
  if (!conn.rate.Allow(now_ms)) {
    ++stats_.rate_limited;
    if (msg.event == kJoin) ++stats_.joins_rate_limited;
    ReplyError(id, msg, msg.join_ref, "rate limited", out);
    return;
  }
  if (msg.event == kJoin) return HandleJoin(id, conn, msg, out);
  if (msg.event == kLeave) return HandleLeave(id, conn, msg, out);
  if (IsReserved(msg.event)) {
    ++stats_.reserved_refused;
    ReplyError(id, msg, msg.join_ref, "reserved event", out);
    return;
  }
  HandlePush(id, conn, msg, out);
}

void Hub::HandleJoin(ConnId id, Conn& conn, const phx::Message& msg, std::vector<Action>* out) {
  auto refuse = [&](std::string_view reason, uint64_t& counter) {
    ++counter;
    ReplyError(id, msg, msg.join_ref, reason, out);
    // The reply echoes the topic (up to --max-frame): owed like a
    // presence_state, so the client learns the reason even when that is
    // more than --max-outbound.
    out->back().owed = true;
  };
  // Checks that need nothing but the request come first, so a refused join
  // changes nothing (a refused rejoin keeps the channel it would replace).
  if (msg.topic.empty() || msg.topic.size() > limits::kMaxTopicBytes) {
    return refuse("invalid topic", stats_.joins_invalid_topic);
  }
  if (conn.topic_patterns && !TopicAllowed(*conn.topic_patterns, msg.topic)) {
    return refuse("unauthorized", stats_.joins_unauthorized);
  }
  PresenceRequest presence;
  // A binary payload is raw bytes, not join params.
  PresenceParse parse =
      msg.binary ? PresenceParse::kNone : ParseJoinPresence(msg.payload, &presence);
  if (parse == PresenceParse::kInvalid)
    return refuse("invalid presence", stats_.joins_invalid_presence);
  // Every presence_state and diff of the topic repeats the key and meta,
  // here and on every other shard: their size is bounded where they enter.
  if (parse == PresenceParse::kTrack &&
      presence.key.size() + presence.meta_json.size() > limits_.max_presence_bytes) {
    return refuse("presence too large", stats_.joins_presence_too_large);
  }

  // Last join wins (Phoenix's duplicate join): the old channel closes first,
  // so it does not count against the limit below.
  if (int old = FindJoined(conn, msg.topic); old >= 0) {
    out->push_back(Send(id, CloseFrame(conn.joined[old].join_ref, msg.topic)));
    Unsubscribe(id, conn, static_cast<size_t>(old), id, out);
  }
  if (conn.joined.size() >= limits_.max_topics_per_socket) {
    return refuse("too many channels joined", stats_.joins_too_many);
  }

  auto topic_it = topics_.find(msg.topic);
  if (topic_it == topics_.end()) topic_it = topics_.emplace(msg.topic, Topic{}).first;
  Topic& topic = topic_it->second;
  if (cluster_ && topic.subscribers.empty()) {
    out->push_back(Action{.kind = Action::Kind::kSubscribe, .topic = msg.topic});
  }
  topic.subscribers.push_back(id);
  Joined& joined = conn.joined.emplace_back(Joined{.topic = &*topic_it, .join_ref = msg.join_ref});
  ++stats_.joins_ok;
  if (KeepsHistory(msg.topic)) {
    // The reply carries the stream's position, which the shard learns from
    // the broker; everything else about the join is as for any topic.
    out->push_back(Action{.kind = Action::Kind::kJoinHistory,
                          .conn = id,
                          .topic = msg.topic,
                          .join_ref = msg.join_ref,
                          .ref = msg.ref,
                          .recover = msg.binary ? std::nullopt : ParseRecover(msg.payload)});
  } else {
    out->push_back(Send(id, phx::EncodeReply(msg.join_ref, msg.ref, msg.topic, kOk, kEmpty)));
  }

  std::optional<std::string> diff;
  if (parse == PresenceParse::kTrack) {
    uint64_t seq = next_presence_seq_++;
    if (!topic.presence) topic.presence = std::make_unique<Presence>();
    Result<std::string> tracked =
        topic.presence->Track(presence.key, PresenceRef(seq), presence.meta_json);
    // The meta was checked to be an object above; only an allocation failure
    // gets here, and the join then stands without presence.
    if (tracked.ok()) {
      joined.presence_key = std::move(presence.key);
      joined.presence_seq = seq;
      diff = std::move(tracked).value();
      std::string ref = PresenceRef(seq);
      PresenceAction(msg.topic, joined.presence_key, ref,
                     topic.presence->MetaJson(joined.presence_key, ref), out);
    }
  }
  // Always, even "{}": phoenix.js holds every presence_diff back until a
  // state arrives for the current join_ref. The joiner's own meta is in it,
  // and in a cluster every other shard's: once the broker has said who they
  // are (RemoteSnapshot), or when it cannot.
  if (cluster_ && cluster_->up() && !topic.remote_known) {
    topic.pending_states.push_back({id, msg.join_ref, now_ms_});
  } else {
    out->push_back(StateFor(id, msg.join_ref, msg.topic, topic));
  }
  // To everyone, the joiner included, as Phoenix does; phoenix.js ignores the
  // meta it already has from the state by its phx_ref.
  if (diff)
    out->push_back(Broadcast(msg.topic, 0, phx::EncodeBroadcast(msg.topic, kPresenceDiff, *diff)));
}

Action Hub::StateFor(ConnId conn, const std::optional<std::string>& join_ref, std::string_view name,
                     const Topic& topic) const {
  std::string state = topic.presence ? topic.presence->StateJson() : std::string(kEmpty);
  if (cluster_) state = remote_.MergedStateJson(name, state);
  // However large the topic's presence, a joiner is owed its state: it is
  // not refused for passing the socket's outbound limit.
  Action a = Send(conn, phx::EncodePush(join_ref, name, kPresenceState, state));
  a.owed = true;
  return a;
}

void Hub::HandleLeave(ConnId id, Conn& conn, const phx::Message& msg, std::vector<Action>* out) {
  int index = FindJoined(conn, msg.topic);
  if (index < 0) {
    // Phoenix answers ok: the channel is gone either way.
    out->push_back(Send(id, phx::EncodeReply(msg.join_ref, msg.ref, msg.topic, kOk, kEmpty)));
    return;
  }
  Joined& joined = conn.joined[index];
  if (msg.join_ref && msg.join_ref != joined.join_ref) {
    ++stats_.stale_dropped;
    return;
  }
  ++stats_.leaves;
  out->push_back(Send(id, phx::EncodeReply(joined.join_ref, msg.ref, msg.topic, kOk, kEmpty)));
  out->push_back(Send(id, CloseFrame(joined.join_ref, msg.topic)));
  Unsubscribe(id, conn, static_cast<size_t>(index), id, out);
}

void Hub::HandlePush(ConnId id, Conn& conn, const phx::Message& msg, std::vector<Action>* out) {
  int index = FindJoined(conn, msg.topic);
  if (index < 0) {
    ++stats_.unmatched;
    ReplyError(id, msg, std::nullopt, "unmatched topic", out);
    return;
  }
  const Joined& joined = conn.joined[index];
  if (msg.join_ref && msg.join_ref != joined.join_ref) {
    ++stats_.stale_dropped;
    return;
  }
  if (cluster_ && !cluster_->CanPublish(msg.payload.size())) {
    ++stats_.broadcasts_refused;
    ReplyError(id, msg, joined.join_ref, "unavailable", out);
    return;
  }
  ++stats_.broadcasts;
  const size_t first = out->size();
  if (msg.binary) {
    // Names from a decoded binary message fit the u8 lengths; an encoding
    // failure ("") would mean the message was built elsewhere, and an empty
    // frame is never relayed.
    std::string frame = phx::EncodeBinaryBroadcast(msg.topic, msg.event, msg.payload);
    if (!frame.empty()) {
      out->push_back(Broadcast(msg.topic, id, std::move(frame), /*binary=*/true));
      out->back().publish = cluster_ != nullptr;
    }
  } else {
    out->push_back(
        Broadcast(msg.topic, id, phx::EncodeBroadcast(msg.topic, msg.event, msg.payload)));
    out->back().publish = cluster_ != nullptr;
  }
  if (KeepsHistory(msg.topic) && out->size() > first) {
    // Delivered here once the broker has sequenced it, the sender answered
    // then, with its offset (docs/WORKER.md, History).
    Action& a = out->back();
    a.sequenced = true;
    a.join_ref = joined.join_ref;
    a.ref = msg.ref;
    return;
  }
  // The channel's join_ref, as Phoenix replies; it differs from the
  // message's only when the client sent null.
  out->push_back(Send(id, phx::EncodeReply(joined.join_ref, msg.ref, msg.topic, kOk, kEmpty)));
}

void Hub::Publish(std::string_view topic, std::string_view event, std::string_view payload_json,
                  std::vector<Action>* out, std::string_view key) {
  ++stats_.broadcasts;
  const size_t first = out->size();
  out->push_back(Broadcast(topic, 0, phx::EncodeBroadcast(topic, event, payload_json)));
  out->back().publish = cluster_ != nullptr;
  if (KeepsHistory(topic)) {
    out->back().sequenced = true;
    out->back().key = std::string(key);
    return;
  }
  Resolve(out, first);
  if (cluster_ != nullptr && !key.empty()) {
    // The node's one ordering point decides whether this is the key's first
    // publish; a local delivery now could be a second one.
    out->back().recipients = {};
    out->back().key = std::string(key);
  }
}

std::optional<std::string> Hub::PresenceState(std::string_view topic) const {
  auto it = topics_.find(topic);
  if (!cluster_) {
    return it != topics_.end() && it->second.presence ? it->second.presence->StateJson()
                                                      : std::string(kEmpty);
  }
  if (it == topics_.end() || !it->second.remote_known) return std::nullopt;
  const Topic& t = it->second;
  return remote_.MergedStateJson(topic, t.presence ? t.presence->StateJson() : std::string(kEmpty));
}

bool Hub::JoinedAs(ConnId conn, std::string_view topic,
                   const std::optional<std::string>& join_ref) const {
  auto it = conns_.find(conn);
  if (it == conns_.end()) return false;
  const int index = FindJoined(it->second, topic);
  return index >= 0 && it->second.joined[static_cast<size_t>(index)].join_ref == join_ref;
}

void Hub::ErrorTopic(std::string_view topic, std::vector<Action>* out) {
  const std::vector<ConnId>* subs = Subscribers(topic);
  if (subs == nullptr) return;
  const size_t first = out->size();
  // Unsubscribe changes the list (and erases the topic with its last one).
  const std::vector<ConnId> channels = *subs;
  for (ConnId id : channels) {
    auto it = conns_.find(id);
    if (it == conns_.end()) continue;
    const int index = FindJoined(it->second, topic);
    if (index < 0) continue;
    const std::optional<std::string>& join_ref = it->second.joined[index].join_ref;
    // Phoenix's [join_ref, join_ref, topic, "phx_error", {}].
    out->push_back(Send(id, join_ref ? phx::EncodeChannelEvent(*join_ref, topic, phx::kError)
                                     : phx::EncodePush(std::nullopt, topic, phx::kError, kEmpty)));
    ++stats_.channels_errored;
    Unsubscribe(id, it->second, static_cast<size_t>(index), 0, out);
  }
  Resolve(out, first);
}

void Hub::Disconnect(ConnId id, std::vector<Action>* out) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  Conn& conn = it->second;
  const size_t first = out->size();
  while (!conn.joined.empty()) Unsubscribe(id, conn, conn.joined.size() - 1, id, out);
  conns_.erase(it);
  Resolve(out, first);
}

std::span<const ConnId> Hub::Deliver(std::string_view topic) {
  const std::vector<ConnId>* subs = Subscribers(topic);
  // None: the last one left after the broker routed it here.
  if (subs == nullptr) return {};
  ++stats_.deliveries_from_cluster;
  return *subs;
}

const std::vector<ConnId>* Hub::Subscribers(std::string_view topic) const {
  auto it = topics_.find(topic);
  return it == topics_.end() ? nullptr : &it->second.subscribers;
}

int Hub::FindJoined(const Conn& conn, std::string_view topic) {
  for (size_t i = 0; i < conn.joined.size(); ++i) {
    if (conn.joined[i].topic->first == topic) return static_cast<int>(i);
  }
  return -1;
}

void Hub::Unsubscribe(ConnId id, Conn& conn, size_t index, ConnId except,
                      std::vector<Action>* out) {
  Joined joined = std::move(conn.joined[index]);
  // A socket's channels have no order; the last one fills the hole.
  if (index + 1 != conn.joined.size()) conn.joined[index] = std::move(conn.joined.back());
  conn.joined.pop_back();

  const std::string& name = joined.topic->first;
  Topic& topic = joined.topic->second;
  auto& subs = topic.subscribers;
  if (auto pos = std::find(subs.begin(), subs.end(), id); pos != subs.end()) subs.erase(pos);
  if (joined.presence_seq != 0 && topic.presence) {
    // A socket tracks at most one meta per channel, so this single leave is
    // the whole of its presence_diff for the topic.
    std::string ref = PresenceRef(joined.presence_seq);
    if (auto diff = topic.presence->Untrack(joined.presence_key, ref)) {
      out->push_back(Broadcast(name, except, phx::EncodeBroadcast(name, kPresenceDiff, *diff)));
      PresenceAction(name, joined.presence_key, ref, nullptr, out);
    }
    if (topic.presence->empty()) topic.presence.reset();
  }
  if (cluster_ && subs.empty()) {
    out->push_back(Action{.kind = Action::Kind::kUnsubscribe, .topic = name});
    remote_.Drop(name);
  }
  // Erased through an iterator: `name` lives in the node being erased.
  if (subs.empty() && !topic.presence) topics_.erase(topics_.find(name));
}

void Hub::PresenceAction(std::string_view topic, std::string_view key, std::string_view phx_ref,
                         const std::string* meta_json, std::vector<Action>* out) const {
  if (!cluster_) return;
  mesh::PresenceChange change;
  mesh::PresenceEntry entry{std::string(key), std::string(phx_ref), {}};
  if (meta_json != nullptr) {
    entry.meta_json = *meta_json;
    change.joins.push_back(std::move(entry));
  } else {
    change.leaves.push_back(std::move(entry));
  }
  out->push_back(Action{.kind = Action::Kind::kPresence,
                        .topic = std::string(topic),
                        .data = mesh::EncodePresenceChange(change)});
}

void Hub::RemoteDiff(std::string_view topic, std::string_view diff_json, std::vector<Action>* out) {
  if (topics_.find(topic) == topics_.end()) return;
  if (!remote_.ApplyDiff(topic, diff_json).ok()) {
    ++stats_.remote_invalid;
    return;
  }
  const size_t first = out->size();
  out->push_back(Broadcast(topic, 0, phx::EncodeBroadcast(topic, kPresenceDiff, diff_json)));
  Resolve(out, first);
}

void Hub::RemoteSnapshot(std::string_view topic, std::string_view state_json,
                         std::vector<Action>* out) {
  if (topics_.find(topic) == topics_.end()) return;
  Result<std::optional<std::string>> diff = remote_.Replace(topic, state_json);
  if (!diff.ok()) {
    ++stats_.remote_invalid;
    return;
  }
  auto it = topics_.find(topic);
  it->second.remote_known = true;
  const size_t first = out->size();
  // Joiners that waited for this get the whole cluster's state first; the
  // diff below then changes nothing for them (phoenix.js matches metas by
  // phx_ref).
  SendPendingStates(*it, INT64_MAX, out);
  if (diff.value()) {
    out->push_back(Broadcast(topic, 0, phx::EncodeBroadcast(topic, kPresenceDiff, *diff.value())));
  }
  Resolve(out, first);
}

void Hub::SendPendingStates(TopicMap::value_type& entry, int64_t older_than_ms,
                            std::vector<Action>* out) {
  auto& pending = entry.second.pending_states;
  auto keep = pending.begin();
  for (PendingState& p : pending) {
    if (p.since_ms > older_than_ms) {
      if (&*keep != &p) *keep = std::move(p);
      ++keep;
      continue;
    }
    // Only if the socket is still in this channel (same join).
    auto c = conns_.find(p.conn);
    if (c == conns_.end()) continue;
    int index = FindJoined(c->second, entry.first);
    if (index < 0 || c->second.joined[index].join_ref != p.join_ref) continue;
    out->push_back(StateFor(p.conn, p.join_ref, entry.first, entry.second));
  }
  pending.erase(keep, pending.end());
}

void Hub::SendOverdueStates(int64_t now_ms, std::vector<Action>* out) {
  // Presence states only (kSend): nothing here to resolve.
  for (auto& entry : topics_) {
    if (!entry.second.pending_states.empty()) {
      SendPendingStates(entry, now_ms - kStateWaitMs, out);
    }
  }
}

void Hub::ClusterState(std::vector<std::string>* topics,
                       std::vector<mesh::TopicState>* presence) const {
  for (const auto& [name, topic] : topics_) {
    if (!topic.subscribers.empty()) topics->push_back(name);
    if (!topic.presence) continue;
    mesh::TopicState& state = presence->emplace_back();
    state.topic = name;
    topic.presence->ForEach([&](std::string_view key, std::string_view ref, std::string_view json) {
      state.metas.push_back({std::string(key), std::string(ref), std::string(json)});
    });
  }
}

void Hub::ExportSession(handoff::Session* session) const {
  session->presence_ref_prefix = ref_prefix_;
  session->next_presence_seq = next_presence_seq_;
  session->remote_presence.clear();
  if (!cluster_) return;
  for (const auto& [name, topic] : topics_) {
    // A topic whose snapshot has not come is asked again by the new
    // process's hello, as it would be after a reconnect.
    if (topic.remote_known) session->remote_presence.push_back({name, remote_.StateJson(name)});
  }
}

bool Hub::ExportConnection(ConnId id, handoff::Connection* out) const {
  auto it = conns_.find(id);
  if (it == conns_.end()) return false;
  const Conn& conn = it->second;
  out->identity.reset();
  if (conn.topic_patterns) {
    out->identity = handoff::TokenIdentity{.sub = {}, .topic_patterns = *conn.topic_patterns};
  }
  const RateLimiter::State rate = conn.rate.state();
  out->rate = {.tokens = rate.tokens, .last_ms = rate.last_ms};
  out->channels.clear();
  for (const Joined& joined : conn.joined) {
    handoff::Channel& channel = out->channels.emplace_back();
    channel.topic = joined.topic->first;
    channel.join_ref = joined.join_ref;
    if (joined.presence_seq == 0) continue;
    const Presence* presence = joined.topic->second.presence.get();
    const std::string* meta =
        presence ? presence->MetaJson(joined.presence_key, PresenceRef(joined.presence_seq))
                 : nullptr;
    // Tracked with the channel and untracked only with it, so always there.
    if (meta == nullptr) continue;
    channel.presence_seq = joined.presence_seq;
    channel.presence_key = joined.presence_key;
    channel.presence_meta = *meta;
  }
  return true;
}

Status Hub::ImportSession(const handoff::Session& session) {
  if (!conns_.empty()) return Status::Refused("hand-off: the hub already has sockets");
  RemotePresence remote;
  for (const handoff::RemoteTopic& t : session.remote_presence) {
    Result<std::optional<std::string>> replaced = remote.Replace(t.topic, t.state_json);
    if (!replaced.ok()) {
      return Status::Refused("hand-off: remote presence of " + t.topic + ": " +
                             replaced.status().message());
    }
  }
  ref_prefix_ = session.presence_ref_prefix;
  next_presence_seq_ = std::max<uint64_t>(session.next_presence_seq, 1);
  remote_ = std::move(remote);
  return Status::Ok();
}

Status Hub::ImportConnection(const handoff::Connection& in) {
  if (in.id == 0 || conns_.contains(in.id)) {
    return Status::Refused("hand-off: connection id 0 or twice");
  }
  std::unordered_set<std::string_view> seen;
  for (const handoff::Channel& c : in.channels) {
    if (c.topic.empty() || !seen.insert(c.topic).second) {
      return Status::Refused("hand-off: a topic empty or twice in one connection");
    }
    if (c.presence_seq == 0) continue;
    if (c.presence_seq >= next_presence_seq_) {
      return Status::Refused("hand-off: a presence ref the session never issued");
    }
    boost::system::error_code ec;
    boost::json::value meta = boost::json::parse(
        boost::json::string_view(c.presence_meta.data(), c.presence_meta.size()), ec);
    if (ec || !meta.is_object()) return Status::Refused("hand-off: a presence meta not an object");
  }

  std::optional<Identity> identity;
  if (in.identity) identity = Identity{in.identity->sub, in.identity->topic_patterns};
  Connect(in.id, std::move(identity));
  Conn& conn = conns_.at(in.id);
  conn.rate.Restore({.tokens = in.rate.tokens, .last_ms = in.rate.last_ms});
  for (const handoff::Channel& c : in.channels) {
    auto topic_it = topics_.find(c.topic);
    if (topic_it == topics_.end()) {
      topic_it = topics_.emplace(c.topic, Topic{}).first;
      // What the old process knew of the other shards came with the session.
      topic_it->second.remote_known = remote_.Has(c.topic);
    }
    Topic& topic = topic_it->second;
    topic.subscribers.push_back(in.id);
    Joined& joined = conn.joined.emplace_back(Joined{.topic = &*topic_it, .join_ref = c.join_ref});
    if (c.presence_seq == 0) continue;
    if (!topic.presence) topic.presence = std::make_unique<Presence>();
    // The stored meta holds its phx_ref, which Track puts back first, as it
    // was: the meta is the same bytes in the new process.
    if (topic.presence->Track(c.presence_key, PresenceRef(c.presence_seq), c.presence_meta).ok()) {
      joined.presence_key = c.presence_key;
      joined.presence_seq = c.presence_seq;
    }
  }
  return Status::Ok();
}

std::string Hub::PresenceRef(uint64_t seq) const {
  char digits[16];
  size_t n = 0;
  do {
    digits[n++] = "0123456789abcdefghijklmnopqrstuvwxyz"[seq % 36];
    seq /= 36;
  } while (seq != 0);
  std::string ref = ref_prefix_;
  while (n > 0) ref += digits[--n];
  return ref;
}

}  // namespace sb::worker
