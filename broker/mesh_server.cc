#include "broker/mesh_server.h"

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <deque>
#include <iterator>
#include <map>
#include <optional>

#include "broker/ipc_endpoint.h"
#include "common/metric_names.h"
#include "common/mono_time.h"

namespace sb::broker {

namespace m = sb::metrics;
using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

namespace {
// Messages read per wake-up; the rest wait for the next turn, after this
// turn's sends (the queues drain before more input is taken).
constexpr int kReadBatch = 512;

constexpr std::array<std::string_view, static_cast<size_t>(DropReason::kCount)> kDropNames = {
    "shed", "disconnect", "too_large"};
constexpr std::array<std::string_view, static_cast<size_t>(Refused::kCount)> kRefusedNames = {
    "bad_frame", "stranger", "duplicate", "bad_presence", "bad_rebind", "bad_seq"};
constexpr std::array<std::string_view, static_cast<size_t>(mesh::HelloDrop::kCount)>
    kHelloDropNames = {"topic", "meta", "over_limit"};
}  // namespace

// Reads the router at scrape time, under the loop's mutex.
class MeshServer::Collector : public prometheus::Collectable {
 public:
  explicit Collector(MeshServer* server) : s_(server) {}

  std::vector<MetricFamily> Collect() const override {
    std::lock_guard<std::mutex> lock(s_->mu_);
    const Router& r = s_->router_;
    const Router::Counters& c = r.counters();
    // A deque: Family() hands out references that are held while more
    // families are added, and a vector's growth would move them.
    std::deque<MetricFamily> out;
    MetricFamily& depth =
        Family(out, m::kQueueDepth, "Messages waiting in a queue", MetricType::Gauge);
    MetricFamily& bytes =
        Family(out, m::kQueueDepthBytes, "Bytes waiting in a queue", MetricType::Gauge);
    MetricFamily& credit =
        Family(out, m::kBrokerCredit, "Messages a shard may still be sent (credit it granted)",
               MetricType::Gauge);
    MetricFamily& in_flight =
        Family(out, m::kBrokerInFlight, "Messages sent to a shard and not yet credited back",
               MetricType::Gauge);
    // By shard name: a restarted shard is a new session while the old one
    // waits to expire, and one scrape must not hold two series with the
    // same labels; the old session's backlog is still that shard's.
    struct PerShard {
      double depth = 0, bytes = 0, credit = 0, in_flight = 0;
    };
    std::map<std::string, PerShard> shards;
    r.ForEachLink([&](const Router::LinkView& v) {
      PerShard& p = shards[v.shard];
      p.depth += static_cast<double>(v.queue.depth_messages());
      p.bytes += static_cast<double>(v.queue.depth_bytes());
      p.credit += static_cast<double>(v.queue.credit());
      p.in_flight += static_cast<double>(v.in_flight);
    });
    for (const auto& [shard, p] : shards) {
      Labels l = {{std::string(m::kLabelQueue), std::string(m::kQueueShardOut)},
                  {std::string(m::kLabelPeer), shard}};
      Add(depth, l, p.depth);
      Add(bytes, l, p.bytes);
      Labels peer = {{std::string(m::kLabelPeer), shard}};
      Add(credit, peer, p.credit);
      Add(in_flight, peer, p.in_flight);
    }
    {
      MetricFamily& f =
          Family(out, m::kQueueDelaySeconds, "Time a message waited in a queue before it was sent",
                 MetricType::Histogram);
      ClientMetric cm;
      cm.label = {{std::string(m::kLabelQueue), std::string(m::kQueueShardOut)}};
      uint64_t cumulative = 0;
      for (size_t i = 0; i < m::kQueueDelayBuckets.size(); ++i) {
        cumulative += s_->delays_.buckets[i];
        cm.histogram.bucket.push_back({cumulative, m::kQueueDelayBuckets[i]});
      }
      cm.histogram.bucket.push_back({s_->delays_.count, std::numeric_limits<double>::infinity()});
      cm.histogram.sample_count = s_->delays_.count;
      cm.histogram.sample_sum = s_->delays_.sum_seconds;
      f.metric.push_back(std::move(cm));
    }
    Counter(out, m::kBrokerPublishesTotal, "Publishes routed (duplicates excluded)", {},
            c.publishes);
    Counter(out, m::kBrokerRoutedTotal, "Deliveries queued, one per recipient shard", {}, c.routed);
    Counter(out, m::kBrokerDeliveredTotal, "Deliveries sent to shards", {}, c.delivered);
    {
      MetricFamily& f =
          Family(out, m::kBrokerDroppedTotal,
                 "Messages for a shard that were never sent, by reason", MetricType::Counter);
      for (size_t i = 0; i < kDropNames.size(); ++i) {
        Add(f, {{std::string(m::kLabelReason), std::string(kDropNames[i])}},
            static_cast<double>(c.dropped[i]));
      }
    }
    {
      MetricFamily& f = Family(out, m::kBrokerRefusedFramesTotal,
                               "Messages from shards not acted on, by reason", MetricType::Counter);
      for (size_t i = 0; i < kRefusedNames.size(); ++i) {
        Add(f, {{std::string(m::kLabelReason), std::string(kRefusedNames[i])}},
            static_cast<double>(c.refused[i]));
      }
    }
    {
      MetricFamily& f = Family(out, m::kBrokerHelloEntriesDroppedTotal,
                               "Entries of shards' hellos left out (the rest was taken), by reason",
                               MetricType::Counter);
      for (size_t i = 0; i < kHelloDropNames.size(); ++i) {
        Add(f, {{std::string(m::kLabelReason), std::string(kHelloDropNames[i])}},
            static_cast<double>(c.hello_dropped[i]));
      }
    }
    {
      MetricFamily& f = Family(out, m::kBrokerPresenceMessagesTotal,
                               "Presence messages queued to shards, by kind", MetricType::Counter);
      Add(f, {{std::string(m::kLabelKind), "diff"}}, static_cast<double>(c.diffs));
      Add(f, {{std::string(m::kLabelKind), "snapshot"}}, static_cast<double>(c.snapshots));
    }
    {
      MetricFamily& f =
          Family(out, m::kBrokerLinkEventsTotal,
                 "Shard sessions: hellos, rebinds, expiries, disconnects", MetricType::Counter);
      Add(f, {{std::string(m::kLabelEvent), "hello"}}, static_cast<double>(c.hellos));
      Add(f, {{std::string(m::kLabelEvent), "rebind"}}, static_cast<double>(c.rebinds));
      Add(f, {{std::string(m::kLabelEvent), "expired"}}, static_cast<double>(c.expired));
      Add(f, {{std::string(m::kLabelEvent), "disconnected"}}, static_cast<double>(c.disconnected));
      Add(f, {{std::string(m::kLabelEvent), "ack"}}, static_cast<double>(c.acks));
    }
    Gauge(out, m::kBrokerTopics, "Topics at least one shard subscribes", r.interests().topics());
    Gauge(out, m::kBrokerSubscriptions, "Shard-topic subscriptions", r.interests().subscriptions());
    Gauge(out, m::kBrokerPresences, "Presence metas held, all shards", r.presence().metas());
    // By name, as above: a restarted shard is one shard while its old
    // session waits to expire.
    Gauge(out, m::kBrokerConnectedShards, "Shards with a session", shards.size());
    // An epoch is a random 64-bit number; a double keeps its top 53 bits,
    // plenty to see it change.
    Gauge(out, m::kBrokerEpoch, "This broker's epoch (random per start)", r.epoch());
    {
      MetricFamily& f = Family(out, m::kEventLoopLagSeconds,
                               "How late the event loop ran its last due timer", MetricType::Gauge);
      Add(f, {}, static_cast<double>(s_->loop_lag_ns_) / 1e9);
    }
    return {std::make_move_iterator(out.begin()), std::make_move_iterator(out.end())};
  }

 private:
  using Labels = std::vector<ClientMetric::Label>;
  static MetricFamily& Family(std::deque<MetricFamily>& out, std::string_view name,
                              std::string_view help, MetricType type) {
    out.push_back(MetricFamily{std::string(name), std::string(help), type, {}});
    return out.back();
  }
  static void Add(MetricFamily& f, Labels labels, double v) {
    ClientMetric cm;
    cm.label = std::move(labels);
    if (f.type == MetricType::Counter) {
      cm.counter.value = v;
    } else {
      cm.gauge.value = v;
    }
    f.metric.push_back(std::move(cm));
  }
  static void Counter(std::deque<MetricFamily>& out, std::string_view name, std::string_view help,
                      Labels labels, uint64_t v) {
    Add(Family(out, name, help, MetricType::Counter), std::move(labels), static_cast<double>(v));
  }
  static void Gauge(std::deque<MetricFamily>& out, std::string_view name, std::string_view help,
                    uint64_t v) {
    Add(Family(out, name, help, MetricType::Gauge), {}, static_cast<double>(v));
  }
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
  loop_->SetBeforeSleep(nullptr);
}

void MeshServer::Send(const std::string& routing_id, const mesh::Message& msg) {
  const mesh::Frames frames(msg);
  out_frames_.assign(1, routing_id);
  out_frames_.insert(out_frames_.end(), frames.views().begin(), frames.views().end());
  SendFrames();
}

void MeshServer::SendPacked(const std::string& routing_id, std::string_view packed) {
  if (!mesh::Unpack(packed, &out_frames_).ok()) return;  // the router packed it: cannot happen
  out_frames_.insert(out_frames_.begin(), routing_id);
  SendFrames();
}

void MeshServer::SendFrames() {
  // False: the shard's connection is gone. Nothing to do here — its
  // heartbeats stop and the router expires it.
  (void)socket_->Send(out_frames_);
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

}  // namespace sb::broker
