#include "worker/worker_metrics.h"

#include <deque>
#include <iterator>
#include <limits>
#include <string_view>
#include <utility>
#include <vector>

#include "common/metric_names.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace sb::worker {

namespace m = ::sb::metrics;

struct WorkerMetrics::Histogram {
  static constexpr size_t kBuckets = m::kWorkerDeliverLatencyBuckets.size();
  std::array<std::atomic<uint64_t>, kBuckets + 1> counts{};  // last: +Inf
  std::atomic<uint64_t> sum_ns{0};
};

namespace {

constexpr std::array<std::string_view, static_cast<size_t>(CloseReason::kCount)> kCloseNames = {
    "client",  "idle_timeout",     "slow_consumer", "protocol_error", "invalid_payload",
    "too_big", "unsupported_data", "shutdown",      "io_error",       "message_timeout"};
constexpr std::array<std::string_view, static_cast<size_t>(Refusal::kCount)> kRefusalNames = {
    "not_found", "bad_request", "method_not_allowed", "forbidden", "unauthorized", "overloaded",
    "draining",  "timeout",     "address_limit"};
constexpr std::array<std::string_view, static_cast<size_t>(Rejection::kCount)> kRejectionNames = {
    "rate_limited", "unmatched_topic", "reserved_event", "stale_join_ref"};

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

class Collector : public prometheus::Collectable {
 public:
  Collector(std::string shard, std::shared_ptr<WorkerCounters> c,
            std::shared_ptr<WorkerMetrics::Histogram> h)
      : shard_(std::move(shard)), c_(std::move(c)), h_(std::move(h)) {}

  std::vector<MetricFamily> Collect() const override {
    // A deque: Family() hands out references that are held while more
    // families are added, and a vector's growth would move them.
    std::deque<MetricFamily> out;
    const WorkerCounters& c = *c_;
    Gauge(out, m::kWorkerConnections, "Open WebSocket connections", c.connections);
    Counter(out, m::kWorkerConnectionsAcceptedTotal, "TCP connections accepted",
            c.connections_accepted);
    Gauge(out, m::kWorkerSockets, "TCP connections held in any state", c.sockets);
    Labelled(out, m::kWorkerUpgradesRefusedTotal, "HTTP requests answered without an upgrade",
             m::kLabelReason, kRefusalNames, c.refusals);
    {
      MetricFamily& f =
          Family(out, m::kWorkerJoinsTotal, "phx_join requests by outcome", MetricType::Counter);
      AddCounter(f, {{std::string(m::kLabelResult), "ok"}}, c.joins_ok);
      AddCounter(f, {{std::string(m::kLabelResult), "unauthorized"}}, c.joins_unauthorized);
      AddCounter(f, {{std::string(m::kLabelResult), "too_many_topics"}}, c.joins_too_many);
      AddCounter(f, {{std::string(m::kLabelResult), "invalid_presence"}}, c.joins_invalid_presence);
      AddCounter(f, {{std::string(m::kLabelResult), "rate_limited"}}, c.joins_rate_limited);
      AddCounter(f, {{std::string(m::kLabelResult), "presence_too_large"}},
                 c.joins_presence_too_large);
    }
    Counter(out, m::kWorkerFramesReceivedTotal, "WebSocket messages received", c.frames_received);
    Counter(out, m::kWorkerFramesSentTotal, "WebSocket frames sent", c.frames_sent);
    Counter(out, m::kWorkerReceivedBytesTotal, "Bytes read from client sockets", c.bytes_received);
    Counter(out, m::kWorkerSentBytesTotal, "Bytes written to client sockets", c.bytes_sent);
    Counter(out, m::kWorkerBroadcastsTotal, "Client events relayed to a topic", c.broadcasts);
    Counter(out, m::kWorkerDeliveriesTotal, "Broadcast frames queued to recipient sockets",
            c.deliveries);
    Labelled(out, m::kWorkerClosesTotal, "WebSocket connections closed, by reason", m::kLabelReason,
             kCloseNames, c.closes);
    Labelled(out, m::kWorkerRejectedMessagesTotal,
             "Client messages refused or dropped without closing the socket", m::kLabelReason,
             kRejectionNames, c.rejections);
    Gauge(out, m::kWorkerClientQueueBytes, "Bytes queued to client sockets, all sockets",
          c.client_queue_bytes);
    Gauge(out, m::kWorkerClientQueueMaxBytes, "Bytes queued to the most backed-up client socket",
          c.client_queue_max_bytes);
    Gauge(out, m::kWorkerBlockedSockets, "Client sockets whose kernel send buffer is full",
          c.blocked_sockets);
    Gauge(out, m::kWorkerResidentMemoryBytes, "Resident set size of the shard", c.resident_bytes);
    {
      MetricFamily& depth =
          Family(out, m::kQueueDepth, "Messages waiting in a queue", MetricType::Gauge);
      MetricFamily& bytes =
          Family(out, m::kQueueDepthBytes, "Bytes waiting in a queue", MetricType::Gauge);
      AddGauge(bytes, {{std::string(m::kLabelQueue), std::string(m::kQueueClientOut)}},
               c.client_queue_bytes);
      if (c.clustered.load(std::memory_order_relaxed)) {
        AddGauge(depth, {{std::string(m::kLabelQueue), std::string(m::kQueueBrokerOut)}},
                 c.broker_out_messages);
        AddGauge(bytes, {{std::string(m::kLabelQueue), std::string(m::kQueueBrokerOut)}},
                 c.broker_out_bytes);
        AddGauge(depth, {{std::string(m::kLabelQueue), std::string(m::kQueueBrokerIn)}},
                 c.broker_in_messages);
      }
    }
    if (c.clustered.load(std::memory_order_relaxed)) {
      Gauge(out, m::kWorkerBrokerUp, "1 while the shard is welcomed by its broker", c.broker_up);
      Gauge(out, m::kWorkerBrokerEpoch, "Epoch of the broker that last welcomed the shard",
            c.broker_epoch);
      Counter(out, m::kWorkerBroadcastsRefusedTotal,
              "Client broadcasts refused because the outbox to the broker was full",
              c.broadcasts_refused);
      MetricFamily& f =
          Family(out, m::kWorkerClusterMessagesTotal,
                 "Mesh messages of the shard's broker session, by kind", MetricType::Counter);
      auto kind = [&](const char* k, const std::atomic<uint64_t>& v) {
        AddCounter(f, {{std::string(m::kLabelKind), k}}, v);
      };
      kind("published", c.cluster_published);
      kind("acked", c.cluster_acked);
      kind("delivered", c.cluster_delivered);
      kind("duplicate", c.cluster_duplicates);
      kind("presence", c.cluster_presence);
      kind("hello", c.cluster_hellos);
      kind("epoch_change", c.cluster_epoch_changes);
      kind("broker_lost", c.cluster_broker_lost);
      kind("bad_frame", c.cluster_bad_frames);
    }
    {
      MetricFamily& f = Family(out, m::kEventLoopLagSeconds,
                               "How late the event loop ran its last due timer", MetricType::Gauge);
      ClientMetric cm;
      cm.label = Labels({});
      cm.gauge.value = static_cast<double>(c.loop_lag_ns.load(std::memory_order_relaxed)) / 1e9;
      f.metric.push_back(std::move(cm));
    }
    {
      MetricFamily& f = Family(out, m::kWorkerDeliverLatencySeconds,
                               "Client message read to broadcast handed to every local recipient",
                               MetricType::Histogram);
      ClientMetric cm;
      cm.label = Labels({});
      uint64_t cumulative = 0;
      for (size_t i = 0; i <= WorkerMetrics::Histogram::kBuckets; ++i) {
        cumulative += h_->counts[i].load(std::memory_order_relaxed);
        ClientMetric::Bucket b;
        b.cumulative_count = cumulative;
        b.upper_bound = i < WorkerMetrics::Histogram::kBuckets
                            ? m::kWorkerDeliverLatencyBuckets[i]
                            : std::numeric_limits<double>::infinity();
        cm.histogram.bucket.push_back(b);
      }
      cm.histogram.sample_count = cumulative;
      cm.histogram.sample_sum =
          static_cast<double>(h_->sum_ns.load(std::memory_order_relaxed)) / 1e9;
      f.metric.push_back(std::move(cm));
    }
    return {std::make_move_iterator(out.begin()), std::make_move_iterator(out.end())};
  }

 private:
  std::vector<ClientMetric::Label> Labels(std::vector<ClientMetric::Label> extra) const {
    extra.insert(extra.begin(), {std::string(m::kLabelShard), shard_});
    return extra;
  }
  static MetricFamily& Family(std::deque<MetricFamily>& out, std::string_view name,
                              std::string_view help, MetricType type) {
    out.push_back(MetricFamily{std::string(name), std::string(help), type, {}});
    return out.back();
  }
  template <typename T>
  void AddCounter(MetricFamily& f, std::vector<ClientMetric::Label> extra,
                  const std::atomic<T>& v) const {
    ClientMetric cm;
    cm.label = Labels(std::move(extra));
    cm.counter.value = static_cast<double>(v.load(std::memory_order_relaxed));
    f.metric.push_back(std::move(cm));
  }
  template <typename T>
  void AddGauge(MetricFamily& f, std::vector<ClientMetric::Label> extra,
                const std::atomic<T>& v) const {
    ClientMetric cm;
    cm.label = Labels(std::move(extra));
    cm.gauge.value = static_cast<double>(v.load(std::memory_order_relaxed));
    f.metric.push_back(std::move(cm));
  }
  template <typename T>
  void Counter(std::deque<MetricFamily>& out, std::string_view name, std::string_view help,
               const std::atomic<T>& v) const {
    AddCounter(Family(out, name, help, MetricType::Counter), {}, v);
  }
  template <typename T>
  void Gauge(std::deque<MetricFamily>& out, std::string_view name, std::string_view help,
             const std::atomic<T>& v) const {
    AddGauge(Family(out, name, help, MetricType::Gauge), {}, v);
  }
  template <typename Names, typename Values>
  void Labelled(std::deque<MetricFamily>& out, std::string_view name, std::string_view help,
                std::string_view label, const Names& names, const Values& values) const {
    MetricFamily& f = Family(out, name, help, MetricType::Counter);
    for (size_t i = 0; i < names.size(); ++i) {
      AddCounter(f, {{std::string(label), std::string(names[i])}}, values[i]);
    }
  }

  std::string shard_;
  std::shared_ptr<WorkerCounters> c_;
  std::shared_ptr<WorkerMetrics::Histogram> h_;
};

}  // namespace

WorkerMetrics::WorkerMetrics(std::string shard)
    : counters_(std::make_shared<WorkerCounters>()), latency_(std::make_shared<Histogram>()) {
  collectable_ = std::make_shared<Collector>(std::move(shard), counters_, latency_);
}

WorkerMetrics::~WorkerMetrics() = default;

void WorkerMetrics::ObserveDeliverLatency(int64_t ns) {
  const double s = static_cast<double>(ns) / 1e9;
  size_t i = 0;
  while (i < Histogram::kBuckets && s > m::kWorkerDeliverLatencyBuckets[i]) ++i;
  latency_->counts[i].fetch_add(1, std::memory_order_relaxed);
  latency_->sum_ns.fetch_add(static_cast<uint64_t>(ns > 0 ? ns : 0), std::memory_order_relaxed);
}

}  // namespace sb::worker
