#include "worker/worker_metrics.h"

#include <string_view>
#include <utility>
#include <vector>

#include "common/metric_families.h"
#include "common/metric_names.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace sb::worker {

namespace m = ::sb::metrics;

struct WorkerMetrics::Latencies {
  static constexpr size_t kBuckets = m::kWorkerDeliverLatencyBuckets.size();
  struct Histogram {
    std::array<std::atomic<uint64_t>, kBuckets + 1> counts{};  // last: +Inf
    std::atomic<uint64_t> sum_ns{0};
  };
  std::array<Histogram, static_cast<size_t>(DeliverSource::kCount)> by_source;
};

namespace {

constexpr std::array<std::string_view, static_cast<size_t>(CloseReason::kCount)> kCloseNames = {
    "client",  "idle_timeout",     "slow_consumer", "protocol_error", "invalid_payload",
    "too_big", "unsupported_data", "shutdown",      "io_error",       "message_timeout"};
constexpr std::array<std::string_view, static_cast<size_t>(Refusal::kCount)> kRefusalNames = {
    "not_found",    "bad_request", "method_not_allowed", "forbidden", "forbidden_origin",
    "unauthorized", "overloaded",  "draining",           "timeout",   "address_limit"};
constexpr std::array<std::string_view, static_cast<size_t>(TokenFailure::kCount)>
    kTokenFailureNames = {"missing", "malformed",     "algorithm", "signature", "claims",
                          "expired", "not_yet_valid", "audience",  "issuer",    "error"};
constexpr std::array<std::string_view, static_cast<size_t>(DeliverSource::kCount)> kSourceNames = {
    "local", "cluster", "sequenced"};
// By Recovery (worker/history.h), in its order.
constexpr std::array<std::string_view, 6> kRecoveryNames = {"not_asked", "recovered", "other_epoch",
                                                            "too_old",   "too_many",  "ahead"};
constexpr std::array<std::string_view, static_cast<size_t>(Rejection::kCount)> kRejectionNames = {
    "rate_limited", "unmatched_topic", "reserved_event", "stale_join_ref"};
constexpr std::array<std::string_view, kStaticStatuses.size()> kStaticStatusNames = {
    "200", "304", "400", "403", "404", "405", "500"};

using prometheus::MetricFamily;
using prometheus::MetricType;

template <typename T>
double Load(const std::atomic<T>& v) {
  return static_cast<double>(v.load(std::memory_order_relaxed));
}

class Collector : public prometheus::Collectable {
 public:
  Collector(std::string shard, std::shared_ptr<WorkerCounters> c,
            std::shared_ptr<WorkerMetrics::Latencies> h)
      : shard_(std::move(shard)), c_(std::move(c)), h_(std::move(h)) {}

  std::vector<MetricFamily> Collect() const override {
    MetricFamilies out(m::kLabelShard, shard_);
    out.BuildInfo();
    const WorkerCounters& c = *c_;
    out.Gauge(m::kWorkerConnections, "Open WebSocket connections", Load(c.connections));
    out.Counter(m::kWorkerConnectionsAcceptedTotal, "TCP connections accepted",
                Load(c.connections_accepted));
    out.Gauge(m::kWorkerSockets, "TCP connections held in any state", Load(c.sockets));
    out.CounterPerLabel(m::kWorkerUpgradesRefusedTotal, "HTTP requests answered without an upgrade",
                        m::kLabelReason, kRefusalNames,
                        [&](size_t i) { return Load(c.refusals[i]); });
    out.CounterPerLabel(m::kWorkerStaticRequestsTotal, "Requests answered from --static files",
                        m::kLabelStatus, kStaticStatusNames,
                        [&](size_t i) { return Load(c.static_requests[i]); });
    out.CounterPerLabel(
        m::kWorkerTokenRefusalsTotal, "Upgrades refused for their token, by the check that failed",
        m::kLabelReason, kTokenFailureNames, [&](size_t i) { return Load(c.token_refusals[i]); });
    {
      MetricFamily& f =
          out.Family(m::kWorkerJoinsTotal, "phx_join requests by outcome", MetricType::Counter);
      auto result = [&](const char* r, const std::atomic<uint64_t>& v) {
        out.Add(f, {{std::string(m::kLabelResult), r}}, Load(v));
      };
      result("ok", c.joins_ok);
      result("unauthorized", c.joins_unauthorized);
      result("too_many_topics", c.joins_too_many);
      result("invalid_topic", c.joins_invalid_topic);
      result("invalid_presence", c.joins_invalid_presence);
      result("rate_limited", c.joins_rate_limited);
      result("presence_too_large", c.joins_presence_too_large);
    }
    out.Counter(m::kWorkerFramesReceivedTotal, "WebSocket messages received",
                Load(c.frames_received));
    out.Counter(m::kWorkerFramesSentTotal, "WebSocket frames sent", Load(c.frames_sent));
    out.Counter(m::kWorkerReceivedBytesTotal, "Bytes read from client sockets",
                Load(c.bytes_received));
    out.Counter(m::kWorkerSentBytesTotal, "Bytes written to client sockets", Load(c.bytes_sent));
    out.Counter(m::kWorkerBroadcastsTotal, "Client events relayed to a topic", Load(c.broadcasts));
    out.Counter(m::kWorkerDeliveriesTotal, "Broadcast frames queued to recipient sockets",
                Load(c.deliveries));
    out.CounterPerLabel(m::kWorkerClosesTotal, "WebSocket connections closed, by reason",
                        m::kLabelReason, kCloseNames, [&](size_t i) { return Load(c.closes[i]); });
    out.CounterPerLabel(m::kWorkerRejectedMessagesTotal,
                        "Client messages refused or dropped without closing the socket",
                        m::kLabelReason, kRejectionNames,
                        [&](size_t i) { return Load(c.rejections[i]); });
    out.Gauge(m::kWorkerClientQueueBytes, "Bytes queued to client sockets, all sockets",
              Load(c.client_queue_bytes));
    out.Gauge(m::kWorkerClientQueueMaxBytes, "Bytes queued to the most backed-up client socket",
              Load(c.client_queue_max_bytes));
    out.Gauge(m::kWorkerBlockedSockets, "Client sockets whose kernel send buffer is full",
              Load(c.blocked_sockets));
    out.Gauge(m::kWorkerResidentMemoryBytes, "Resident set size of the shard",
              Load(c.resident_bytes));
    {
      MetricFamily& depth =
          out.Family(m::kQueueDepth, "Messages waiting in a queue", MetricType::Gauge);
      MetricFamily& bytes =
          out.Family(m::kQueueDepthBytes, "Bytes waiting in a queue", MetricType::Gauge);
      auto queue = [](std::string_view q) {
        return MetricFamilies::Labels{{std::string(m::kLabelQueue), std::string(q)}};
      };
      out.Add(bytes, queue(m::kQueueClientOut), Load(c.client_queue_bytes));
      if (c.clustered.load(std::memory_order_relaxed)) {
        out.Add(depth, queue(m::kQueueBrokerOut), Load(c.broker_out_messages));
        out.Add(bytes, queue(m::kQueueBrokerOut), Load(c.broker_out_bytes));
        out.Add(depth, queue(m::kQueueBrokerIn), Load(c.broker_in_messages));
      }
    }
    if (c.clustered.load(std::memory_order_relaxed)) {
      out.Gauge(m::kWorkerBrokerUp, "1 while the shard is welcomed by its broker",
                Load(c.broker_up));
      out.Gauge(m::kWorkerBrokerEpoch, "Epoch of the broker that last welcomed the shard",
                Load(c.broker_epoch));
      out.Counter(m::kWorkerBroadcastsRefusedTotal,
                  "Client broadcasts refused because the outbox to the broker was full",
                  Load(c.broadcasts_refused));
      out.Gauge(m::kWorkerRemotePresenceMetas,
                "Other shards' presence metas held for this shard's topics",
                Load(c.remote_presence_metas));
      out.Gauge(m::kWorkerRemotePresenceBytes,
                "Bytes of the other shards' presence held (keys, phx_refs and metas' JSON)",
                Load(c.remote_presence_bytes));
      MetricFamily& f =
          out.Family(m::kWorkerClusterMessagesTotal,
                     "Mesh messages of the shard's broker session, by kind", MetricType::Counter);
      auto kind = [&](const char* k, const std::atomic<uint64_t>& v) {
        out.Add(f, {{std::string(m::kLabelKind), k}}, Load(v));
      };
      kind("published", c.cluster_published);
      kind("acked", c.cluster_acked);
      kind("delivered", c.cluster_delivered);
      kind("duplicate", c.cluster_duplicates);
      kind("presence", c.cluster_presence);
      kind("hello", c.cluster_hellos);
      kind("connect", c.cluster_connects);
      kind("epoch_change", c.cluster_epoch_changes);
      kind("broker_lost", c.cluster_broker_lost);
      kind("broker_back", c.cluster_broker_back);
      kind("bad_frame", c.cluster_bad_frames);
      kind("too_large", c.cluster_too_large);
      kind("origin_forgotten", c.cluster_origins_forgotten);
      kind("key_left_out", c.cluster_keys_left_out);
    }
    if (c.api_on.load(std::memory_order_relaxed)) {
      MetricFamily& f =
          out.Family(m::kWorkerApiRequestsTotal,
                     "HTTP API requests answered, by endpoint and status", MetricType::Counter);
      for (size_t e = 0; e < kApiEndpointNames.size(); ++e) {
        for (size_t s = 0; s < kApiStatuses.size(); ++s) {
          out.Add(f,
                  {{std::string(m::kLabelEndpoint), std::string(kApiEndpointNames[e])},
                   {std::string(m::kLabelStatus), std::to_string(kApiStatuses[s])}},
                  Load(c.api_requests[e][s]));
        }
      }
    }
    if (c.history_on.load(std::memory_order_relaxed)) {
      MetricFamily& held = out.Family(m::kWorkerHistoryMessages,
                                      "History messages this shard holds copies of, by topic "
                                      "family (--history rule)",
                                      MetricType::Gauge);
      MetricFamily& bytes = out.Family(
          m::kWorkerHistoryBytes, "Bytes of the history copies this shard holds, by topic family",
          MetricType::Gauge);
      for (size_t i = 0; i < c.history_families; ++i) {
        const MetricFamilies::Labels family = {
            {std::string(m::kLabelFamily), c.history_family_names[i]}};
        out.Add(held, family, Load(c.history_family_messages[i]));
        out.Add(bytes, family, Load(c.history_family_bytes[i]));
      }
      out.Gauge(m::kWorkerHistoryTopics, "Topics this shard holds history copies of",
                Load(c.history_topics));
      out.CounterPerLabel(m::kWorkerHistoryRecoveriesTotal,
                          "Joins of history topics answered, by result (recovered: true, or why "
                          "not)",
                          m::kLabelResult, kRecoveryNames,
                          [&](size_t i) { return Load(c.history_recoveries[i]); });
      out.Counter(m::kWorkerHistoryRecoveredMessagesTotal,
                  "Messages pushed to rejoining clients from history",
                  Load(c.history_recovered_messages));
      MetricFamily& gaps =
          out.Family(m::kWorkerHistoryGapsTotal,
                     "Holes in a topic's offsets this shard saw, by outcome", MetricType::Counter);
      out.Add(gaps, {{std::string(m::kLabelResult), "filled"}}, Load(c.history_gaps_filled));
      out.Add(gaps, {{std::string(m::kLabelResult), "unfillable"}},
              Load(c.history_gaps_unfillable));
      out.Counter(m::kWorkerHistoryResetsTotal,
                  "Topics whose channels got phx_error (another epoch, or a gap nobody could fill)",
                  Load(c.history_resets));
      out.Counter(m::kWorkerHistoryDuplicatesTotal,
                  "Sequenced deliveries dropped as already delivered (by offset)",
                  Load(c.history_duplicates));
      out.Counter(m::kWorkerHistoryFetchesTotal, "History fetches sent to the broker",
                  Load(c.history_fetches));
    }
    out.Gauge(m::kEventLoopLagSeconds, "How late the event loop ran its last due timer",
              Load(c.loop_lag_ns) / 1e9);
    MetricFamily& f = out.Family(m::kWorkerDeliverLatencySeconds,
                                 "Client message read (on this shard, or another: source) to "
                                 "broadcast handed to every recipient on this shard",
                                 MetricType::Histogram);
    for (size_t s = 0; s < kSourceNames.size(); ++s) {
      // Each bucket is read once; the total is their sum, so a scrape
      // racing an observation still sees a consistent histogram.
      const WorkerMetrics::Latencies::Histogram& h = h_->by_source[s];
      constexpr size_t kBuckets = WorkerMetrics::Latencies::kBuckets;
      std::array<uint64_t, kBuckets> counts{};
      uint64_t total = 0;
      for (size_t i = 0; i < kBuckets; ++i) {
        counts[i] = h.counts[i].load(std::memory_order_relaxed);
        total += counts[i];
      }
      total += h.counts[kBuckets].load(std::memory_order_relaxed);
      out.AddHistogram(f, {{"source", std::string(kSourceNames[s])}},
                       m::kWorkerDeliverLatencyBuckets, counts, total, Load(h.sum_ns) / 1e9);
    }
    return std::move(out).Take();
  }

 private:
  std::string shard_;
  std::shared_ptr<WorkerCounters> c_;
  std::shared_ptr<WorkerMetrics::Latencies> h_;
};

}  // namespace

WorkerMetrics::WorkerMetrics(std::string shard)
    : counters_(std::make_shared<WorkerCounters>()), latency_(std::make_shared<Latencies>()) {
  collectable_ = std::make_shared<Collector>(std::move(shard), counters_, latency_);
}

WorkerMetrics::~WorkerMetrics() = default;

void WorkerMetrics::ObserveDeliverLatency(DeliverSource source, int64_t ns) {
  const double s = static_cast<double>(ns) / 1e9;
  size_t i = 0;
  while (i < Latencies::kBuckets && s > m::kWorkerDeliverLatencyBuckets[i]) ++i;
  Latencies::Histogram& h = latency_->by_source[static_cast<size_t>(source)];
  h.counts[i].fetch_add(1, std::memory_order_relaxed);
  h.sum_ns.fetch_add(static_cast<uint64_t>(ns > 0 ? ns : 0), std::memory_order_relaxed);
}

}  // namespace sb::worker
