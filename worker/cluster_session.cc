#include "worker/cluster_session.h"

#include <algorithm>
#include <limits>
#include <utility>

namespace sb::worker {

namespace {

mesh::Message Of(mesh::Type type, std::string_view topic = {}, std::string_view body = {}) {
  mesh::Message m;
  m.type = type;
  m.topic = topic;
  m.body = body;
  return m;
}

}  // namespace

ClusterSession::ClusterSession(ClusterOptions options, Transport* transport, Handler* handler)
    : options_(std::move(options)), transport_(transport), handler_(handler) {}

bool ClusterSession::Send(const mesh::Message& msg) {
  if (transport_->Send(msg)) return true;
  // Lost on the way (no connection): whatever it changed on the broker is
  // restated by the next hello, which carries the whole state.
  resync_ = true;
  return false;
}

void ClusterSession::Export(handoff::Session* session) const {
  session->shard = options_.shard;
  session->instance = options_.instance;
  session->token = options_.token;
  session->epoch = epoch_;
  session->members = members_;
  session->next_seq = next_seq_;
  session->outbox.clear();
  for (const Outgoing& o : outbox_) {
    session->outbox.push_back({o.seq, o.topic, o.message, o.flags, o.stamp, o.key});
  }
  session->origins.clear();
  for (const auto& [instance, origin] : last_delivered_) {
    session->origins.push_back({instance, origin.seq, origin.last_ms});
  }
  // By instance: the same table gives the same record.
  std::sort(
      session->origins.begin(), session->origins.end(),
      [](const handoff::Origin& a, const handoff::Origin& b) { return a.instance < b.instance; });
  session->claims.clear();
  for (const Claim& c : claims_) session->claims.push_back({c.key, c.topic, c.seq, c.at_ms});
}

Status ClusterSession::Import(const handoff::Session& session) {
  if (counters_.hellos != 0 || !outbox_.empty()) {
    return Status::Refused("hand-off: the broker session has started");
  }
  if (session.shard != options_.shard || session.instance != options_.instance ||
      session.token != options_.token) {
    return Status::Refused("hand-off: the broker session's identity differs");
  }
  uint64_t last = 0;
  for (const handoff::Publish& p : session.outbox) {
    if (p.seq <= last || p.seq >= session.next_seq) {
      return Status::Refused("hand-off: outbox seqs out of order or not below the next seq");
    }
    last = p.seq;
  }
  epoch_ = session.epoch;
  members_ = session.members;
  next_seq_ = session.next_seq;
  for (const handoff::Publish& p : session.outbox) {
    outbox_.push_back(Outgoing{p.seq, p.topic, p.message, p.flags, p.stamp, p.key});
    outbox_bytes_ += p.topic.size() + p.message.size();
  }
  last_delivered_.clear();
  for (const handoff::Origin& o : session.origins) {
    last_delivered_[o.instance] = Origin{o.seq, o.last_ms};
  }
  claims_.clear();
  for (const handoff::Claim& c : session.claims)
    claims_.push_back({c.key, c.topic, c.seq, c.at_ms});
  return Status::Ok();
}

void ClusterSession::Start(int64_t now_ms) {
  last_heard_ms_ = now_ms;
  SendHello(now_ms);
}

void ClusterSession::OnConnected(int64_t now_ms) {
  ++counters_.connects;
  // Whatever the last connection was welcomed by, this one has not been.
  // Nothing sent before the connection is waiting in it (the transport
  // queues only to a connection: ZMQ_IMMEDIATE), so the hello is the first
  // thing the broker reads from it, bar what this shard sent between the
  // handshake and now (a heartbeat, a credit): those the broker answers
  // with a reset, which crosses this hello and is not news (OnOne). Were
  // the reset handed over before this report (the link reports first
  // unless the whole round trip fits in one batch of reads), it would be
  // news and this a second hello on the connection: idempotent, and at
  // most one per connection.
  up_ = false;
  silent_ = false;
  last_heard_ms_ = now_ms;
  SendHello(now_ms);
}

void ClusterSession::SendHello(int64_t now_ms) {
  mesh::Hello hello;
  hello.shard = options_.shard;
  hello.instance = options_.instance;
  hello.window = options_.window;
  hello.token = options_.token;
  hello.heartbeat_ms = static_cast<uint32_t>(options_.heartbeat_ms);
  hello.outbox = static_cast<uint32_t>(
      std::min<size_t>(options_.max_outbox_messages, std::numeric_limits<uint32_t>::max()));
  // Everything before the oldest publish kept was acked and forgotten.
  hello.acked = (outbox_.empty() ? next_seq_ : outbox_.front().seq) - 1;
  // Whom a new broker should wait for before it routes anything.
  hello.members = members_;
  handler_->ClusterState(&hello.topics, &hello.presence);
  // The keys this shard accepted: a new broker has not seen them, and a
  // repeat sent to another shard must not be routed by it.
  ExpireClaims(now_ms);
  size_t first = claims_.size(), bytes = 0;
  while (first > 0 && bytes + claims_[first - 1].key.size() + claims_[first - 1].topic.size() <=
                          options_.max_hello_key_bytes) {
    --first;
    bytes += claims_[first].key.size() + claims_[first].topic.size();
  }
  counters_.keys_left_out += first;
  hello.idempotency.reserve(claims_.size() - first);
  for (size_t i = first; i < claims_.size(); ++i) {
    const Claim& c = claims_[i];
    hello.idempotency.push_back(
        {c.key, c.topic, c.seq, static_cast<uint32_t>(std::max<int64_t>(now_ms - c.at_ms, 0))});
  }
  // The history this shard holds: a new broker takes each stream's epoch
  // and top from the hellos and rebuilds its messages from the restates.
  std::vector<std::string> restates;
  handler_->HistoryState(&hello.history, &restates, options_.max_restate_bytes);
  hello.restate = restates.size();
  std::string body = mesh::EncodeHello(hello);
  ++counters_.hellos;
  resync_ = false;
  // What was consumed and not yet credited is still credited (at the next
  // Flush): a broker that knows this connection is owed it, and a new one
  // only gets a little more credit than the window, once.
  // Everything unacked goes again, in order, once the broker has welcomed
  // this hello (Flush): a broker that routed some of it already drops those
  // (same seq), a new one routes them, and receivers drop what they
  // delivered before. Not before the welcome: a broker that keeps answering
  // with resets would otherwise get the whole outbox with every hello.
  sent_ = 0;
  sent_bytes_ = 0;
  // Not handed over (the connection is not up yet): the next tick tries
  // again rather than waiting a whole interval.
  if (!Send(Of(mesh::Type::kHello, {}, body))) return;
  last_hello_ms_ = now_ms;
  ++unanswered_hellos_;
  // Right after the hello, on the same connection: the broker counts them
  // against the hello's `restate`. The link's send queue is not bounded
  // (ZMQ_SNDHWM 0), so a send fails only when the connection is gone; then
  // the broker has not got all it was promised, and the next tick says hello
  // again (with every restate) on the next connection. The broker reads at
  // most mesh::kRecvHighWaterMark messages ahead: max_restate_bytes of
  // batches of mesh::kBatchBytes is far fewer.
  if (!SendRestates(restates)) {
    resync_ = true;
    return;
  }
  counters_.restated += restates.size();
}

bool ClusterSession::SendRestates(const std::vector<std::string>& restates) {
  size_t i = 0;
  while (i < restates.size()) {
    while (i < restates.size() && !batch_.full()) batch_.Add(restates[i++]);
    if (!transport_->SendPacked(batch_.Finish())) return false;
  }
  return true;
}

bool ClusterSession::Fetch(uint64_t id, std::string_view topic, uint64_t after, uint32_t limit) {
  // Not before a welcome: a broker that has not welcomed this hello does not
  // answer it, and the welcome makes the caller send it again.
  if (!up_) return false;
  mesh::Message m = Of(mesh::Type::kFetch, topic);
  m.id = id;
  m.offset = after;
  m.n = limit;
  if (!Send(m)) return false;
  ++counters_.fetches;
  return true;
}

void ClusterSession::SendPublishes() {
  // In batches of about mesh::kBatchBytes, in seq order; a batch that cannot
  // be handed over stops the rest (they go after the next hello). At most
  // max_unacked in flight: the rest goes as acks come back (see
  // ClusterOptions).
  while (MaySendNext()) {
    const size_t start = sent_, start_bytes = sent_bytes_;
    while (MaySendNext() && !batch_.full()) {
      const Outgoing& o = outbox_[sent_++];
      sent_bytes_ += o.topic.size() + o.message.size();
      mesh::Message m = Of(mesh::Type::kPublish, o.topic, o.message);
      m.seq = o.seq;
      m.flags = o.flags;
      m.stamp = o.stamp;
      m.key = o.key;
      batch_.Add(mesh::Pack(m));
    }
    if (!transport_->SendPacked(batch_.Finish())) {
      sent_ = start;
      sent_bytes_ = start_bytes;
      resync_ = true;
      return;
    }
  }
}

bool ClusterSession::MaySendNext() const {
  if (sent_ >= outbox_.size() || sent_ >= options_.max_unacked) return false;
  const Outgoing& o = outbox_[sent_];
  return sent_ == 0 ||
         sent_bytes_ + o.topic.size() + o.message.size() <= options_.max_unacked_bytes;
}

bool ClusterSession::CanPublish(size_t bytes) const {
  return bytes <= mesh::kMaxBodyBytes && outbox_.size() < options_.max_outbox_messages &&
         outbox_bytes_ + bytes <= options_.max_outbox_bytes;
}

uint64_t ClusterSession::Publish(std::string_view topic, std::string_view message, bool binary,
                                 uint64_t stamp, std::string_view key, int64_t now_ms,
                                 bool sequenced) {
  // A message over the mesh's bounds never enters the outbox: the broker
  // would refuse it, or its socket would drop the connection of a batch too
  // large for a frame, again after every reconnect.
  if (topic.empty() || topic.size() > mesh::kMaxTopicBytes ||
      message.size() > mesh::kMaxBodyBytes || key.size() > mesh::kMaxKeyBytes) {
    ++counters_.too_large;
    return 0;
  }
  const uint8_t flags = static_cast<uint8_t>(
      (binary ? mesh::kFlagBinary : 0) | (stamp != 0 ? mesh::kFlagStamped : 0) |
      (!key.empty() ? mesh::kFlagKeyed : 0) | (sequenced ? mesh::kFlagSequenced : 0));
  if (!key.empty()) {
    ExpireClaims(now_ms);
    if (claims_.size() >= mesh::kMaxHelloKeys) claims_.pop_front();
    claims_.push_back(Claim{std::string(key), std::string(topic), next_seq_, now_ms});
  }
  outbox_.push_back(Outgoing{next_seq_++, std::string(topic), std::string(message), flags, stamp,
                             std::string(key)});
  outbox_bytes_ += topic.size() + message.size();
  ++counters_.published;
  return next_seq_ - 1;
}

void ClusterSession::ExpireClaims(int64_t now_ms) {
  while (!claims_.empty() && now_ms - claims_.front().at_ms >= mesh::kKeyTtlMs) {
    claims_.pop_front();
  }
}

void ClusterSession::Subscribe(std::string_view topic) { Send(Of(mesh::Type::kSubscribe, topic)); }

void ClusterSession::Unsubscribe(std::string_view topic) {
  Send(Of(mesh::Type::kUnsubscribe, topic));
}

void ClusterSession::Presence(std::string_view topic, std::string_view change_json) {
  Send(Of(mesh::Type::kPresence, topic, change_json));
}

void ClusterSession::OnMessage(std::span<const std::string_view> frames, int64_t now_ms) {
  mesh::Message msg;
  if (!mesh::Decode(frames, &msg).ok()) {
    ++counters_.bad_frames;
    return;
  }
  last_heard_ms_ = now_ms;
  if (msg.type != mesh::Type::kBatch) return OnOne(msg, now_ms);
  Status s = mesh::ForEachInBatch(msg.body, [&](std::span<const std::string_view> inner) {
    mesh::Message m;
    // A batch never nests.
    if (!mesh::Decode(inner, &m).ok() || m.type == mesh::Type::kBatch) {
      ++counters_.bad_frames;
      return;
    }
    OnOne(m, now_ms);
  });
  if (!s.ok()) ++counters_.bad_frames;
}

void ClusterSession::OnOne(const mesh::Message& msg, int64_t now_ms) {
  switch (msg.type) {
    case mesh::Type::kWelcome:
      ++counters_.welcomes;
      if (epoch_ != 0 && msg.epoch != epoch_) ++counters_.epoch_changes;
      epoch_ = msg.epoch;
      up_ = true;
      silent_ = false;
      unanswered_hellos_ = 0;
      handler_->Welcomed();
      return;
    case mesh::Type::kReset: {
      // News if we were welcomed since our last hello, or it is an interval
      // old. Otherwise it crossed our hello (the broker answered what we
      // sent before it) or the broker keeps refusing us: OnTick says hello
      // again once per interval, never once per reset (a broker resets a
      // connection up to ten times a second).
      const bool news = up_ || now_ms - last_hello_ms_ >= options_.heartbeat_ms;
      up_ = false;
      silent_ = false;
      if (news) SendHello(now_ms);
      return;
    }
    case mesh::Type::kHeartbeat:
      // A broker we were not welcomed by: it restarted without our noticing.
      if (up_ && msg.epoch != epoch_) {
        up_ = false;
        SendHello(now_ms);
        return;
      }
      // The broker we lost to silence speaks again, as itself: it was slow
      // (stopped, or starved of CPU), not gone. A broker sends heartbeats
      // only to the shards it has a session with, so it still has ours, and
      // everything on this connection arrived in order: up again, no hello
      // (which would have it restate our whole state while it catches up).
      if (silent_ && msg.epoch == epoch_) {
        silent_ = false;
        up_ = true;
        unanswered_hellos_ = 0;
        ++counters_.broker_back;
      }
      return;
    case mesh::Type::kAck: {
      size_t done = 0;
      while (!outbox_.empty() && outbox_.front().seq <= msg.seq) {
        const size_t bytes = outbox_.front().topic.size() + outbox_.front().message.size();
        outbox_bytes_ -= bytes;
        // An ack can cover publishes not sent since the last hello (the
        // broker routed them before it).
        if (sent_ > 0) {
          --sent_;
          sent_bytes_ -= bytes;
        }
        const bool sequenced = (outbox_.front().flags & mesh::kFlagSequenced) != 0;
        const uint64_t seq = outbox_.front().seq;
        outbox_.pop_front();
        ++done;
        if (sequenced) handler_->SequencedAcked(seq);
      }
      counters_.acked += done;
      return;
    }
    case mesh::Type::kDeliver: {
      ++consumed_;
      if ((msg.flags & mesh::kFlagSequenced) != 0) {
        // Not through the per-origin table: the topic's stream drops a repeat
        // (a re-send after a broker restart keeps its offset) by its offset,
        // exactly and per topic, even one from an origin the table has
        // forgotten (max_origins), and the origin's own publishes come back
        // this way, which the table was not made for.
        ++counters_.sequenced;
        handler_->DeliverSequenced(msg.topic, msg);
        return;
      }
      auto it = last_delivered_.find(msg.origin);
      if (it == last_delivered_.end()) {
        ForgetAnOriginIfFull();
        it = last_delivered_.emplace(msg.origin, Origin{}).first;
      }
      it->second.last_ms = now_ms;
      if (msg.seq <= it->second.seq) {
        ++counters_.duplicates;
        return;
      }
      it->second.seq = msg.seq;
      ++counters_.delivered;
      handler_->Deliver(msg.topic, msg.body, (msg.flags & mesh::kFlagBinary) != 0,
                        (msg.flags & mesh::kFlagStamped) != 0 ? msg.stamp : 0);
      return;
    }
    case mesh::Type::kMembers: {
      // Only a whole list replaces the one kept: a broker sends no other.
      Result<std::vector<std::string>> members = mesh::DecodeMembers(msg.body);
      if (!members.ok()) {
        ++counters_.bad_frames;
        return;
      }
      members_ = std::move(members).value();
      return;
    }
    case mesh::Type::kDiff:
    case mesh::Type::kSnapshot:
      ++consumed_;
      ++counters_.presence;
      handler_->RemotePresence(msg.topic, msg.body, msg.type == mesh::Type::kSnapshot);
      return;
    case mesh::Type::kHistory:
      // Queued by the broker like a delivery, under credit (docs/PROTOCOL.md,
      // Credit): credited back once consumed.
      ++consumed_;
      ++counters_.histories;
      handler_->History(msg);
      return;
    case mesh::Type::kHello:
    case mesh::Type::kBatch:
    case mesh::Type::kSubscribe:
    case mesh::Type::kUnsubscribe:
    case mesh::Type::kPublish:
    case mesh::Type::kCredit:
    case mesh::Type::kPresence:
    case mesh::Type::kFetch:
    case mesh::Type::kRestate:
    case mesh::Type::kPeerHello:
    case mesh::Type::kPeerWelcome:
    case mesh::Type::kPeerHeartbeat:
    case mesh::Type::kPeerData:
    case mesh::Type::kPeerAck:
    case mesh::Type::kPeerInterest:
    case mesh::Type::kPeerPresence:
    case mesh::Type::kPeerSequence:
      // What only a shard sends, or one broker to another.
      ++counters_.bad_frames;
      return;
  }
}

void ClusterSession::ForgetAnOriginIfFull() {
  if (last_delivered_.size() < options_.max_origins || last_delivered_.empty()) return;
  // A scan, once per new origin past the bound: new origins are process
  // starts, rare next to deliveries. The one forgotten delivered least
  // recently (a shard process long gone, as a rule); were it alive and
  // to re-send something already delivered, that would be delivered again.
  auto oldest = last_delivered_.begin();
  for (auto it = last_delivered_.begin(); it != last_delivered_.end(); ++it) {
    if (it->second.last_ms < oldest->second.last_ms) oldest = it;
  }
  last_delivered_.erase(oldest);
  ++counters_.origins_forgotten;
}

void ClusterSession::OnTick(int64_t now_ms) {
  // A tick much later than its timer asked for (ticks come several times
  // per interval): this process did not run — a turn that took long, a
  // machine with more work than cores, a SIGSTOP. What the broker sent
  // meanwhile waits unread, so that silence was ours, not the broker's,
  // and does not count towards losing it.
  if (last_tick_ms_ != 0 && now_ms - last_tick_ms_ > options_.heartbeat_ms) {
    last_heard_ms_ += now_ms - last_tick_ms_ - options_.heartbeat_ms;
  }
  last_tick_ms_ = now_ms;
  if (up_ && now_ms - last_heard_ms_ > options_.heartbeat_ms * options_.misses) {
    up_ = false;
    ++counters_.broker_lost;
    // Most often a slow broker, which comes back by itself (kHeartbeat); a
    // restarted one comes on a new connection (OnConnected), one that
    // dropped us answers with a reset. So the first hello waits two
    // intervals (then 4, 8 …), in case none of that happens.
    silent_ = true;
    last_hello_ms_ = now_ms;
    unanswered_hellos_ = 2;
  }
  if (now_ms >= next_heartbeat_ms_) {
    next_heartbeat_ms_ = now_ms + options_.heartbeat_ms;
    mesh::Message hb = Of(mesh::Type::kHeartbeat);
    Send(hb);
  }
  // Something was lost on the way: hello again, at most once per interval
  // (a hello gathers the whole state).
  if (resync_ && now_ms - last_hello_ms_ >= options_.heartbeat_ms) return SendHello(now_ms);
  // Not welcomed yet, or the broker went silent: hello, then again at
  // doubling intervals (1, 2, 4 … 32) until welcomed. Not every interval: on
  // the same connection, a broker that does not know us answers anything
  // with a reset (hello at once, OnOne) and a new one comes on a new
  // connection (OnConnected), so what is left is a broker too busy to
  // answer yet — and every hello has it restate the shard's state, which
  // would only keep it busy.
  if (up_) return;
  const int64_t patience = options_.heartbeat_ms << std::min<uint32_t>(
                               unanswered_hellos_ > 0 ? unanswered_hellos_ - 1 : 0, 5);
  if (now_ms - last_hello_ms_ >= patience) SendHello(now_ms);
}

void ClusterSession::Flush() {
  if (consumed_ > 0) {
    mesh::Message credit = Of(mesh::Type::kCredit);
    credit.n = consumed_;
    if (Send(credit)) consumed_ = 0;
  }
  // Only to a broker that welcomed us (see SendHello).
  if (up_ && MaySendNext()) SendPublishes();
}

}  // namespace sb::worker
