#include "broker/mesh_server.h"

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <map>
#include <optional>

#include "broker/ipc_endpoint.h"
#include "broker/membership.h"
#include "broker/peer_server.h"
#include "broker/peer_uplinks.h"
#include "common/metric_families.h"
#include "common/metric_names.h"
#include "common/mono_time.h"

namespace sb::broker {

namespace m = sb::metrics;
using prometheus::MetricFamily;
using prometheus::MetricType;

namespace {
// Messages read per wake-up; the rest wait for the next turn, after this
// turn's sends (the queues drain before more input is taken).
constexpr int kReadBatch = 512;

constexpr std::array<std::string_view, static_cast<size_t>(DropReason::kCount)> kDropNames = {
    "shed", "disconnect", "too_large", "expired"};
constexpr std::array<std::string_view, static_cast<size_t>(Refused::kCount)> kRefusedNames = {
    "bad_frame", "stranger", "duplicate", "bad_presence", "bad_rebind", "bad_seq"};
constexpr std::array<std::string_view, static_cast<size_t>(mesh::HelloDrop::kCount)>
    kHelloDropNames = {"topic", "meta", "over_limit", "member", "stream", "key"};
constexpr std::array<std::string_view, static_cast<size_t>(HistoryEviction::kCount)>
    kEvictionNames = {"ttl", "size", "bytes", "epoch"};
}  // namespace

// Reads the router at scrape time, under the loop's mutex.
class MeshServer::Collector : public prometheus::Collectable {
 public:
  explicit Collector(MeshServer* server) : s_(server) {}

  std::vector<MetricFamily> Collect() const override {
    std::lock_guard<std::mutex> lock(s_->mu_);
    const Router& r = s_->router_;
    const Router::Counters& c = r.counters();
    using Labels = MetricFamilies::Labels;
    MetricFamilies out;
    out.BuildInfo();
    MetricFamily& depth =
        out.Family(m::kQueueDepth, "Messages waiting in a queue", MetricType::Gauge);
    MetricFamily& bytes =
        out.Family(m::kQueueDepthBytes, "Bytes waiting in a queue", MetricType::Gauge);
    MetricFamily& credit =
        out.Family(m::kBrokerCredit, "Messages a shard may still be sent (credit it granted)",
                   MetricType::Gauge);
    MetricFamily& in_flight =
        out.Family(m::kBrokerInFlight, "Messages sent to a shard and not yet credited back",
                   MetricType::Gauge);
    // By shard name: a restarted shard is a new session while the old one
    // waits to expire, and one scrape must not hold two series with the
    // same labels; the old session's backlog is still that shard's.
    struct PerShard {
      double depth = 0, bytes = 0, credit = 0, in_flight = 0, presence = 0;
    };
    std::map<std::string, PerShard> shards;
    r.ForEachLink([&](const Router::LinkView& v) {
      PerShard& p = shards[v.shard];
      p.depth += static_cast<double>(v.queue.depth_messages());
      p.bytes += static_cast<double>(v.queue.depth_bytes());
      p.credit += static_cast<double>(v.queue.credit());
      p.in_flight += static_cast<double>(v.in_flight);
      p.presence += static_cast<double>(v.presence.metas());
    });
    for (const auto& [shard, p] : shards) {
      Labels l = {{std::string(m::kLabelQueue), std::string(m::kQueueShardOut)},
                  {std::string(m::kLabelPeer), shard}};
      out.Add(depth, l, p.depth);
      out.Add(bytes, l, p.bytes);
      // Presence changes owed to the shard, merged: one per meta at most.
      out.Add(depth,
              {{std::string(m::kLabelQueue), std::string(m::kQueuePresencePending)},
               {std::string(m::kLabelPeer), shard}},
              p.presence);
      Labels peer = {{std::string(m::kLabelPeer), shard}};
      out.Add(credit, peer, p.credit);
      out.Add(in_flight, peer, p.in_flight);
    }
    out.AddHistogram(
        out.Family(m::kQueueDelaySeconds, "Time a message waited in a queue before it was sent",
                   MetricType::Histogram),
        {{std::string(m::kLabelQueue), std::string(m::kQueueShardOut)}}, m::kQueueDelayBuckets,
        s_->delays_.buckets, s_->delays_.count, s_->delays_.sum_seconds);
    out.Counter(m::kBrokerPublishesTotal, "Publishes routed (duplicates excluded)",
                static_cast<double>(c.publishes));
    out.Counter(m::kBrokerIdempotentRepeatsTotal,
                "Keyed publishes not routed: their key and topic were claimed within 5 minutes",
                static_cast<double>(c.idempotent_repeats));
    out.Counter(m::kBrokerRoutedTotal, "Deliveries queued, one per recipient shard",
                static_cast<double>(c.routed));
    out.Counter(m::kBrokerDeliveredTotal, "Deliveries sent to shards",
                static_cast<double>(c.delivered));
    out.CounterPerLabel(m::kBrokerDroppedTotal,
                        "Messages for a shard that were never sent, by reason", m::kLabelReason,
                        kDropNames, [&](size_t i) { return c.dropped[i]; });
    {
      MetricFamily& f = out.Family(
          m::kBrokerRequeuedTotal,
          "Deliveries put back at the head of a shard's queue (sent again after a rebind, or "
          "not handed to a gone connection), by reason",
          MetricType::Counter);
      out.Add(f, {{std::string(m::kLabelReason), "rebind"}}, static_cast<double>(c.resent));
      out.Add(f, {{std::string(m::kLabelReason), "send_failed"}},
              static_cast<double>(c.send_failed));
    }
    out.CounterPerLabel(m::kBrokerRefusedFramesTotal,
                        "Messages from shards not acted on, by reason", m::kLabelReason,
                        kRefusedNames, [&](size_t i) { return c.refused[i]; });
    out.CounterPerLabel(m::kBrokerHelloEntriesDroppedTotal,
                        "Entries of shards' hellos left out (the rest was taken), by reason",
                        m::kLabelReason, kHelloDropNames,
                        [&](size_t i) { return c.hello_dropped[i]; });
    {
      MetricFamily& f =
          out.Family(m::kBrokerPresenceMessagesTotal, "Presence messages queued to shards, by kind",
                     MetricType::Counter);
      out.Add(f, {{std::string(m::kLabelKind), "diff"}}, static_cast<double>(c.diffs));
      // Changes owed, before they merged into those diffs.
      out.Add(f, {{std::string(m::kLabelKind), "change"}}, static_cast<double>(c.presence_changes));
      out.Add(f, {{std::string(m::kLabelKind), "snapshot"}}, static_cast<double>(c.snapshots));
    }
    {
      MetricFamily& f =
          out.Family(m::kBrokerLinkEventsTotal,
                     "Shard sessions: hellos, rebinds, expiries, disconnects", MetricType::Counter);
      auto event = [&](const char* e, uint64_t v) {
        out.Add(f, {{std::string(m::kLabelEvent), e}}, static_cast<double>(v));
      };
      event("hello", c.hellos);
      event("rebind", c.rebinds);
      event("expired", c.expired);
      event("disconnected", c.disconnected);
      event("ack", c.acks);
    }
    {
      MetricFamily& f = out.Family(
          m::kBrokerSettlesTotal,
          "Settle windows ended (one per broker start): every expected shard said hello, or "
          "the bound",
          MetricType::Counter);
      const SettleEnd end = r.settle_end();
      out.Add(f, {{std::string(m::kLabelEnd), "all_hello"}},
              end == SettleEnd::kAllHello ? 1.0 : 0.0);
      out.Add(f, {{std::string(m::kLabelEnd), "timeout"}}, end == SettleEnd::kTimeout ? 1.0 : 0.0);
    }
    out.Gauge(m::kBrokerTopics, "Topics at least one shard subscribes",
              static_cast<double>(r.interests().topics()));
    out.Gauge(m::kBrokerSubscriptions, "Shard-topic subscriptions",
              static_cast<double>(r.interests().subscriptions()));
    out.Gauge(m::kBrokerPresences, "Presence metas held, all shards",
              static_cast<double>(r.presence().metas()));
    // By name, as above: a restarted shard is one shard while its old
    // session waits to expire.
    out.Gauge(m::kBrokerConnectedShards, "Shards with a session",
              static_cast<double>(shards.size()));
    // An epoch is a random 64-bit number; a double keeps its top 53 bits,
    // plenty to see it change.
    out.Gauge(m::kBrokerEpoch, "This broker's epoch (random per start)",
              static_cast<double>(r.epoch()));
    {
      const HistoryStore& h = r.history();
      const HistoryStore::Counters& hc = h.counters();
      out.Gauge(m::kBrokerHistoryTopics, "Topics with a history stream",
                static_cast<double>(h.topics()));
      // Per topic family (label `family`: the --history rule's pattern,
      // "default" for topics no rule names, shown once one is held).
      MetricFamily& held = out.Family(m::kBrokerHistoryMessages,
                                      "History messages held, by topic family", MetricType::Gauge);
      MetricFamily& bytes =
          out.Family(m::kBrokerHistoryBytes,
                     "Bytes of the history messages held, by topic family (their bodies; "
                     "--history-max-bytes bounds the sum)",
                     MetricType::Gauge);
      const std::vector<HistoryStore::Family>& fams = h.families();
      for (size_t i = 0; i < fams.size(); ++i) {
        const bool fallback = i + 1 == fams.size();
        if (fallback && fams[i].messages == 0) continue;
        const MetricFamilies::Labels family = {
            {std::string(m::kLabelFamily), fallback ? "default" : fams[i].pattern}};
        out.Add(held, family, static_cast<double>(fams[i].messages));
        out.Add(bytes, family, static_cast<double>(fams[i].bytes));
      }
      out.Counter(m::kBrokerHistorySequencedTotal, "Publishes given a history offset",
                  static_cast<double>(hc.sequenced));
      out.Counter(m::kBrokerHistoryResequencedTotal,
                  "Re-sent publishes the history held already: they kept their offset",
                  static_cast<double>(hc.resequenced));
      out.Counter(m::kBrokerHistoryFetchesTotal, "History fetches answered",
                  static_cast<double>(hc.fetches));
      out.CounterPerLabel(m::kBrokerHistoryEvictedTotal,
                          "History messages dropped, by reason: older than their topic's TTL, "
                          "beyond its SIZE, or the oldest beyond --history-max-bytes",
                          m::kLabelReason, kEvictionNames, [&](size_t i) { return hc.evicted[i]; });
      out.Counter(m::kBrokerHistoryRestatedTotal,
                  "History messages rebuilt from shards' restates (duplicates not included)",
                  static_cast<double>(hc.restated));
      out.Counter(m::kBrokerHistoryStreamConflictsTotal,
                  "Restated positions or messages of another stream than the one kept",
                  static_cast<double>(hc.stream_conflicts));
      out.Counter(m::kBrokerHistoryUnconfiguredTopicsTotal,
                  "History topics no --history rule of the broker names (kept by the default)",
                  static_cast<double>(hc.unconfigured_topics));
      // History across nodes (docs/CLUSTER.md).
      const Router::Counters& rc = r.counters();
      out.Gauge(m::kBrokerHistoryOwnerNodes,
                "Nodes history ownership is computed over: this one and the members counted up",
                static_cast<double>(std::max<size_t>(r.owner_nodes().size(), 1)));
      out.Counter(m::kBrokerHistoryOwnerChangesTotal,
                  "Changes of the set of nodes history ownership is computed over",
                  static_cast<double>(rc.owner_set_changes));
      out.Counter(m::kBrokerHistorySequenceForwardedTotal,
                  "Sequenced publishes of local shards sent to their topic's owner node",
                  static_cast<double>(rc.sequence_forwarded));
      out.Counter(m::kBrokerHistoryFetchesForwardedTotal,
                  "History fetches of local shards sent to their topic's owner node",
                  static_cast<double>(rc.fetches_forwarded));
      out.Counter(m::kBrokerHistorySequencedForPeersTotal,
                  "Publishes other nodes sent this node to sequence (resends included)",
                  static_cast<double>(rc.sequenced_for_peers));
      out.Counter(m::kBrokerHistoryCopiedTotal,
                  "Sequenced messages taken from their owner node as copies (duplicates excluded)",
                  static_cast<double>(hc.accepted));
      out.Counter(m::kBrokerHistoryTakenOverTotal,
                  "Topics given a new epoch here because their owner changed to this node",
                  static_cast<double>(hc.taken_over));
      out.Counter(m::kBrokerHistoryNotOwnerDroppedTotal,
                  "Sequenced deliveries from a node that is not the topic's owner: dropped",
                  static_cast<double>(rc.sequenced_not_owner));
    }
    {
      // Routing between nodes, per member (label `peer`).
      const std::string peer(m::kLabelPeer);
      MetricFamily& q =
          out.Family(m::kBrokerPeerQueueMessages,
                     "Messages in the member's outbox: sent or not, unacked", MetricType::Gauge);
      MetricFamily& qb =
          out.Family(m::kBrokerPeerQueueBytes, "Bytes in the member's outbox: sent or not, unacked",
                     MetricType::Gauge);
      MetricFamily& routed =
          out.Family(m::kBrokerPeerRoutedTotal,
                     "Node-to-node messages handed to the member's uplink (out, resends "
                     "included) and taken from the member (in, duplicates excluded)",
                     MetricType::Counter);
      MetricFamily& dropped = out.Family(
          m::kBrokerPeerDroppedTotal,
          "Node-to-node messages lost or refused, by reason: outbox_full (the oldest, dropped "
          "from the outbox to the member), duplicate (from the member, already taken), gap "
          "(seqs the member skipped: dropped from its outbox)",
          MetricType::Counter);
      MetricFamily& interest =
          out.Family(m::kBrokerPeerInterestTopics,
                     "Topics the member's shards subscribe, as it said", MetricType::Gauge);
      MetricFamily& peer_credit =
          out.Family(m::kBrokerPeerCredit,
                     "Messages the member's outbox still takes before its oldest are dropped",
                     MetricType::Gauge);
      MetricFamily& peer_in_flight = out.Family(
          m::kBrokerPeerInFlight, "Messages handed to the member's connection and not yet acked",
          MetricType::Gauge);
      const std::string dir(m::kLabelDirection), reason(m::kLabelReason);
      const std::string queue(m::kLabelQueue);
      r.ForEachPeer([&](const Router::PeerView& v) {
        out.Add(q, {{peer, v.name}}, static_cast<double>(v.out.messages()));
        out.Add(qb, {{peer, v.name}}, static_cast<double>(v.out.bytes()));
        // The same outbox, and what came from the member and waits for local
        // shards, among every other queue of the design (docs/METRICS.md).
        const std::string out_q(m::kQueuePeerOut), in_q(m::kQueuePeerIn);
        out.Add(depth, {{queue, out_q}, {peer, v.name}}, static_cast<double>(v.out.messages()));
        out.Add(bytes, {{queue, out_q}, {peer, v.name}}, static_cast<double>(v.out.bytes()));
        out.Add(depth, {{queue, in_q}, {peer, v.name}}, static_cast<double>(v.in.open()));
        out.Add(peer_credit, {{peer, v.name}}, static_cast<double>(v.out.credit()));
        out.Add(peer_in_flight, {{peer, v.name}}, static_cast<double>(v.out.in_flight()));
        out.Add(routed, {{peer, v.name}, {dir, "out"}}, static_cast<double>(v.routed_out));
        out.Add(routed, {{peer, v.name}, {dir, "in"}}, static_cast<double>(v.routed_in));
        out.Add(dropped, {{peer, v.name}, {reason, "outbox_full"}},
                static_cast<double>(v.out.dropped()));
        out.Add(dropped, {{peer, v.name}, {reason, "duplicate"}},
                static_cast<double>(v.in.duplicates()));
        out.Add(dropped, {{peer, v.name}, {reason, "gap"}}, static_cast<double>(v.in.gaps()));
        out.Add(interest, {{peer, v.name}}, static_cast<double>(v.interest_topics));
      });
    }
    out.Gauge(m::kEventLoopLagSeconds, "How late the event loop ran its last due timer",
              static_cast<double>(s_->loop_lag_ns_) / 1e9);
    return std::move(out).Take();
  }

 private:
  MeshServer* s_;
};

Result<std::unique_ptr<MeshServer>> MeshServer::Create(EventLoop* loop, const std::string& endpoint,
                                                       RouterOptions options) {
  Result<std::unique_ptr<ZmqSocket>> socket =
      ZmqSocket::Create({.kind = ZmqSocket::Kind::kRouter,
                         .recv_hwm = mesh::kRecvHighWaterMark,
                         .max_frame_bytes = static_cast<int64_t>(mesh::kMaxFrameBytes)});
  if (!socket.ok()) return socket.status();
  // Anything that reaches an endpoint may act as a shard, so an ipc one is
  // this user's only; libzmq binds in this thread, under the umask.
  const std::optional<std::string> ipc = IpcPath(endpoint);
  if (ipc) {
    if (Status s = CheckIpcDirectory(*ipc, ::geteuid()); !s.ok()) return s;
  }
  {
    std::optional<ScopedUmask> owner_only;
    if (ipc) owner_only.emplace(077);
    if (Status s = socket.value()->Bind(endpoint); !s.ok()) return s;
  }
  if (ipc) {
    if (Status s = RestrictIpcSocket(*ipc); !s.ok()) return s;
  }
  std::unique_ptr<MeshServer> server(new MeshServer(loop, std::move(socket).value(), options));
  MeshServer* self = server.get();
  if (Status s = self->socket_->Watch(
          loop, kReadBatch,
          [self](std::span<const std::string_view> frames) { self->OnMessage(frames); });
      !s.ok()) {
    return s;
  }
  loop->SetBeforeSleep([self] { self->Flush(); });
  self->Tick();
  return server;
}

MeshServer::MeshServer(EventLoop* loop, std::unique_ptr<ZmqSocket> socket, RouterOptions options)
    : loop_(loop), socket_(std::move(socket)), router_(options, this) {
  delays_.buckets.assign(m::kQueueDelayBuckets.size(), 0);
  collectable_ = std::make_shared<Collector>(this);
}

MeshServer::~MeshServer() {
  if (tick_timer_ != 0) loop_->Cancel(tick_timer_);
  if (peer_retry_timer_ != 0) loop_->Cancel(peer_retry_timer_);
  loop_->SetBeforeSleep(nullptr);
}

bool MeshServer::Send(const std::string& routing_id, const mesh::Message& msg) {
  const mesh::Frames frames(msg);
  out_frames_.assign(1, routing_id);
  out_frames_.insert(out_frames_.end(), frames.views().begin(), frames.views().end());
  return SendFrames();
}

bool MeshServer::SendPacked(const std::string& routing_id, std::string_view packed) {
  if (!mesh::Unpack(packed, &out_frames_).ok()) return false;  // the router packed it
  out_frames_.insert(out_frames_.begin(), routing_id);
  return SendFrames();
}

bool MeshServer::SendFrames() {
  // False: the shard's connection is gone (the router keeps what it could
  // not send; the shard reconnects or expires).
  return socket_->Send(out_frames_);
}

void MeshServer::OnMessage(std::span<const std::string_view> frames) {
  if (frames.size() < 2) return;  // a ROUTER always prepends the routing id
  std::lock_guard<std::mutex> lock(mu_);
  router_.OnMessage(frames[0], frames.subspan(1), MonoNowUs());
}

void MeshServer::Tick() {
  int64_t now = MonoNowUs();
  int64_t next;
  {
    std::lock_guard<std::mutex> lock(mu_);
    router_.OnTick(now);
    next = router_.NextTickUs(now);
    loop_lag_ns_ = loop_->last_timer_lag().count();
  }
  int64_t wait = std::clamp<int64_t>(next - now, 1000, 250'000);
  tick_timer_ = loop_->AddTimer(std::chrono::microseconds(wait), [this] { Tick(); });
}

void MeshServer::Flush() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    turn_delays_us_.clear();
    router_.Flush(MonoNowUs(), &turn_delays_us_);
    if (peer_retry_timer_ == 0 && router_.PeerBacklog()) {
      peer_retry_timer_ = loop_->AddTimer(std::chrono::milliseconds(2), [this] {
        peer_retry_timer_ = 0;
        Flush();
      });
    }
    for (int64_t us : turn_delays_us_) {
      double s = static_cast<double>(us) / 1e6;
      auto it = std::lower_bound(m::kQueueDelayBuckets.begin(), m::kQueueDelayBuckets.end(), s);
      if (it != m::kQueueDelayBuckets.end()) ++delays_.buckets[it - m::kQueueDelayBuckets.begin()];
      ++delays_.count;
      delays_.sum_seconds += s;
    }
  }
  socket_->CheckReadable();
}

void MeshServer::SetPeerLinks(PeerUplinks* uplinks, PeerServer* server) {
  std::lock_guard<std::mutex> lock(mu_);
  uplinks_ = uplinks;
  peer_server_ = server;
  router_.SetPeerSender(this);
}

void MeshServer::ApplyMembers(std::span<const MemberEvent> events) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const MemberEvent& e : events) {
    // A changed member keeps its place: its new broker's hello names a new
    // stream, and its snapshots replace what it had.
    if (e.kind == MemberEventKind::kLeft) {
      router_.RemovePeer(e.member.name, MonoNowUs());
    } else {
      router_.AddPeer(e.member.name);
    }
  }
}

void MeshServer::OnPeerUp(const std::string& peer, uint64_t expected, bool batches) {
  std::lock_guard<std::mutex> lock(mu_);
  router_.OnPeerUp(peer, expected, batches);
}

void MeshServer::OnPeerDown(const std::string& peer) {
  std::lock_guard<std::mutex> lock(mu_);
  router_.OnPeerDown(peer);
}

void MeshServer::OnPeerAck(const std::string& peer, uint64_t seq) {
  std::lock_guard<std::mutex> lock(mu_);
  router_.OnPeerAck(peer, seq);
}

uint64_t MeshServer::PeerStream(const std::string& peer) {
  std::lock_guard<std::mutex> lock(mu_);
  return router_.PeerStream(peer);
}

uint64_t MeshServer::OnPeerHello(const std::string& peer, uint64_t stream) {
  std::lock_guard<std::mutex> lock(mu_);
  return router_.OnPeerHello(peer, stream, MonoNowUs());
}

void MeshServer::OnPeerData(const std::string& peer, uint64_t seq, std::string_view packed) {
  std::lock_guard<std::mutex> lock(mu_);
  router_.OnPeerData(peer, seq, packed, MonoNowUs());
}

void MeshServer::OnPeerInboundDown(const std::string& peer) {
  std::lock_guard<std::mutex> lock(mu_);
  router_.OnPeerInboundDown(peer, MonoNowUs());
}

// Called from Router::Flush, under mu_; the links take their own locks (the
// loop thread holds mu_ first only here, and scrapes hold one lock at a time).
bool MeshServer::SendPeerData(const std::string& peer, uint64_t seq, std::string_view packed) {
  return uplinks_ != nullptr && uplinks_->SendData(peer, seq, packed);
}

bool MeshServer::SendPeerBatch(const std::string& peer, std::string_view batch) {
  return uplinks_ != nullptr && uplinks_->SendBatch(peer, batch);
}

void MeshServer::SendPeerAck(const std::string& peer, uint64_t seq) {
  if (peer_server_ != nullptr) peer_server_->SendAck(peer, seq);
}

}  // namespace sb::broker
