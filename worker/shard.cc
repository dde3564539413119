#include "worker/shard.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

#include "common/mono_time.h"
#include "common/process_stats.h"
#include "protocol/phoenix.h"
#include "protocol/websocket.h"

namespace sb::worker {

Shard::Shard(EventLoop* loop, ShardOptions options, WorkerMetrics* metrics)
    : loop_(loop),
      opt_(std::move(options)),
      metrics_(metrics),
      counters_(metrics->counters()),
      hub_(opt_.hub, opt_.ref_prefix, opt_.broker_endpoint.empty() ? nullptr : this) {
  // A joiner is owed one presence_state per channel, and a socket has at
  // most max_topics_per_socket channels.
  opt_.gateway.max_owed_frames = opt_.hub.max_topics_per_socket;
}

Shard::~Shard() {
  if (tick_timer_ != 0) loop_->Cancel(tick_timer_);
}

Result<std::unique_ptr<Shard>> Shard::Create(EventLoop* loop, int listen_fd, ShardOptions options,
                                             WorkerMetrics* metrics,
                                             const handoff::Session* adopted) {
  std::unique_ptr<Shard> shard(new Shard(loop, std::move(options), metrics));
  Shard* self = shard.get();
  Gateway::Listener* listener = self;
  Result<std::unique_ptr<Gateway>> gateway =
      Gateway::Create(loop, listen_fd, self->opt_.gateway, listener, metrics);
  if (!gateway.ok()) return gateway.status();
  self->gateway_ = std::move(gateway).value();
  if (!self->opt_.broker_endpoint.empty()) {
    Result<std::unique_ptr<BrokerLink>> link = BrokerLink::Create(
        loop, self->opt_.broker_endpoint,
        [self](std::span<const std::string_view> frames) {
          self->session_->OnMessage(frames, MonoNowMs());
        },
        [self] {
          // Reported from the loop (the monitor's fd, or before a message):
          // the session exists by then.
          if (self->session_) self->session_->OnConnected(MonoNowMs());
        });
    if (!link.ok()) return link.status();
    self->link_ = std::move(link).value();
    ClusterSession::Handler* handler = self;
    self->session_ =
        std::make_unique<ClusterSession>(self->opt_.cluster, self->link_.get(), handler);
    metrics->counters().clustered.store(true, std::memory_order_relaxed);
    if (!self->opt_.history.rules.empty()) {
      self->history_ = std::make_unique<HistoryStreams>(self->opt_.history);
      self->hub_.KeepHistory(&self->opt_.history.rules);
    }
  }
  if (adopted != nullptr) {
    if (Status s = self->AdoptSession(*adopted); !s.ok()) return s;
  } else if (self->session_) {
    self->session_->Start(MonoNowMs());
    self->Tick();
  }
  loop->SetBeforeSleep([self] { self->EndOfTurn(); });
  loop->SetCron(std::chrono::milliseconds(250), [self] { self->Cron(); });
  return shard;
}

// --- Hand-off ------------------------------------------------------------------

Status Shard::AdoptSession(const handoff::Session& in) {
  // A broker session that cannot go on here would lose its outbox and its
  // place on the broker: not taken, the old process keeps it.
  if (!session_ && (in.epoch != 0 || !in.outbox.empty())) {
    return Status::Refused("the state has a broker session and this process has no --broker");
  }
  if (Status s = hub_.ImportSession(in); !s.ok()) return s;
  if (session_) {
    if (Status s = session_->Import(in); !s.ok()) return s;
  }
  if (history_) history_->ImportPositions(in.streams);
  return Status::Ok();
}

void Shard::Adopt(std::span<handoff::Connection> connections, std::span<UniqueFd> fds) {
  for (size_t i = 0; i < connections.size() && i < fds.size(); ++i) {
    if (fds[i].get() < 0) continue;  // its preparation failed, and said why
    handoff::Connection& c = connections[i];
    const uint64_t old_id = c.id;
    Result<ConnId> id = gateway_->Adopt(std::move(fds[i]), c);
    if (!id.ok()) {
      spdlog::warn("hand-off: connection {:x} not adopted: {}", old_id, id.status().message());
      continue;
    }
    // Ids are per process: the channels follow the socket to its new one.
    // HTTP connections are not in the hub.
    c.id = *id;
    if (Status s = c.http ? Status::Ok() : hub_.ImportConnection(c); !s.ok()) {
      spdlog::warn("hand-off: connection {:x}'s channels not taken: {}", old_id, s.message());
      gateway_->Close(*id, ws::close_code::kInternalError, CloseReason::kIoError,
                      "state not taken");
      continue;
    }
    ++adopted_;
  }
}

void Shard::FinishAdoption() {
  if (history_) {
    // Streams whose position did not move (it was not known yet) are
    // synced as after a subscribe; the others go on from theirs.
    std::vector<std::string> topics;
    std::vector<mesh::TopicState> presence;
    hub_.ClusterState(&topics, &presence);
    std::vector<HistoryAction> actions;
    for (const std::string& topic : topics) history_->OnSubscribed(topic, &actions);
    PerformHistory(actions);
  }
  gateway_->Settle();
  if (session_) {
    session_->Start(MonoNowMs());
    Tick();
  }
}

bool Shard::ReadyToHandOff() const {
  return !draining_ && !handed_off_ && parked_.empty() && own_.empty() && api_publishes_.empty() &&
         api_history_.empty() && presence_waits_.empty() && !gateway_->AnswersPending();
}

std::vector<ConnId> Shard::MovingConnections() const { return gateway_->HandoffConnections(); }

int Shard::MovingFd(ConnId conn) const { return gateway_->HandoffFd(conn); }

Shard::HandoffPlan Shard::BeginHandOff() {
  HandoffPlan out;
  std::vector<Action> actions;
  hub_.SendOverdueStates(INT64_MAX, &actions);
  Perform(actions, 0);
  gateway_->Settle();
  if (session_) session_->Flush();
  gateway_->FlushAll();

  handoff::Session& s = out.session;
  if (session_) {
    session_->Export(&s);
  } else {
    s.shard = opt_.cluster.shard;
    s.instance = opt_.cluster.instance;
    s.token = opt_.cluster.token;
  }
  hub_.ExportSession(&s);
  if (history_) history_->ExportPositions(&s.streams);
  // Every socket that moves: open WebSockets (the hub knows each after
  // Settle) and HTTP connections (never in the hub).
  out.connections = gateway_->HandoffConnections();
  return out;
}

void Shard::ExportConnections(std::span<const ConnId> ids, std::vector<handoff::Connection>* out,
                              std::vector<int>* fds) const {
  for (ConnId id : ids) {
    handoff::Connection c;
    const int fd = gateway_->ExportConnection(id, &c);
    if (fd < 0 || (!c.http && !hub_.ExportConnection(id, &c))) continue;
    out->push_back(std::move(c));
    fds->push_back(fd);
  }
}

void Shard::HandedOff() {
  handed_off_ = true;
  gateway_->StopAccepting();
}

// --- From clients -------------------------------------------------------------

void Shard::OnOpen(ConnId conn, std::optional<Identity> identity) {
  hub_.Connect(conn, std::move(identity));
}

void Shard::OnMessage(ConnId conn, bool binary, std::string_view payload) {
  phx::Message msg;
  phx::DecodeError err;
  bool ok = binary ? phx::DecodeBinary(payload, &msg, &err) : phx::DecodeText(payload, &msg, &err);
  if (!ok) {
    spdlog::debug("conn {:x}: undecodable message: {}", conn, err.what);
    gateway_->Close(conn, err.close_code, ReasonForCloseCode(err.close_code), err.what);
    return;
  }
  std::vector<Action> actions;
  hub_.Handle(conn, msg, MonoNowMs(), &actions);
  // Only a client's own message starts the deliver-latency clock; broadcasts
  // the shard makes itself (presence leaves of a closed socket) do not.
  Perform(actions, gateway_->read_time_ns());
}

void Shard::OnClosed(ConnId conn) {
  std::vector<Action> actions;
  hub_.Disconnect(conn, &actions);
  Perform(actions, 0);
}

// --- The HTTP API --------------------------------------------------------------

void Shard::OnApiRequest(ConnId conn, ApiRequest request) {
  if (request.endpoint == ApiEndpoint::kPresence) {
    ApiPresence(conn, request);
  } else if (request.endpoint == ApiEndpoint::kHistory) {
    if (session_) {
      ApiHistory(conn, request);
    } else {
      gateway_->RespondApi(conn, request.endpoint, 404,
                           ApiErrorBody("no_history", "the topic keeps no history"));
    }
  } else {
    ApiPublish(conn, request);
  }
  gateway_->Settle();
}

void Shard::ApiPublish(ConnId conn, const ApiRequest& r) {
  const int64_t now = MonoNowMs();
  if (r.idempotency_key) {
    if (const std::string* body = idempotency_.Find(*r.idempotency_key, now)) {
      gateway_->RespondApi(conn, r.endpoint, 200, *body);
      return;
    }
  }
  if (draining_) {
    gateway_->RespondApi(conn, r.endpoint, 503, ApiErrorBody("draining", "the shard is draining"));
    return;
  }
  // All the topics or none: a backend retrying a refused broadcast must not
  // deliver twice to the topics that had room.
  if (session_) {
    size_t bytes = 0;
    for (const std::string& topic : r.topics) {
      // The Phoenix message the outbox will hold, escapes included.
      const size_t one = phx::EncodeBroadcast(topic, r.event, {}).size() + r.payload.size();
      if (!session_->CanPublish(one)) {
        const bool too_large = one > mesh::kMaxBodyBytes;
        gateway_->RespondApi(
            conn, r.endpoint, too_large ? 413 : 503,
            too_large ? ApiErrorBody("too_large", "the broadcast is over the mesh's bound")
                      : ApiErrorBody("unavailable", "the outbox to the broker is full"));
        return;
      }
      bytes += one;
    }
    if (session_->outbox_messages() + r.topics.size() > opt_.cluster.max_outbox_messages ||
        session_->outbox_bytes() + bytes > opt_.cluster.max_outbox_bytes) {
      gateway_->RespondApi(conn, r.endpoint, 503,
                           ApiErrorBody("unavailable", "the outbox to the broker is full"));
      return;
    }
  }
  std::vector<Action> actions;
  // With a key and a broker, the broker claims it for the node: nothing is
  // delivered here until it says the key is new (docs/WORKER.md, Idempotency).
  const std::string_view key = r.idempotency_key ? std::string_view(*r.idempotency_key) : "";
  for (const std::string& topic : r.topics) hub_.Publish(topic, r.event, r.payload, &actions, key);
  // A history topic's publish is answered once the broker has sequenced it,
  // with its offset (Shard::SequencedForApi).
  const uint64_t api = next_api_++;
  api_context_ = api;
  api_publishes_[api] =
      ApiPublishWait{.conn = conn, .endpoint = r.endpoint, .key = r.idempotency_key};
  Perform(actions, gateway_->read_time_ns());
  api_context_ = 0;
  if (auto it = api_publishes_.find(api); it != api_publishes_.end()) {
    if (it->second.remaining > 0) return;
    api_publishes_.erase(it);
  } else {
    return;  // refused (FailApiPublish answered)
  }
  const std::string body(kApiOkBody);
  if (r.idempotency_key) idempotency_.Insert(*r.idempotency_key, body, now);
  gateway_->RespondApi(conn, r.endpoint, 200, body);
}

void Shard::ApiPresence(ConnId conn, const ApiRequest& r) {
  const std::string& topic = r.topics.front();
  if (std::optional<std::string> state = hub_.PresenceState(topic)) {
    gateway_->RespondApi(conn, r.endpoint, 200, *state);
    return;
  }
  // Clustered, and the other shards' presence on the topic is not known
  // here. A broker that went away is an answer now; one this process has
  // not met yet (it has just started, or just taken over from the process
  // it replaces) is waited for, within the query's bound, like the answer.
  if (draining_ || (!session_->up() && welcomed_)) {
    gateway_->RespondApi(conn, r.endpoint, 503,
                         ApiErrorBody("unavailable", "the broker is not connected"));
    return;
  }
  PresenceWait& wait = presence_waits_[topic];
  wait.queries.push_back({conn, MonoNowMs() + kApiPresenceWaitMs});
  // With local subscribers the hub's own subscribe brings the snapshot.
  if (!wait.subscribed && hub_.Subscribers(topic) == nullptr) {
    wait.subscribed = true;
    // Sent at the welcome if the session is not up yet.
    if (session_->up()) session_->Subscribe(topic);
  }
}

void Shard::AnswerPresence(const std::string& topic, const std::string* state) {
  auto it = presence_waits_.find(topic);
  if (it == presence_waits_.end()) return;
  PresenceWait wait = std::move(it->second);
  presence_waits_.erase(it);
  for (const PresenceQuery& q : wait.queries) {
    if (state) {
      gateway_->RespondApi(q.conn, ApiEndpoint::kPresence, 200, *state);
    } else {
      gateway_->RespondApi(
          q.conn, ApiEndpoint::kPresence, 503,
          ApiErrorBody("presence_timeout", "the broker's presence snapshot did not come in time"));
    }
  }
  // A client may have joined meanwhile: the broker then keeps the topic.
  const std::vector<ConnId>* subs = hub_.Subscribers(topic);
  if (wait.subscribed && session_ && (subs == nullptr || subs->empty())) {
    session_->Unsubscribe(topic);
  }
}

void Shard::ExpirePresenceQueries(int64_t now_ms) {
  std::vector<std::string> overdue;
  for (const auto& [topic, wait] : presence_waits_) {
    // Queries of a topic are in arrival order: the first is the oldest.
    if (!wait.queries.empty() && wait.queries.front().deadline_ms <= now_ms) {
      overdue.push_back(topic);
    }
  }
  for (const std::string& topic : overdue) AnswerPresence(topic, nullptr);
}

// --- To clients and the broker ---------------------------------------------

void Shard::Perform(const std::vector<Action>& actions, int64_t read_ns) {
  // A history join waiting for its answer: what else this call has for the
  // joiner (its presence_state) waits with it.
  uint64_t parking = 0;  // its id in parked_ (0: none)
  for (const Action& a : actions) {
    switch (a.kind) {
      case Action::Kind::kSend:
        if (auto it = parking != 0 ? parked_.find(parking) : parked_.end();
            it != parked_.end() && it->second.conn == a.conn) {
          it->second.deferred.push_back(Action{
              .kind = a.kind, .conn = a.conn, .data = a.data, .binary = a.binary, .owed = a.owed});
          break;
        }
        gateway_->Send(a.conn, a.binary, a.data, a.owed);
        break;
      case Action::Kind::kJoinHistory: {
        // Answered at once (the stream's position is known here) or parked.
        parking = next_join_;
        JoinHistory(a);
        break;
      }
      case Action::Kind::kBroadcast:
        if (a.sequenced) {
          if (!session_) break;
          const uint64_t stamp = read_ns != 0 ? WallFromMonoNs(read_ns) : 0;
          AwaitSequenced(session_->Publish(a.topic, a.data, a.binary, stamp, a.key, MonoNowMs(),
                                           /*sequenced=*/true),
                         a);
          break;
        }
        if (!a.recipients.empty()) {
          counters_.deliveries.fetch_add(gateway_->Deliver(a.recipients, a.conn, a.binary, a.data),
                                         std::memory_order_relaxed);
          if (read_ns != 0) turn_broadcasts_ns_.push_back(read_ns);
        }
        // The rest of the cluster, after the local sockets: the sender's
        // neighbours never wait for the broker.
        if (a.publish && session_) {
          // The stamp is the read time on the clock every shard shares.
          const uint64_t stamp = read_ns != 0 ? WallFromMonoNs(read_ns) : 0;
          session_->Publish(a.topic, a.data, a.binary, stamp, a.key, MonoNowMs());
        }
        break;
      case Action::Kind::kSubscribe:
        if (session_) session_->Subscribe(a.topic);
        // After the subscribe, on the same connection: every offset past the
        // position the broker answers comes as a delivery.
        if (history_ && history_->Keeps(a.topic)) {
          std::vector<HistoryAction> out;
          history_->OnSubscribed(a.topic, &out);
          PerformHistory(out);
        }
        break;
      case Action::Kind::kUnsubscribe:
        if (session_) session_->Unsubscribe(a.topic);
        if (history_ && history_->Keeps(a.topic)) {
          // Its waiting joins are dropped with it (their sockets left).
          history_->OnUnsubscribed(a.topic);
          std::erase_if(parked_, [&](const auto& p) { return p.second.topic == a.topic; });
        }
        break;
      case Action::Kind::kPresence:
        if (session_) session_->Presence(a.topic, a.data);
        break;
    }
  }
}

// --- End of the loop turn ---------------------------------------------------

void Shard::EndOfTurn() {
  // Handed off: the broker session and every socket are the new process's.
  if (handed_off_) return;
  // The broker first: its next messages are on their way while the client
  // sockets are written.
  if (session_) {
    session_->Flush();
    link_->CheckReadable();
  }
  // The counters before the bytes that report what they count: a client
  // that has read a reply or a delivery scrapes numbers that include it.
  PublishMetrics();
  gateway_->FlushAll();
  if (draining_) MaybeFinishDrain();
  if (!turn_broadcasts_ns_.empty()) {
    const int64_t now = MonoNowNs();
    for (int64_t t : turn_broadcasts_ns_) {
      metrics_->ObserveDeliverLatency(DeliverSource::kLocal, now - t);
    }
    turn_broadcasts_ns_.clear();
  }
  if (!turn_sequenced_stamps_.empty()) {
    const int64_t now = WallNowNs();
    for (uint64_t t : turn_sequenced_stamps_) {
      metrics_->ObserveDeliverLatency(DeliverSource::kSequenced, now - static_cast<int64_t>(t));
    }
    turn_sequenced_stamps_.clear();
  }
  if (!turn_cluster_stamps_.empty()) {
    // Another shard's clock, maybe another machine's: a stamp from the
    // future (clocks apart) counts as zero rather than as nothing.
    const int64_t now = WallNowNs();
    for (uint64_t t : turn_cluster_stamps_) {
      metrics_->ObserveDeliverLatency(DeliverSource::kCluster, now - static_cast<int64_t>(t));
    }
    turn_cluster_stamps_.clear();
  }
}

// --- Draining ------------------------------------------------------------------

void Shard::Drain(std::function<void(size_t)> done) {
  if (draining_) return;
  draining_ = true;
  drained_ = std::move(done);
  drain_deadline_ms_ = MonoNowMs() + opt_.gateway.shutdown_timeout.count();
  // MaybeFinishDrain is called at every tick too, so a broker that never
  // answers still ends the drain at the deadline.
  if (session_) {
    spdlog::info("shard {}: draining: {} broadcast(s) wait for the broker's ack",
                 opt_.cluster.shard, session_->outbox_messages());
  }
  gateway_->Drain([this] {
    clients_gone_ = true;
    MaybeFinishDrain();
  });
}

void Shard::MaybeFinishDrain() {
  if (!drained_ || !clients_gone_) return;
  // Every broadcast a client was told ok about is in the outbox until the
  // broker acks it: leaving earlier would lose it with the process.
  const size_t unacked = session_ ? session_->outbox_messages() : 0;
  if (unacked > 0) {
    if (MonoNowMs() < drain_deadline_ms_) return;
    spdlog::warn(
        "shard {}: drain timed out: {} broadcast(s) answered ok and not acked by the broker",
        opt_.cluster.shard, unacked);
  }
  auto done = std::move(drained_);
  drained_ = nullptr;
  done(unacked);
}

// --- From the broker ----------------------------------------------------------

void Shard::ClusterState(std::vector<std::string>* topics,
                         std::vector<mesh::TopicState>* presence) {
  hub_.ClusterState(topics, presence);
}

void Shard::Deliver(std::string_view topic, std::string_view message, bool binary, uint64_t stamp) {
  const std::span<const ConnId> to = hub_.Deliver(topic);
  counters_.deliveries.fetch_add(gateway_->Deliver(to, 0, binary, message),
                                 std::memory_order_relaxed);
  if (stamp != 0 && !to.empty()) turn_cluster_stamps_.push_back(stamp);
  gateway_->Settle();
}

void Shard::RemotePresence(std::string_view topic, std::string_view json, bool snapshot) {
  std::vector<Action> actions;
  if (snapshot) {
    hub_.RemoteSnapshot(topic, json, &actions);
  } else {
    hub_.RemoteDiff(topic, json, &actions);
  }
  Perform(actions, 0);
  if (snapshot && presence_waits_.contains(std::string(topic))) {
    // The hub took the snapshot if the topic has local subscribers; if not,
    // the snapshot (the other shards' presence) is the whole answer.
    std::optional<std::string> state = hub_.PresenceState(topic);
    const std::string whole = state ? std::move(*state) : std::string(json);
    AnswerPresence(std::string(topic), &whole);
  }
  gateway_->Settle();
}

// --- Timers ------------------------------------------------------------------

void Shard::Tick() {
  if (handed_off_) return;
  session_->OnTick(MonoNowMs());
  if (draining_) MaybeFinishDrain();
  // Liveness is judged at a quarter of the heartbeat's resolution.
  tick_timer_ = loop_->AddTimer(
      std::chrono::milliseconds(std::max<int64_t>(opt_.cluster.heartbeat_ms / 4, 1)),
      [this] { Tick(); });
}

void Shard::Cron() {
  if (handed_off_) return;
  if (session_) {
    std::vector<Action> actions;
    hub_.SendOverdueStates(MonoNowMs(), &actions);
    Perform(actions, 0);
    ExpirePresenceQueries(MonoNowMs());
    ExpireApiHistory(MonoNowMs());
    if (history_) {
      history_->Expire(MonoNowMs());
      AnswerDroppedOwn();
    }
  }
  gateway_->Sweep();
  counters_.loop_lag_ns.store(loop_->last_timer_lag().count(), std::memory_order_relaxed);
  if (++cron_ticks_ % 4 == 0) {
    counters_.resident_bytes.store(ResidentBytes().value_or(0), std::memory_order_relaxed);
  }
}

void Shard::PublishMetrics() {
  auto set = [](auto& atomic, auto v) { atomic.store(v, std::memory_order_relaxed); };
  const Hub::Stats& h = hub_.stats();
  set(counters_.joins_ok, h.joins_ok);
  set(counters_.joins_unauthorized, h.joins_unauthorized);
  set(counters_.joins_too_many, h.joins_too_many);
  set(counters_.joins_invalid_topic, h.joins_invalid_topic);
  set(counters_.joins_invalid_presence, h.joins_invalid_presence);
  set(counters_.joins_rate_limited, h.joins_rate_limited);
  set(counters_.joins_presence_too_large, h.joins_presence_too_large);
  set(counters_.broadcasts, h.broadcasts);
  auto& r = counters_.rejections;
  set(r[static_cast<size_t>(Rejection::kRateLimited)], h.rate_limited);
  set(r[static_cast<size_t>(Rejection::kUnmatchedTopic)], h.unmatched);
  set(r[static_cast<size_t>(Rejection::kReservedEvent)], h.reserved_refused);
  set(r[static_cast<size_t>(Rejection::kStaleJoinRef)], h.stale_dropped);
  if (!session_) return;
  const ClusterSession& s = *session_;
  const ClusterSession::Counters& c = s.counters();
  set(counters_.broker_up, s.up() ? 1 : 0);
  set(counters_.broker_epoch, s.epoch());
  set(counters_.broker_out_messages, s.outbox_messages());
  set(counters_.broker_out_bytes, s.outbox_bytes());
  set(counters_.broker_in_messages, s.uncredited());
  set(counters_.cluster_published, c.published);
  set(counters_.cluster_acked, c.acked);
  set(counters_.cluster_delivered, c.delivered);
  set(counters_.cluster_duplicates, c.duplicates);
  set(counters_.cluster_presence, c.presence);
  set(counters_.cluster_hellos, c.hellos);
  set(counters_.cluster_connects, c.connects);
  set(counters_.cluster_epoch_changes, c.epoch_changes);
  set(counters_.cluster_broker_lost, c.broker_lost);
  set(counters_.cluster_broker_back, c.broker_back);
  set(counters_.cluster_bad_frames, c.bad_frames);
  set(counters_.cluster_too_large, c.too_large);
  set(counters_.cluster_origins_forgotten, c.origins_forgotten);
  set(counters_.cluster_keys_left_out, c.keys_left_out);
  set(counters_.broadcasts_refused, h.broadcasts_refused);
  set(counters_.remote_presence_metas, hub_.remote_presence().metas());
  set(counters_.remote_presence_bytes, hub_.remote_presence().bytes());
  if (!history_) return;
  const HistoryStreams::Stats& hs = history_->stats();
  set(counters_.history_on, true);
  set(counters_.history_messages, history_->messages());
  set(counters_.history_bytes, history_->bytes());
  {
    const auto& fams = history_->families();
    constexpr size_t kSlots = WorkerCounters::kMaxHistoryFamilies;
    std::array<uint64_t, kSlots> msgs{}, bytes{};
    for (size_t i = 0; i < fams.size(); ++i) {
      msgs[std::min(i, kSlots - 1)] += fams[i].messages;
      bytes[std::min(i, kSlots - 1)] += fams[i].bytes;
    }
    for (size_t i = 0; i < kSlots; ++i) {
      set(counters_.history_family_messages[i], msgs[i]);
      set(counters_.history_family_bytes[i], bytes[i]);
    }
  }
  set(counters_.history_topics, history_->topics());
  set(counters_.history_gaps_filled, hs.gaps_filled);
  set(counters_.history_gaps_unfillable, hs.gaps_unfillable);
  set(counters_.history_duplicates, hs.duplicates);
  set(counters_.history_fetches, hs.fetches);
  set(counters_.history_resets, hs.resets);
}

}  // namespace sb::worker
