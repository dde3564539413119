#include "broker/router.h"

#include <algorithm>
#include <iterator>
#include <string>
#include <utility>

#include "broker/topic_owner.h"

namespace sb::broker {

namespace {

// A stranger that keeps talking (a shard's queued publishes arriving before
// it learns the broker restarted) gets one kReset per this long, not one per
// message.
constexpr int64_t kResetIntervalUs = 100'000;

// A hello without "outbox" comes from a shard older than the field; its
// outbox is bounded by the shard's default (worker --max-outbox).
constexpr uint64_t kOutboxOfAnOlderShard = 32768;

mesh::Message Control(mesh::Type type) {
  mesh::Message m;
  m.type = type;
  return m;
}

std::vector<PresenceMeta> ToMetas(const std::vector<mesh::PresenceEntry>& entries) {
  std::vector<PresenceMeta> out;
  out.reserve(entries.size());
  for (const mesh::PresenceEntry& e : entries) out.push_back({e.key, e.phx_ref, e.meta_json});
  return out;
}

size_t Index(DropReason r) { return static_cast<size_t>(r); }

// A node in a mesh tags the streams it starts with its name's tag, so that
// its brokers (this one, and the next after a restart) know which they may
// continue.
HistoryOptions Tagged(HistoryOptions h, const std::string& node) {
  if (h.stream_tag == 0 && !node.empty()) h.stream_tag = NodeStreamTag(node);
  return h;
}
size_t Index(Refused r) { return static_cast<size_t>(r); }

}  // namespace

Status ValidateRouterOptions(const RouterOptions& options) {
  if (Status s = ValidateQueuePolicy(options.queue); !s.ok()) return s;
  if (options.queue.max_bytes < options.max_packed_bytes) {
    return Status::InvalidConfig("queue max_bytes " + std::to_string(options.queue.max_bytes) +
                                 " is below the largest mesh message (" +
                                 std::to_string(options.max_packed_bytes) + " bytes)");
  }
  return Status::Ok();
}

Router::Router(RouterOptions options, LinkSender* sender)
    : options_(options),
      sender_(sender),
      liveness_(options.liveness),
      history_(Tagged(options.history, options.node)),
      settle_(options.settle) {
  if (!options_.node.empty()) owner_nodes_.push_back(options_.node);
}

Router::Link* Router::Find(LinkId id) {
  auto it = state_.find(id);
  return it == state_.end() ? nullptr : it->second.get();
}

LinkId Router::FindInstance(uint64_t instance) const {
  auto it = by_instance_.find(instance);
  return it == by_instance_.end() ? kNoLink : it->second;
}

void Router::SendControl(const std::string& routing_id, const mesh::Message& msg) {
  // Not handed over: the connection is gone. A lost welcome or ack is
  // restated after the shard's next hello (it re-sends what is unacked, and
  // a duplicate is acked); a lost reset, by the next message it sends.
  (void)sender_->Send(routing_id, msg);
}

void Router::OnMessage(std::string_view routing_id, std::span<const std::string_view> frames,
                       int64_t now_us) {
  mesh::Message msg;
  if (!mesh::Decode(frames, &msg).ok()) {
    ++counters_.refused[Index(Refused::kBadFrame)];
    return;
  }
  if (msg.type == mesh::Type::kHello) return OnHello(routing_id, msg, now_us);
  if (msg.type == mesh::Type::kBatch) {
    if (nested_) {  // a batch inside a batch: nothing sends one
      ++counters_.refused[Index(Refused::kBadFrame)];
      return;
    }
    nested_ = true;
    Status s = mesh::ForEachInBatch(msg.body, [&](std::span<const std::string_view> inner) {
      OnMessage(routing_id, inner, now_us);
    });
    nested_ = false;
    if (!s.ok()) ++counters_.refused[Index(Refused::kBadFrame)];
    return;
  }

  LinkId id = links_.Find(routing_id);
  Link* link = Find(id);
  if (link == nullptr) {
    ++counters_.refused[Index(Refused::kStranger)];
    if (routing_id != last_reset_ || now_us - last_reset_us_ >= kResetIntervalUs) {
      last_reset_ = std::string(routing_id);
      last_reset_us_ = now_us;
      SendControl(last_reset_, Control(mesh::Type::kReset));
    }
    return;
  }
  liveness_.OnHeard(id, now_us / 1000);
  switch (msg.type) {
    case mesh::Type::kHeartbeat:
      return;
    case mesh::Type::kSubscribe:
      interests_.Subscribe(id, msg.topic);
      LocalInterestChanged(msg.topic);
      // Even when already subscribed: the shard asked because it has no
      // picture of the topic's presence elsewhere, and a snapshot is harmless.
      // While settling, the picture is incomplete: all snapshots go at the end.
      if (Settling(now_us)) {
        link->presence_dirty = true;
        return;
      }
      return SendSnapshot(id, *link, msg.topic, now_us);
    case mesh::Type::kUnsubscribe:
      interests_.Unsubscribe(id, msg.topic);
      LocalInterestChanged(msg.topic);
      return;
    case mesh::Type::kPublish:
      return OnPublish(id, *link, msg, now_us);
    case mesh::Type::kCredit:
      return OnCredit(*link, msg.n);
    case mesh::Type::kPresence:
      return OnPresence(id, msg, now_us);
    case mesh::Type::kFetch:
      return OnFetch(id, *link, msg, now_us);
    case mesh::Type::kRestate:
      return OnRestate(*link, msg, now_us);
    case mesh::Type::kHello:
    case mesh::Type::kBatch:
    case mesh::Type::kWelcome:
    case mesh::Type::kMembers:
    case mesh::Type::kReset:
    case mesh::Type::kAck:
    case mesh::Type::kDeliver:
    case mesh::Type::kDiff:
    case mesh::Type::kSnapshot:
    case mesh::Type::kHistory:
    case mesh::Type::kPeerHello:
    case mesh::Type::kPeerWelcome:
    case mesh::Type::kPeerHeartbeat:
    case mesh::Type::kPeerData:
    case mesh::Type::kPeerAck:
    case mesh::Type::kPeerInterest:
    case mesh::Type::kPeerPresence:
    case mesh::Type::kPeerSequence:
      // What only a broker sends (the peer types only to another broker).
      ++counters_.refused[Index(Refused::kBadFrame)];
      return;
  }
}

void Router::OnHello(std::string_view routing_id, const mesh::Message& msg, int64_t now_us) {
  Result<mesh::Hello> hello = mesh::DecodeHello(msg.body);
  if (!hello.ok()) {
    ++counters_.refused[Index(Refused::kBadFrame)];
    return;
  }
  std::vector<TopicPresence> state;
  state.reserve(hello->presence.size());
  for (const mesh::TopicState& t : hello->presence) state.push_back({t.topic, ToMetas(t.metas)});

  LinkId id = FindInstance(hello->instance);
  Link* link = Find(id);
  if (link != nullptr && *links_.RoutingId(id) != routing_id &&
      (hello->token.empty() || hello->token != link->token)) {
    // Another connection names a live instance (every delivery shows it)
    // without its secret: not that shard's process, or one too old to
    // prove it. The session stays where it is; if its connection is really
    // gone, the link expires and the next hello starts a new one.
    ++counters_.refused[Index(Refused::kBadRebind)];
    return;
  }
  ++counters_.hellos;
  // Before anything below asks whether the broker is settling.
  settle_.OnHello(hello->shard, hello->heartbeat_ms, hello->members, now_us, hello->restate > 0);
  // The keys the shard accepted, maybe under a broker that is gone: this
  // broker learns the node's keys from every shard's hello.
  for (const mesh::KeyClaim& c : hello->idempotency) {
    keys_.Restore(c.key, c.topic, hello->instance, c.seq, c.age_ms, now_us / 1000);
  }
  // The streams the shard holds: a new broker continues each from the
  // highest top any shard names (the messages follow as kRestate).
  for (const mesh::StreamPosition& p : hello->history) {
    history_.RestatePosition(p.topic, p.stream, p.top);
  }
  for (size_t i = 0; i < std::size(hello->dropped); ++i) {
    counters_.hello_dropped[i] += hello->dropped[i];
  }
  // A routing id is a connection; one held by another instance means that
  // link's peer is gone (libzmq would not hand it out twice otherwise).
  if (LinkId holder = links_.Find(routing_id); holder != kNoLink && holder != id) {
    RemoveLink(holder, now_us);
  }
  // A hello again on the same connection: nothing sent to the shard since
  // its last one was lost (one connection, in order), so its picture of the
  // other shards' presence is whole unless something was shed.
  const bool same_connection = link != nullptr && *links_.RoutingId(id) == routing_id;
  if (link != nullptr && *links_.RoutingId(id) != routing_id) {
    // The same shard process reconnected: same link, new connection. What
    // was in flight on the old connection will not be credited back, and
    // may never have arrived: the deliveries go again, first, on the new
    // one (the shard drops those it had, by origin and seq). Presence in
    // flight is not resent: the hello's snapshots below replace it.
    ++counters_.rebinds;
    links_.Rebind(id, routing_id);
    std::vector<QueuedMessage> again;
    for (QueuedMessage& m : link->in_flight) {
      if (m.tag >= kFirstPublishTag) {
        again.push_back(std::move(m));
      } else {
        Settle(m.tag);
      }
    }
    link->in_flight.clear();
    counters_.resent += again.size();
    link->queue.Requeue(std::move(again));
    link->queue.ResetCredit(hello->window);
  } else if (link != nullptr) {
    // A hello again on the same connection (the shard lost track of us for
    // a while): its state is restated below; what is in flight still comes
    // back as credit, so the credit stands.
  } else {
    id = links_.Attach(routing_id).id;
    link = state_.emplace(id, std::make_unique<Link>(options_.queue)).first->second.get();
    link->instance = hello->instance;
    link->token = hello->token;
    if (hello->acked) {
      // The shard forgot everything up to it: its next publish comes after.
      link->done_seq = link->last_seq = *hello->acked;
      link->seq_known = true;
    }
    by_instance_[hello->instance] = id;
    link->queue.Grant(hello->window);
  }
  link->shard = hello->shard;
  link->restates_due = hello->restate;
  link->members_due = true;
  members_dirty_ = true;
  link->outbox = hello->outbox != 0 ? hello->outbox : kOutboxOfAnOlderShard;
  liveness_.OnHeard(id, now_us / 1000);

  InterestTable::Replaced replaced = interests_.ReplaceShard(id, hello->topics);
  for (const std::string& t : replaced.added) LocalInterestChanged(t);
  for (const std::string& t : replaced.removed) LocalInterestChanged(t);
  Result<std::vector<TopicDiff>> diffs = presence_.ReplaceShard(id, state);
  if (!diffs.ok()) ++counters_.refused[Index(Refused::kBadPresence)];
  if (diffs.ok()) {
    for (const TopicDiff& d : diffs.value()) LocalPresenceChanged(d.topic);
  }

  mesh::Message welcome = Control(mesh::Type::kWelcome);
  welcome.epoch = options_.epoch;
  SendControl(*links_.RoutingId(id), welcome);
  // Fresh snapshots replace whatever repair was pending — once the other
  // shards have had time to say hello to a new broker. On the same
  // connection, with nothing shed, only the topics the broker did not know
  // the shard had (a subscribe of it was lost): a busy shard that lost
  // track of a busy broker and said hello again is not sent every topic's
  // whole presence again, which would keep both busy.
  const bool whole = !same_connection || link->presence_dirty;
  link->presence_dirty = Settling(now_us);
  if (!link->presence_dirty) {
    for (const std::string& topic : whole ? hello->topics : replaced.added) {
      link = Find(id);
      if (link == nullptr) break;  // a queue too small even for this: disconnected
      SendSnapshot(id, *link, topic, now_us);
    }
  }
  if (diffs.ok()) SendDiffs(id, diffs.value(), now_us);
}

void Router::OnPublish(LinkId id, Link& link, const mesh::Message& msg, int64_t now_us) {
  // Seqs start at 1; a seq further past the last acked one than the shard's
  // outbox holds is not one it can have sent. Either would poison the
  // link's numbering (0 wraps done_seq below; 2^64-1 would make every later
  // publish a duplicate), so neither changes anything.
  if (msg.seq == 0) {
    ++counters_.refused[Index(Refused::kBadSeq)];
    return;
  }
  if (link.seq_known && msg.seq <= link.last_seq) {
    // A resend after a reconnect: routed already. Its ack comes when it is
    // done, or now if it is.
    ++counters_.refused[Index(Refused::kDuplicate)];
    link.ack_due = true;
    return;
  }
  // Past last_seq, so past done_seq too: no wrap.
  if (link.seq_known && msg.seq - link.done_seq > link.outbox) {
    ++counters_.refused[Index(Refused::kBadSeq)];
    return;
  }
  if (!link.seq_known) {
    // Everything before the first seq this broker sees was acked by another
    // broker (the shard re-sends from its oldest unacked publish).
    link.done_seq = msg.seq - 1;
    link.seq_known = true;
  }
  link.last_seq = msg.seq;
  // A sequenced publish: the origin delivered nothing itself; it learns
  // the offset from its own copy (docs/PROTOCOL.md, History).
  To to = (msg.flags & mesh::kFlagSequenced) != 0 ? To::kAll : To::kOthers;
  if ((msg.flags & mesh::kFlagKeyed) != 0) {
    // Claimed as it arrives, held or not: the broker sees every publish of
    // the node, in one order, so the first to arrive is the one routed. A
    // keyed publish goes to its origin's subscribers too: the origin
    // delivered nothing itself (docs/PROTOCOL.md, Idempotency).
    to = keys_.Claim(msg.key, msg.topic, link.instance, msg.seq, now_us / 1000) ==
                 KeyTable::Verdict::kRepeat
             ? To::kNobody
             : To::kAll;
    if (to == To::kNobody) ++counters_.idempotent_repeats;
  }
  if (Settling(now_us)) {
    // A new broker: shards that have not said hello yet would miss this.
    // A repeat waits too, so that its ack comes after those of the seqs
    // before it.
    held_.push_back(
        Held{id, msg.seq, msg.flags, msg.stamp, std::string(msg.topic), std::string(msg.body), to});
    return;
  }
  // What was held goes first: receivers take each origin's seqs in order.
  ReleaseHeld(now_us);
  Route(id, link, msg.seq, msg.flags, msg.stamp, msg.topic, msg.body, to, now_us);
}

void Router::ReleaseHeld(int64_t now_us) {
  if ((held_.empty() && held_fetches_.empty() && held_peer_.empty()) || Settling(now_us)) return;
  // What came from other nodes meanwhile first: it was acked to its sender
  // only once handled, and the shards have all said hello now.
  std::vector<HeldPeerData> from_peers;
  from_peers.swap(held_peer_);
  for (const HeldPeerData& d : from_peers) {
    // A peer whose broker restarted meanwhile numbers anew: what its old
    // process sent is not of the stream now held (and that process is gone).
    Peer* peer = FindPeer(d.peer);
    if (peer != nullptr && peer->in.stream() == d.stream) {
      HandlePeerData(*peer, d.seq, d.packed, now_us);
    }
  }
  // Settled: every live shard has said hello. Route what waited, in the
  // order it came; a shard that died meanwhile has nobody to ack.
  std::vector<Held> held;
  held.swap(held_);
  for (const Held& h : held) {
    if (Link* origin = Find(h.origin)) {
      Route(h.origin, *origin, h.seq, h.flags, h.stamp, h.topic, h.body, h.to, now_us);
    }
  }
  // Then the fetches: the positions they answer include what was just
  // sequenced, whose deliveries are queued ahead of the answers.
  std::vector<HeldFetch> fetches;
  fetches.swap(held_fetches_);
  for (const HeldFetch& f : fetches) {
    if (Link* from = Find(f.from)) {
      FetchOrForward(f.from, *from, f.request, f.topic, f.after, f.limit, now_us);
    }
  }
}

bool Router::Settling(int64_t now_us) { return settle_.Settling(now_us); }

void Router::Route(LinkId id, Link& link, uint64_t seq, uint8_t flags, uint64_t stamp,
                   std::string_view topic, std::string_view body, To who, int64_t now_us) {
  if (who != To::kNobody) ++counters_.publishes;
  uint64_t tag = next_tag_++;
  Pending& pending = pending_[tag];
  pending = {id, seq, 0};
  link.publishes.push_back(tag);

  mesh::Message deliver;
  deliver.type = mesh::Type::kDeliver;
  deliver.origin = link.instance;
  deliver.seq = seq;
  // The key stays here: receivers dedupe by origin and seq.
  deliver.flags = flags & ~mesh::kFlagKeyed;
  deliver.stamp = stamp;
  deliver.topic = topic;
  deliver.body = body;
  const bool sequenced = (flags & mesh::kFlagSequenced) != 0 && who != To::kNobody;
  if (sequenced) {
    if (Peer* owner = RemoteOwner(topic)) {
      // Another node sequences this topic: it gets the publish, and the
      // origin's ack waits for its sequenced delivery to come back and be
      // consumed here (Pending::then).
      pending.remaining = 1;
      Forwarded& f = forwarded_[{link.instance, seq}];
      f = Forwarded{.origin = id,
                    .tag = tag,
                    .flags = deliver.flags,
                    .stamp = stamp,
                    .topic = std::string(topic),
                    .body = std::string(body),
                    .owner = owner->name};
      SendToOwner(*owner, link.instance, seq, f);
      return;
    }
    HistoryStore::Position p =
        history_.Sequence(topic, link.instance, seq, deliver.flags, stamp, body, now_us);
    deliver.offset = p.offset;
    deliver.stream = p.stream;
  }
  Payload payload;
  std::vector<LinkId>& to = recipients_;
  to.clear();
  if (who != To::kNobody) interests_.Route(who == To::kAll ? kNoLink : id, topic, &to);
  if (!peers_.empty() && !to.empty()) {
    // Each interested peer node gets it once, in its outbox now: the
    // publisher's ack does not wait for the other node. A sequenced one too:
    // this node owns the topic, and the others keep copies of its stream.
    std::string packed;
    auto is_peer = [&](LinkId r) {
      Peer* peer = FindPeer(r);
      if (peer == nullptr) return false;
      // A node with no name (a mesh without ownership, only in tests) keeps
      // its history to itself.
      if (!sequenced || !options_.node.empty()) {
        if (packed.empty()) packed = mesh::Pack(deliver);
        PushToPeer(*peer, packed);
      }
      return true;
    };
    to.erase(std::remove_if(to.begin(), to.end(), is_peer), to.end());
  }
  if (sequenced && std::find(to.begin(), to.end(), id) == to.end()) to.push_back(id);
  pending.remaining = static_cast<uint32_t>(to.size());
  if (to.empty()) {
    link.ack_due = true;
    return;
  }
  payload = std::make_shared<const std::string>(mesh::Pack(deliver));
  counters_.routed += to.size();
  // Recipients may be removed below (disconnect policy), the origin too
  // when it is one: `link` is not used after this.
  for (LinkId r : to) {
    if (Link* rl = Find(r)) Enqueue(r, *rl, payload, tag, now_us);
  }
}

void Router::OnCredit(Link& link, uint32_t n) {
  link.queue.Grant(n);
  size_t consumed = std::min<size_t>(n, link.in_flight.size());
  for (size_t i = 0; i < consumed; ++i) {
    Settle(link.in_flight.front().tag);
    link.in_flight.pop_front();
  }
}

void Router::OnPresence(LinkId id, const mesh::Message& msg, int64_t now_us) {
  Result<mesh::PresenceChange> change = mesh::DecodePresenceChange(msg.body);
  if (!change.ok()) {
    ++counters_.refused[Index(Refused::kBadFrame)];
    return;
  }
  Result<std::optional<PresenceDelta>> diff =
      presence_.ApplyDiff(id, msg.topic, ToMetas(change->joins), ToMetas(change->leaves));
  if (!diff.ok()) {
    ++counters_.refused[Index(Refused::kBadPresence)];
    return;
  }
  if (!diff.value()) return;
  SendDiff(id, msg.topic, *diff.value(), now_us);
  // The change itself goes to the peers that want the topic: each applies
  // it to this node's metas as it would a shard's.
  if (peers_.empty()) return;
  std::string packed;
  for (auto& [name, peer] : peers_) {
    if (!interests_.IsSubscribed(peer->id, msg.topic)) continue;
    if (packed.empty()) packed = mesh::Pack(msg);
    PushToPeer(*peer, packed);
  }
}

void Router::OnFetch(LinkId id, Link& link, const mesh::Message& msg, int64_t now_us) {
  if (Settling(now_us)) {
    // The restates have not all come: the position is not known yet.
    held_fetches_.push_back(HeldFetch{id, msg.id, std::string(msg.topic), msg.offset, msg.n});
    return;
  }
  ReleaseHeld(now_us);
  FetchOrForward(id, link, msg.id, msg.topic, msg.offset, msg.n, now_us);
}

void Router::FetchOrForward(LinkId to, Link& link, uint64_t request, std::string_view topic,
                            uint64_t after, uint32_t limit, int64_t now_us) {
  Peer* owner = RemoteOwner(topic);
  if (owner == nullptr) return AnswerFetch(to, link, request, topic, after, limit, now_us);
  // The owner holds the stream; this node's copy may lack its position (a
  // topic nobody here subscribed) or messages (sent before anyone here was
  // interested). Its answer is merged into the copy, which then answers.
  const uint64_t id = next_remote_fetch_++;
  remote_fetches_[id] = RemoteFetch{.from = to,
                                    .request = request,
                                    .topic = std::string(topic),
                                    .after = after,
                                    .limit = limit,
                                    .owner = owner->name};
  mesh::Message f;
  f.type = mesh::Type::kFetch;
  f.id = id;
  f.offset = after;
  f.n = limit;
  f.topic = topic;
  ++counters_.fetches_forwarded;
  PushToPeer(*owner, mesh::Pack(f));
}

void Router::AnswerFetch(LinkId to, Link& link, uint64_t request, std::string_view topic,
                         uint64_t after, uint32_t limit, int64_t now_us) {
  // Queued like a delivery, under the shard's credit, behind the deliveries
  // already queued for it: data, not control.
  Enqueue(to, link,
          std::make_shared<const std::string>(HistoryAnswer(request, topic, after, limit, now_us)),
          kHistoryTag, now_us);
}

std::string Router::HistoryAnswer(uint64_t request, std::string_view topic, uint64_t after,
                                  uint32_t limit, int64_t now_us) {
  // Each message is a u32 length and a packed kDeliver (three frames: a
  // header of at most kMaxHeaderBytes, the topic, the body), as in a kBatch.
  const size_t overhead = 4 + 3 * 4 + mesh::kMaxHeaderBytes + topic.size();
  HistoryStore::Answer a =
      history_.Fetch(topic, after, limit, mesh::kMaxBodyBytes, overhead, now_us);
  std::string body;
  mesh::Message d;
  d.type = mesh::Type::kDeliver;
  d.topic = topic;
  d.stream = a.stream;
  for (const HistoryStore::Entry* e : a.messages) {
    d.origin = e->origin;
    d.seq = e->seq;
    d.flags = e->flags | mesh::kFlagSequenced;
    d.stamp = e->stamp;
    d.offset = e->offset;
    d.body = e->body;
    const std::string packed = mesh::Pack(d);
    // Only a message of nearly kMaxBodyBytes alone can overflow: it is not
    // sent, and the shard counts what it cannot fetch as a gap.
    if (body.size() + 4 + packed.size() > mesh::kMaxBodyBytes) break;
    const uint32_t n = static_cast<uint32_t>(packed.size());
    for (int i = 0; i < 4; ++i) body.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
    body.append(packed);
  }
  mesh::Message h;
  h.type = mesh::Type::kHistory;
  h.id = request;
  h.stream = a.stream;
  h.top = a.top;
  h.first = a.first;
  h.topic = topic;
  h.body = body;
  return mesh::Pack(h);
}

void Router::OnRestate(Link& link, const mesh::Message& msg, int64_t now_us) {
  history_.Restate(msg.topic, msg.stream,
                   HistoryStore::Entry{.offset = msg.offset,
                                       .origin = msg.origin,
                                       .seq = msg.seq,
                                       .flags = static_cast<uint8_t>(msg.flags & ~mesh::kFlagKeyed),
                                       .stamp = msg.stamp,
                                       .body = std::string(msg.body)},
                   now_us);
  if (link.restates_due > 0 && --link.restates_due == 0) settle_.OnRestated(link.shard, now_us);
}

void Router::ForEachRecipient(LinkId origin, std::string_view topic,
                              const std::function<void(LinkId, Link&)>& fn) {
  std::vector<LinkId> to;
  interests_.Route(origin, topic, &to);
  for (LinkId r : to) {
    if (Link* rl = Find(r)) fn(r, *rl);
  }
}

void Router::SendDiffs(LinkId origin, const std::vector<TopicDiff>& diffs, int64_t now_us) {
  for (const TopicDiff& d : diffs) SendDiff(origin, d.topic, d.delta, now_us);
}

void Router::SendDiff(LinkId origin, std::string_view topic, const PresenceDelta& delta,
                      int64_t now_us) {
  ForEachRecipient(origin, topic, [&](LinkId, Link& rl) {
    ++counters_.presence_changes;
    rl.presence.Add(topic, delta, now_us);
  });
}

void Router::ReleasePresence(LinkId id, Link& link, int64_t now_us) {
  if (link.presence.empty()) return;
  const size_t backlog = link.queue.depth_messages() + link.in_flight.size();
  const bool caught_up = backlog <= options_.presence_room;
  const bool waited = now_us - link.presence.oldest_us() >= options_.presence_wait_ms * 1000 &&
                      link.queue.depth_messages() < options_.queue.max_messages / 8;
  if (!caught_up && !waited) return;
  if (options_.presence_interval_ms > 0 &&
      now_us - link.presence_released_us < options_.presence_interval_ms * 1000) {
    return;
  }
  link.presence_released_us = now_us;
  // Each diff is what this shard is owed, merged, so it is packed for it
  // alone; a shard that keeps up gets a turn's changes of a topic in one
  // message, which it fans out as one presence_diff.
  mesh::Message m;
  m.type = mesh::Type::kDiff;
  for (const TopicDiff& d : link.presence.Take()) {
    // Enqueue may drop the link (the disconnect policy): the rest then has
    // nobody to go to.
    Link* to = Find(id);
    if (to == nullptr) return;
    const std::string json = DiffJson(d.delta);
    m.topic = d.topic;
    m.body = json;
    ++counters_.diffs;
    Enqueue(id, *to, std::make_shared<const std::string>(mesh::Pack(m)), kPresenceTag, now_us);
  }
}

void Router::SendSnapshot(LinkId to, Link& link, std::string_view topic, int64_t now_us) {
  // The snapshot says all of it: nothing owed on the topic is sent after.
  link.presence.Drop(topic);
  std::string state = presence_.StateJson(topic, to);
  mesh::Message m;
  m.type = mesh::Type::kSnapshot;
  m.topic = topic;
  m.body = state;
  ++counters_.snapshots;
  Enqueue(to, link, std::make_shared<const std::string>(mesh::Pack(m)), kPresenceTag, now_us);
}

void Router::Enqueue(LinkId to, Link& link, const Payload& payload, uint64_t tag, int64_t now_us) {
  if (payload->size() > options_.max_packed_bytes) {
    // Not marked for a presence repair: the repair would be as large.
    ++counters_.dropped[Index(DropReason::kTooLarge)];
    return Settle(tag);
  }
  std::vector<QueuedMessage> dropped;
  PushResult r = link.queue.Push(
      QueuedMessage{
          .payload = payload, .bytes = payload->size(), .enqueued_us = now_us, .tag = tag},
      &dropped);
  switch (r.outcome) {
    case PushOutcome::kQueued:
      return;
    case PushOutcome::kShed:
      return Dropped(&link, dropped, DropReason::kShed);
    case PushOutcome::kTooLarge:
      return Dropped(&link, dropped, DropReason::kTooLarge);
    case PushOutcome::kDisconnect: {
      Dropped(nullptr, dropped, DropReason::kDisconnect);
      ++counters_.disconnected;
      // The shard is alive but too slow: it learns it was dropped and
      // starts over with a hello (and snapshots) when it reads this.
      if (const std::string* rid = links_.RoutingId(to)) {
        SendControl(*rid, Control(mesh::Type::kReset));
      }
      return RemoveLink(to, now_us);
    }
  }
}

void Router::Dropped(Link* link, std::vector<QueuedMessage>& dropped, DropReason reason) {
  counters_.dropped[Index(reason)] += dropped.size();
  for (const QueuedMessage& m : dropped) {
    if (m.tag == kPresenceTag && link != nullptr) link->presence_dirty = true;
    Settle(m.tag);
  }
}

void Router::Settle(uint64_t tag) {
  if (tag < kFirstPublishTag) return;
  auto it = pending_.find(tag);
  if (it == pending_.end()) return;  // its origin is gone
  if (it->second.remaining > 0 && --it->second.remaining == 0) {
    if (Link* origin = Find(it->second.origin)) {
      origin->ack_due = true;
    } else if (Peer* peer = FindPeer(it->second.origin)) {
      peer->in.Done(it->second.stream, it->second.seq);
      const uint64_t then = it->second.then;
      pending_.erase(it);
      // A forwarded publish's delivery came back and was consumed: the
      // origin's ack may go.
      if (then != 0) Settle(then);
    }
  }
}

void Router::RemoveLink(LinkId id, int64_t now_us, DropReason reason) {
  auto it = state_.find(id);
  if (it == state_.end()) return;
  std::unique_ptr<Link> link = std::move(it->second);
  state_.erase(it);
  by_instance_.erase(link->instance);
  members_dirty_ = true;
  links_.Detach(id);
  liveness_.Remove(id);
  for (const std::string& t : interests_.RemoveShard(id)) LocalInterestChanged(t);

  std::vector<QueuedMessage> queued = link->queue.Close();
  // In flight: sent, but never credited, so perhaps never delivered.
  for (QueuedMessage& m : link->in_flight) queued.push_back(std::move(m));
  link->in_flight.clear();
  Dropped(nullptr, queued, reason);
  // Its own publishes have nobody left to ack (one forwarded to its owner
  // still reaches the other shards when the owner's delivery comes back).
  for (uint64_t tag : link->publishes) pending_.erase(tag);
  std::erase_if(forwarded_, [id](const auto& f) { return f.second.origin == id; });
  std::erase_if(remote_fetches_, [id](const auto& f) { return f.second.from == id; });

  // One diff per topic with all of the shard's leaves, to the shards still
  // subscribed (this one no longer is).
  std::vector<TopicDiff> diffs = presence_.RemoveShard(id);
  for (const TopicDiff& d : diffs) LocalPresenceChanged(d.topic);
  SendDiffs(id, diffs, now_us);
}

void Router::OnTick(int64_t now_us) {
  int64_t now_ms = now_us / 1000;
  // Ticks come at least once per heartbeat interval (NextTickUs). One much
  // later than that means this broker did not run — a long turn, a machine
  // with more work than cores, a SIGSTOP — and what the shards sent
  // meanwhile waits unread: that silence is not theirs. Expiring them for
  // it would drop every link at once, and their hellos would restate the
  // whole node to a broker that is already behind.
  if (last_tick_ms_ != 0 && now_ms - last_tick_ms_ > 2 * options_.liveness.interval_ms) {
    liveness_.Forgive(now_ms - last_tick_ms_ - options_.liveness.interval_ms);
  }
  last_tick_ms_ = now_ms;
  history_.Expire(now_us);
  // A member not heard from within as long as a link takes to be called
  // silent is not counted up for history ownership any more.
  const int64_t grace_us = int64_t{options_.liveness.interval_ms} * options_.liveness.misses * 1000;
  for (auto& [name, peer] : peers_) {
    if (peer->heard || !peer->counted) continue;
    if (peer->since_us < 0) {
      peer->since_us = now_us;
    } else if (now_us - peer->since_us >= grace_us) {
      peer->counted = false;
      RecomputeOwners();
    }
  }
  // A window that reaches its bound ends here, even with nothing arriving
  // (Flush then releases what it held and announces the members).
  if (settle_.end() == SettleEnd::kNotYet && !Settling(now_us)) members_dirty_ = true;
  if (liveness_.NextHeartbeatDue(now_ms) <= now_ms) {
    mesh::Message hb = Control(mesh::Type::kHeartbeat);
    hb.epoch = options_.epoch;
    for (const auto& [id, link] : state_) {
      if (const std::string* rid = links_.RoutingId(id)) (void)sender_->Send(*rid, hb);
    }
    liveness_.OnHeartbeatSent(now_ms);
  }
  for (LinkId id : liveness_.Expired(now_ms)) {
    ++counters_.expired;
    RemoveLink(id, now_us, DropReason::kExpired);
  }
}

int64_t Router::NextTickUs(int64_t now_us) const {
  int64_t now_ms = now_us / 1000;
  int64_t next = liveness_.NextHeartbeatDue(now_ms);
  if (auto expiry = liveness_.NextExpiry()) next = std::min(next, *expiry);
  return next * 1000;
}

void Router::Flush(int64_t now_us, std::vector<int64_t>* delays_us) {
  const bool was_settling = settle_.end() == SettleEnd::kNotYet;
  ReleaseHeld(now_us);
  const bool settling = Settling(now_us);
  if (was_settling && !settling) members_dirty_ = true;
  if (members_dirty_) AnnounceMembers();
  if (retarget_due_ && !settling) Retarget(now_us);
  if (!peers_.empty()) FlushPeers(settling);
  std::vector<LinkId> ids;
  ids.reserve(state_.size());
  for (const auto& [id, link] : state_) ids.push_back(id);
  for (LinkId id : ids) {
    Link* link = Find(id);
    if (link == nullptr) continue;
    ReleasePresence(id, *link, now_us);
    if ((link = Find(id)) == nullptr) continue;
    SendWhatCreditAllows(id, *link, now_us, delays_us);
    // Shed presence is repaired once everything before the repair has gone:
    // snapshots of every topic, behind what the shard already has.
    if (link->presence_dirty && !settling && link->queue.depth_messages() == 0) {
      link->presence_dirty = false;
      for (const std::string& topic : interests_.TopicsOf(id)) {
        link = Find(id);
        if (link == nullptr) break;
        SendSnapshot(id, *link, topic, now_us);
      }
      if ((link = Find(id)) != nullptr) SendWhatCreditAllows(id, *link, now_us, delays_us);
    }
  }
  for (auto& [id, link] : state_) {
    if (!link->ack_due) continue;
    link->ack_due = false;
    while (!link->publishes.empty()) {
      auto p = pending_.find(link->publishes.front());
      if (p != pending_.end() && p->second.remaining > 0) break;
      if (p != pending_.end()) {
        link->done_seq = p->second.seq;
        pending_.erase(p);
      }
      link->publishes.pop_front();
    }
    if (link->done_seq == 0) continue;
    mesh::Message ack = Control(mesh::Type::kAck);
    ack.seq = link->done_seq;
    SendControl(*links_.RoutingId(id), ack);
    ++counters_.acks;
  }
}

void Router::AnnounceMembers() {
  members_dirty_ = false;
  std::vector<std::string> now;
  now.reserve(state_.size() + settle_.missing().size());
  for (const auto& [id, link] : state_) {
    // A name no member list may carry (a hello's is not bounded) is left out.
    if (!link->shard.empty() && link->shard.size() <= mesh::kMaxShardNameBytes) {
      now.push_back(link->shard);
    }
  }
  // While settling, the shards still expected are members too: a broker
  // killed before they said hello leaves their names with the shards, and
  // the next broker waits for them as well.
  now.insert(now.end(), settle_.missing().begin(), settle_.missing().end());
  std::sort(now.begin(), now.end());
  now.erase(std::unique(now.begin(), now.end()), now.end());
  if (now.size() > mesh::kMaxMembers) now.resize(mesh::kMaxMembers);
  const bool changed = now != members_;
  members_ = std::move(now);
  std::string body;
  mesh::Message m = Control(mesh::Type::kMembers);
  for (const auto& [id, link] : state_) {
    if (!changed && !link->members_due) continue;
    link->members_due = false;
    if (body.empty()) body = mesh::EncodeMembers(members_);
    m.body = body;
    SendControl(*links_.RoutingId(id), m);
    ++counters_.members_sent;
  }
}

void Router::SendWhatCreditAllows(LinkId id, Link& link, int64_t now_us,
                                  std::vector<int64_t>* delays_us) {
  if (link.queue.credit() == 0 || link.queue.depth_messages() == 0) return;
  scratch_.clear();
  link.queue.PopSendable(&scratch_);
  const std::string& rid = *links_.RoutingId(id);
  // One message goes as it is; more go in batches (one libzmq message each).
  // `handed` counts those handed over; a send that fails stops the rest.
  size_t handed = 0;
  bool failed = false;
  for (size_t i = 0; i < scratch_.size() && !failed; ++i) {
    if (scratch_.size() == 1) {
      failed = !sender_->SendPacked(rid, *scratch_[i].payload);
    } else {
      batch_.Add(*scratch_[i].payload);
      if (!batch_.full()) continue;
      failed = !sender_->SendPacked(rid, batch_.Finish());
    }
    if (!failed) handed = i + 1;
  }
  if (!failed && batch_.count() > 0) {
    failed = !sender_->SendPacked(rid, batch_.Finish());
    if (!failed) handed = scratch_.size();
  }
  for (size_t i = 0; i < handed; ++i) {
    QueuedMessage& m = scratch_[i];
    if (m.tag >= kFirstPublishTag) ++counters_.delivered;
    if (delays_us != nullptr) delays_us->push_back(now_us - m.enqueued_us);
    link.in_flight.push_back(std::move(m));
  }
  if (handed < scratch_.size()) {
    // The connection is gone (the ROUTER's send queue is unbounded, so a
    // send fails for no other reason, and a reconnect gets a new routing
    // id). The rest is not in flight: it waits, first in the queue, for the
    // shard's reconnect (a rebind grants a new window) or the link's expiry;
    // no credit is left, so nothing is tried on the dead connection again.
    counters_.send_failed += scratch_.size() - handed;
    link.queue.ResetCredit(0);
    link.queue.Requeue(
        std::vector<QueuedMessage>(std::make_move_iterator(scratch_.begin() + handed),
                                   std::make_move_iterator(scratch_.end())));
  }
  scratch_.clear();
}

void Router::ForEachLink(const std::function<void(const LinkView&)>& fn) const {
  for (const auto& [id, link] : state_) {
    fn(LinkView{id, link->shard, link->instance, link->queue, link->in_flight.size(),
                link->presence});
  }
}

// --- Peer nodes ------------------------------------------------------------

Router::Peer* Router::FindPeer(std::string_view name) {
  auto it = peers_.find(name);
  return it == peers_.end() ? nullptr : it->second.get();
}

Router::Peer* Router::FindPeer(LinkId id) {
  auto it = peer_ids_.find(id);
  return it == peer_ids_.end() ? nullptr : it->second;
}

LinkId Router::PeerId(std::string_view name) const {
  auto it = peers_.find(name);
  return it == peers_.end() ? kNoLink : it->second->id;
}

void Router::AddPeer(const std::string& name) {
  if (peers_.contains(name)) return;
  if (peers_.empty()) {
    // Local interest is tracked only while there is a peer to tell (a node
    // alone pays nothing for it): the first one starts it from the table.
    local_topics_.clear();
    interests_.ForEachTopic([this](std::string_view topic, const std::vector<LinkId>& links) {
      if (!links.empty()) local_topics_.emplace(topic);
    });
  }
  auto peer = std::make_unique<Peer>(options_.peer_outbox);
  peer->name = name;
  peer->stream = options_.epoch + peer_additions_[name]++;
  if (peer->stream == 0) peer->stream = 1;  // 0 on the wire: no stream
  peer->id = links_.Reserve();
  peer->interest_due = true;
  peer_ids_[peer->id] = peer.get();
  peers_[name] = std::move(peer);
  RecomputeOwners();
}

uint64_t Router::PeerStream(std::string_view name) const {
  auto it = peers_.find(name);
  return it == peers_.end() ? options_.epoch : it->second->stream;
}

void Router::RemovePeer(const std::string& name, int64_t now_us) {
  auto it = peers_.find(name);
  if (it == peers_.end()) return;
  const LinkId id = it->second->id;
  peer_ids_.erase(id);
  peers_.erase(it);
  // Its broadcasts still queued for local shards settle nothing now; a
  // sequenced delivery of a publish of this node's still settles that
  // publish (its recipients are this node's shards).
  std::vector<uint64_t> thens;
  std::erase_if(pending_, [id, &thens](const auto& p) {
    if (p.second.origin != id) return false;
    if (p.second.then != 0) thens.push_back(p.second.then);
    return true;
  });
  interests_.RemoveShard(id);
  SendDiffs(id, presence_.RemoveShard(id), now_us);
  for (uint64_t then : thens) Settle(then);
  RecomputeOwners();
}

void Router::OnPeerUp(const std::string& name, uint64_t expected, bool batches) {
  Peer* peer = FindPeer(name);
  if (peer == nullptr) return;
  peer->up = true;
  peer->batches = batches;
  peer->out.Resume(expected);
  // The peer may be a new broker that knows nothing of this node's interest,
  // or one that missed changes the outbox dropped: it replaces what it holds.
  peer->interest_due = true;
}

void Router::OnPeerDown(const std::string& name) {
  if (Peer* peer = FindPeer(name)) {
    peer->up = false;
    peer->out.Pause();
  }
}

uint64_t Router::OnPeerHello(const std::string& name, uint64_t stream, int64_t /*now_us*/) {
  Peer* peer = FindPeer(name);
  if (peer == nullptr) return 0;
  bool new_stream = false;
  const uint64_t expected = peer->in.OnHello(stream, &new_stream);
  // Its metas were dropped (its link in went silent), or it is a new broker
  // that may not know what this node wants: this node's interest snapshot
  // makes it answer with a presence snapshot per topic. The metas it held
  // stay until then: the snapshots are diffed against them, so nobody sees
  // a presence leave and join again.
  if (new_stream || peer->presence_lost) peer->interest_due = true;
  peer->presence_lost = false;
  peer->counted = true;
  peer->heard = true;
  RecomputeOwners();
  return expected;
}

void Router::OnPeerInboundDown(const std::string& name, int64_t now_us) {
  Peer* peer = FindPeer(name);
  if (peer == nullptr) return;
  peer->presence_lost = true;
  SendDiffs(peer->id, presence_.RemoveShard(peer->id), now_us);
  peer->counted = false;
  RecomputeOwners();
}

void Router::OnPeerAck(const std::string& name, uint64_t seq) {
  if (Peer* peer = FindPeer(name)) peer->out.Ack(seq);
}

void Router::OnPeerData(const std::string& name, uint64_t seq, std::string_view packed,
                        int64_t now_us) {
  Peer* peer = FindPeer(name);
  if (peer == nullptr || seq == 0) {
    ++counters_.peer_refused;
    return;
  }
  if (Settling(now_us) || !held_peer_.empty()) {
    // A new broker: the shards that have not said hello yet would miss it.
    held_peer_.push_back(HeldPeerData{name, peer->in.stream(), seq, std::string(packed)});
    return;
  }
  HandlePeerData(*peer, seq, packed, now_us);
}

void Router::HandlePeerData(Peer& peer, uint64_t seq, std::string_view packed, int64_t now_us) {
  if (peer.in.OnData(seq) == PeerInbox::Verdict::kDuplicate) return;
  ++peer.routed_in;
  // Everything but a broadcast is done once handled (or refused: one bad
  // message must not hold back the acks of the stream).
  if (!HandlePeerMessage(peer, seq, packed, now_us)) peer.in.Done(peer.in.stream(), seq);
}

bool Router::HandlePeerMessage(Peer& peer, uint64_t seq, std::string_view packed, int64_t now_us) {
  std::vector<std::string_view> frames;
  mesh::Message msg;
  if (!mesh::Unpack(packed, &frames).ok() || !mesh::Decode(frames, &msg).ok()) {
    ++counters_.peer_refused;
    return false;
  }
  switch (msg.type) {
    case mesh::Type::kPeerInterest: {
      Result<std::vector<std::string>> topics = mesh::DecodePeerInterest(msg.body);
      if (!topics.ok()) {
        ++counters_.peer_refused;
        return false;
      }
      interests_.ReplaceShard(peer.id, topics.value());
      // In answer: this node's metas on each, replacing what the peer holds.
      for (const std::string& t : topics.value()) peer.presence_due.insert(t);
      return false;
    }
    case mesh::Type::kSubscribe:
      interests_.Subscribe(peer.id, msg.topic);
      peer.presence_due.insert(std::string(msg.topic));
      return false;
    case mesh::Type::kUnsubscribe:
      interests_.Unsubscribe(peer.id, msg.topic);
      return false;
    case mesh::Type::kDeliver:
      return DeliverFromPeer(peer, seq, msg, packed, now_us);
    case mesh::Type::kPeerSequence:
      return SequenceForPeer(peer, seq, msg, now_us);
    case mesh::Type::kFetch: {
      // Another node's shard asks; this node owns the topic (or the asker
      // thinks so: what it holds answers either way).
      PushToPeer(peer, HistoryAnswer(msg.id, msg.topic, msg.offset, msg.n, now_us));
      return false;
    }
    case mesh::Type::kHistory:
      OnPeerHistory(msg, now_us);
      return false;
    case mesh::Type::kPresence:
    case mesh::Type::kPeerPresence: {
      Result<mesh::PresenceChange> change = mesh::DecodePresenceChange(msg.body);
      if (!change.ok()) {
        ++counters_.peer_refused;
        return false;
      }
      Result<std::optional<PresenceDelta>> diff =
          msg.type == mesh::Type::kPresence
              ? presence_.ApplyDiff(peer.id, msg.topic, ToMetas(change->joins),
                                    ToMetas(change->leaves))
              : presence_.ReplaceTopic(peer.id, msg.topic, ToMetas(change->joins));
      if (!diff.ok()) {
        ++counters_.refused[Index(Refused::kBadPresence)];
        return false;
      }
      // To this node's shards only (SendDiff never reaches a peer).
      if (diff.value()) SendDiff(peer.id, msg.topic, *diff.value(), now_us);
      return false;
    }
    default:
      ++counters_.peer_refused;
      return false;
  }
}

bool Router::DeliverFromPeer(Peer& peer, uint64_t seq, const mesh::Message& msg,
                             std::string_view packed, int64_t now_us) {
  if ((msg.flags & mesh::kFlagSequenced) != 0) {
    return DeliverSequencedFromPeer(peer, seq, msg, packed, now_us);
  }
  std::vector<LinkId>& to = recipients_;
  to.clear();
  interests_.Route(peer.id, msg.topic, &to);
  // One hop: local shards only, never another peer.
  to.erase(std::remove_if(to.begin(), to.end(), [this](LinkId r) { return Find(r) == nullptr; }),
           to.end());
  if (to.empty()) return false;
  // Done (and acked to the peer) once every recipient consumed it: a broker
  // that dies first leaves it unacked, and the peer sends it again.
  const uint64_t tag = next_tag_++;
  pending_[tag] = Pending{.origin = peer.id,
                          .seq = seq,
                          .remaining = static_cast<uint32_t>(to.size()),
                          .stream = peer.in.stream()};
  // `to` is recipients_: copied, since Enqueue may remove links (and a
  // removal sends diffs, which do not route, but stay safe).
  EnqueueEach(to, std::make_shared<const std::string>(packed), tag, now_us);
  return true;
}

void Router::EnqueueEach(std::vector<LinkId> to, const Payload& payload, uint64_t tag,
                         int64_t now_us) {
  counters_.routed += to.size();
  for (LinkId r : to) {
    if (Link* rl = Find(r)) {
      Enqueue(r, *rl, payload, tag, now_us);
    } else {
      Settle(tag);
    }
  }
}

// --- History across nodes (docs/CLUSTER.md) --------------------------------

std::string_view Router::OwnerOf(std::string_view topic) const {
  if (owner_nodes_.size() <= 1) return options_.node;
  return TopicOwner(owner_nodes_, topic);
}

Router::Peer* Router::RemoteOwner(std::string_view topic) {
  if (options_.node.empty() || owner_nodes_.size() <= 1) return nullptr;
  const std::string_view owner = OwnerOf(topic);
  if (owner == options_.node) return nullptr;
  return FindPeer(owner);
}

void Router::SendToOwner(Peer& owner, uint64_t instance, uint64_t seq, const Forwarded& f) {
  mesh::Message m;
  m.type = mesh::Type::kPeerSequence;
  m.origin = instance;
  m.seq = seq;
  m.flags = f.flags;
  m.stamp = f.stamp;
  m.topic = f.topic;
  m.body = f.body;
  ++counters_.sequence_forwarded;
  PushToPeer(owner, mesh::Pack(m));
}

void Router::RecomputeOwners() {
  if (options_.node.empty()) return;
  std::vector<std::string> now = {options_.node};
  for (const auto& [name, peer] : peers_) {
    if (peer->counted) now.push_back(name);
  }
  std::sort(now.begin(), now.end());
  if (now == owner_nodes_) return;
  owner_nodes_ = std::move(now);
  ++counters_.owner_set_changes;
  retarget_due_ = true;
}

void Router::Retarget(int64_t now_us) {
  retarget_due_ = false;
  // What waits on a node that no longer owns its topic goes to the owner
  // now. The old owner may have sequenced it already (its answer lost with
  // the link): the new owner's epoch is new in any case, so a client sees
  // it at most once per epoch.
  for (auto it = forwarded_.begin(); it != forwarded_.end();) {
    Forwarded& f = it->second;
    const std::string_view owner = OwnerOf(f.topic);
    if (owner == f.owner) {
      ++it;
      continue;
    }
    if (Peer* peer = RemoteOwner(f.topic)) {
      f.owner = peer->name;
      SendToOwner(*peer, it->first.first, it->first.second, f);
      ++it;
      continue;
    }
    // This node owns it now: sequenced here, as if it had just come. The
    // pending id stays the origin's (its ack waits on it).
    Link* origin = Find(f.origin);
    auto p = pending_.find(f.tag);
    if (origin == nullptr || p == pending_.end()) {
      it = forwarded_.erase(it);
      continue;
    }
    std::string packed;
    std::vector<LinkId> local = SequenceHere(it->first.first, it->first.second, f.flags, f.stamp,
                                             f.topic, f.body, nullptr, &packed, now_us);
    if (std::find(local.begin(), local.end(), f.origin) == local.end()) local.push_back(f.origin);
    const uint64_t tag = f.tag;
    it = forwarded_.erase(it);
    p->second.remaining = static_cast<uint32_t>(local.size());
    EnqueueEach(std::move(local), std::make_shared<const std::string>(packed), tag, now_us);
  }
  // Fetches waiting on a node that is no longer the owner: asked again.
  std::vector<RemoteFetch> again;
  for (auto it = remote_fetches_.begin(); it != remote_fetches_.end();) {
    if (OwnerOf(it->second.topic) != it->second.owner) {
      again.push_back(std::move(it->second));
      it = remote_fetches_.erase(it);
    } else {
      ++it;
    }
  }
  for (const RemoteFetch& f : again) {
    if (Link* from = Find(f.from)) {
      FetchOrForward(f.from, *from, f.request, f.topic, f.after, f.limit, now_us);
    }
  }
}

bool Router::SequenceForPeer(Peer& peer, uint64_t seq, const mesh::Message& msg, int64_t now_us) {
  if ((msg.flags & mesh::kFlagSequenced) == 0) {
    ++counters_.peer_refused;
    return false;
  }
  ++counters_.sequenced_for_peers;
  // A resend (the asker's broker restarted, or the asker's link did) keeps
  // the offset it was given: the store knows the publish by origin and seq.
  // The asking node gets it, interested or not: its origin shard learns the
  // offset.
  std::string packed;
  std::vector<LinkId> local = SequenceHere(msg.origin, msg.seq, msg.flags, msg.stamp, msg.topic,
                                           msg.body, &peer, &packed, now_us);
  if (local.empty()) return false;
  const uint64_t tag = next_tag_++;
  pending_[tag] = Pending{.origin = peer.id,
                          .seq = seq,
                          .remaining = static_cast<uint32_t>(local.size()),
                          .stream = peer.in.stream()};
  EnqueueEach(std::move(local), std::make_shared<const std::string>(packed), tag, now_us);
  return true;
}

std::vector<LinkId> Router::SequenceHere(uint64_t origin, uint64_t seq, uint8_t flags,
                                         uint64_t stamp, std::string_view topic,
                                         std::string_view body, Peer* also, std::string* packed,
                                         int64_t now_us) {
  mesh::Message d;
  d.type = mesh::Type::kDeliver;
  d.origin = origin;
  d.seq = seq;
  d.flags = flags;
  d.stamp = stamp;
  d.topic = topic;
  d.body = body;
  const HistoryStore::Position pos =
      history_.Sequence(topic, origin, seq, flags, stamp, body, now_us);
  d.offset = pos.offset;
  d.stream = pos.stream;
  *packed = mesh::Pack(d);
  std::vector<LinkId> to;
  interests_.Route(kNoLink, topic, &to);
  std::vector<LinkId> local;
  bool also_sent = false;
  for (LinkId r : to) {
    if (Peer* p = FindPeer(r)) {
      also_sent = also_sent || p == also;
      PushToPeer(*p, *packed);
    } else if (Find(r) != nullptr) {
      local.push_back(r);
    }
  }
  if (also != nullptr && !also_sent) PushToPeer(*also, *packed);
  return local;
}

bool Router::DeliverSequencedFromPeer(Peer& peer, uint64_t seq, const mesh::Message& msg,
                                      std::string_view packed, int64_t now_us) {
  if (options_.node.empty()) {
    ++counters_.peer_refused;  // no ownership without node names: history stays on its node
    return false;
  }
  if (OwnerOf(msg.topic) != peer.name) {
    // Not the owner's stream as this broker counts: what the other side of
    // a partition sequenced meanwhile (its outbox sent on heal), or an owner
    // since replaced. Taken, it would replace the owner's stream with one
    // that ended; its clients learn that by their next join.
    ++counters_.sequenced_not_owner;
    return false;
  }
  history_.Accept(msg.topic, msg.stream,
                  HistoryStore::Entry{.offset = msg.offset,
                                      .origin = msg.origin,
                                      .seq = msg.seq,
                                      .flags = msg.flags,
                                      .stamp = msg.stamp,
                                      .body = std::string(msg.body)},
                  now_us);
  std::vector<LinkId> to;
  interests_.Route(peer.id, msg.topic, &to);
  std::erase_if(to, [this](LinkId r) { return Find(r) == nullptr; });
  // One of this node's shards sent it: it gets it back (subscribed or not)
  // and its ack waits for every local recipient.
  uint64_t then = 0;
  if (auto f = forwarded_.find({msg.origin, msg.seq}); f != forwarded_.end()) {
    then = f->second.tag;
    if (Find(f->second.origin) != nullptr &&
        std::find(to.begin(), to.end(), f->second.origin) == to.end()) {
      to.push_back(f->second.origin);
    }
    forwarded_.erase(f);
  }
  if (to.empty()) {
    Settle(then);
    return false;
  }
  const uint64_t tag = next_tag_++;
  pending_[tag] = Pending{.origin = peer.id,
                          .seq = seq,
                          .remaining = static_cast<uint32_t>(to.size()),
                          .stream = peer.in.stream(),
                          .then = then};
  EnqueueEach(std::move(to), std::make_shared<const std::string>(packed), tag, now_us);
  return true;
}

void Router::OnPeerHistory(const mesh::Message& msg, int64_t now_us) {
  auto it = remote_fetches_.find(msg.id);
  if (it == remote_fetches_.end()) return;  // asked again elsewhere, or its shard is gone
  RemoteFetch f = std::move(it->second);
  remote_fetches_.erase(it);
  history_.AcceptPosition(msg.topic, msg.stream, msg.top);
  Status s = mesh::ForEachInBatch(msg.body, [&](std::span<const std::string_view> frames) {
    mesh::Message d;
    if (!mesh::Decode(frames, &d).ok() || d.type != mesh::Type::kDeliver || d.offset == 0) {
      ++counters_.peer_refused;
      return;
    }
    history_.Accept(msg.topic, msg.stream,
                    HistoryStore::Entry{.offset = d.offset,
                                        .origin = d.origin,
                                        .seq = d.seq,
                                        .flags = d.flags,
                                        .stamp = d.stamp,
                                        .body = std::string(d.body)},
                    now_us);
  });
  if (!s.ok()) ++counters_.peer_refused;
  if (Link* from = Find(f.from)) {
    AnswerFetch(f.from, *from, f.request, f.topic, f.after, f.limit, now_us);
  }
}

void Router::PushToPeer(Peer& peer, std::string packed) {
  // The oldest go first past the bound; the peer's picture of this node's
  // interest and presence may have lost a change with them: both are sent
  // whole again once the link can take them.
  if (peer.out.Push(std::move(packed)) > 0) peer.resync = true;
}

void Router::LocalInterestChanged(std::string_view topic) {
  if (peers_.empty()) return;  // nobody to tell (AddPeer catches up)
  bool local = false;
  if (const std::vector<LinkId>* links = interests_.Interested(topic)) {
    for (LinkId l : *links) {
      if (!peer_ids_.contains(l)) {
        local = true;
        break;
      }
    }
  }
  auto it = local_topics_.find(topic);
  if (local == (it != local_topics_.end())) return;
  if (local) {
    local_topics_.emplace(topic);
  } else {
    local_topics_.erase(it);
  }
  mesh::Message m;
  m.type = local ? mesh::Type::kSubscribe : mesh::Type::kUnsubscribe;
  m.topic = topic;
  const std::string packed = mesh::Pack(m);
  for (auto& [name, peer] : peers_) PushToPeer(*peer, packed);
}

void Router::LocalPresenceChanged(std::string_view topic) {
  for (auto& [name, peer] : peers_) {
    if (interests_.IsSubscribed(peer->id, topic)) peer->presence_due.emplace(topic);
  }
}

void Router::FlushPeers(bool settling) {
  for (auto& [name, p] : peers_) {
    Peer& peer = *p;
    // While settling, this node's picture is not whole yet (its shards are
    // still saying hello): snapshots of it wait.
    if (!settling) {
      if (peer.resync && peer.up && peer.out.messages() < options_.peer_outbox.max_messages / 2) {
        peer.resync = false;
        peer.interest_due = true;
        for (const std::string& t : interests_.TopicsOf(peer.id)) peer.presence_due.insert(t);
      }
      if (peer.interest_due) {
        peer.interest_due = false;
        mesh::Message m;
        m.type = mesh::Type::kPeerInterest;
        const std::string body = mesh::EncodePeerInterest(
            std::vector<std::string>(local_topics_.begin(), local_topics_.end()));
        m.body = body;
        PushToPeer(peer, mesh::Pack(m));
      }
      if (!peer.presence_due.empty()) {
        std::set<std::string, std::less<>> topics;
        topics.swap(peer.presence_due);
        for (const std::string& t : topics) {
          mesh::PresenceChange c;
          for (PresenceMeta& pm :
               presence_.Metas(t, [this](LinkId l) { return !peer_ids_.contains(l); })) {
            c.joins.push_back({std::move(pm.key), std::move(pm.phx_ref), std::move(pm.meta_json)});
          }
          const std::string body = mesh::EncodePresenceChange(c);
          if (body.size() > mesh::kMaxBodyBytes) {
            ++counters_.peer_too_large;
            continue;
          }
          mesh::Message m;
          m.type = mesh::Type::kPeerPresence;
          m.topic = t;
          m.body = body;
          PushToPeer(peer, mesh::Pack(m));
        }
      }
    }
    if (peer_sender_ == nullptr) continue;
    if (peer.up) {
      // A burst goes as batches of about mesh::kBatchBytes: across nodes,
      // libzmq's cost per message (a CURVE box per frame) was the link's
      // bound, one kPeerData per delivery.
      const size_t most = peer.batches ? SIZE_MAX : 1;
      while (const size_t n = peer.out.NextBatch(mesh::kBatchBytes, most)) {
        bool sent;
        if (n == 1) {
          const PeerOutbox::Entry* e = peer.out.Next();
          sent = peer_sender_->SendPeerData(peer.name, e->seq, e->packed);
        } else {
          for (size_t i = 0; i < n; ++i) {
            const PeerOutbox::Entry* e = peer.out.Unsent(i);
            peer_batch_.Add({.type = mesh::Type::kPeerData, .seq = e->seq, .body = e->packed});
          }
          sent = peer_sender_->SendPeerBatch(peer.name, peer_batch_.Finish());
        }
        if (!sent) break;
        peer.out.Sent(n);
        peer.routed_out += n;
      }
    }
    if (std::optional<uint64_t> ack = peer.in.TakeAck()) peer_sender_->SendPeerAck(peer.name, *ack);
  }
}

bool Router::PeerBacklog() const {
  for (const auto& [name, peer] : peers_) {
    if (peer->up && peer->out.Next() != nullptr) return true;
  }
  return false;
}

void Router::ForEachPeer(const std::function<void(const PeerView&)>& fn) const {
  for (const auto& [name, p] : peers_) {
    fn(PeerView{p->name, p->id, p->up, p->out, p->in, p->routed_out, p->routed_in,
                interests_.TopicsOf(p->id).size()});
  }
}

}  // namespace sb::broker
