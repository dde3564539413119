// WorkerMetrics: what a shard counts, and the collectable that shows it.
//
// Owns: the shard's counters and gauges as relaxed atomics, a fixed-bucket
// latency histogram, and a prometheus-cpp Collectable that turns them into
// metric families at scrape time (on a civetweb thread). Why not
// prometheus-cpp's own Counter objects: their Increment is a
// compare-and-swap loop on a double, paid on the hot path; here the loop
// thread adds integers (once per batch, e.g. once per broadcast for all its
// deliveries) and scrapes read them as they are, with no lag.
// Does not: serve HTTP (common/metrics_endpoint) or decide anything.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "worker/auth.h"
#include "worker/http_api.h"
#include "worker/reasons.h"
#include "worker/static_files.h"

namespace prometheus {
class Collectable;
}

namespace sb::worker {

struct WorkerCounters {
  template <typename T>
  using A = std::atomic<T>;
  A<uint64_t> connections_accepted{0};
  A<int64_t> connections{0};
  A<int64_t> sockets{0};  // all states: HTTP, open, closing
  A<uint64_t> frames_received{0}, frames_sent{0}, bytes_received{0}, bytes_sent{0};
  A<uint64_t> broadcasts{0}, deliveries{0};
  A<uint64_t> joins_ok{0}, joins_unauthorized{0}, joins_too_many{0}, joins_invalid_topic{0},
      joins_invalid_presence{0}, joins_rate_limited{0}, joins_presence_too_large{0};
  std::array<A<uint64_t>, static_cast<size_t>(CloseReason::kCount)> closes{};
  std::array<A<uint64_t>, static_cast<size_t>(Refusal::kCount)> refusals{};
  std::array<A<uint64_t>, static_cast<size_t>(TokenFailure::kCount)> token_refusals{};
  std::array<A<uint64_t>, static_cast<size_t>(Rejection::kCount)> rejections{};
  A<int64_t> client_queue_bytes{0}, client_queue_max_bytes{0}, resident_bytes{0};
  A<int64_t> blocked_sockets{0};
  A<int64_t> loop_lag_ns{0};
  // The link to the broker (cluster only; written once per loop turn).
  A<int64_t> broker_up{0};
  A<uint64_t> broker_epoch{0};
  A<uint64_t> broker_out_messages{0}, broker_out_bytes{0}, broker_in_messages{0};
  A<uint64_t> cluster_published{0}, cluster_acked{0}, cluster_delivered{0}, cluster_duplicates{0},
      cluster_presence{0}, cluster_hellos{0}, cluster_connects{0}, cluster_epoch_changes{0},
      cluster_broker_lost{0}, cluster_broker_back{0}, cluster_bad_frames{0}, cluster_too_large{0},
      cluster_origins_forgotten{0}, cluster_keys_left_out{0};
  A<uint64_t> broadcasts_refused{0};
  A<uint64_t> remote_presence_metas{0}, remote_presence_bytes{0};
  std::array<A<uint64_t>, kStaticStatuses.size()> static_requests{};  // by StaticStatusIndex
  A<bool> clustered{false};
  // HTTP API requests answered, by endpoint and status (kApiStatuses).
  std::array<std::array<A<uint64_t>, kApiStatuses.size()>, static_cast<size_t>(ApiEndpoint::kCount)>
      api_requests{};
  A<bool> api_on{false};
  // History (docs/WORKER.md, History).
  A<bool> history_on{false};
  A<uint64_t> history_messages{0}, history_bytes{0}, history_topics{0};
  // Per topic family (a --history rule; the last slot adds up any beyond
  // it). The names are set before the metrics endpoint starts.
  static constexpr size_t kMaxHistoryFamilies = 16;
  std::array<std::string, kMaxHistoryFamilies> history_family_names{};
  size_t history_families = 0;
  std::array<A<uint64_t>, kMaxHistoryFamilies> history_family_messages{}, history_family_bytes{};
  std::array<A<uint64_t>, 6> history_recoveries{};  // by Recovery (worker/history.h)
  A<uint64_t> history_recovered_messages{0}, history_resets{0};
  A<uint64_t> history_gaps_filled{0}, history_gaps_unfillable{0}, history_duplicates{0},
      history_fetches{0};
};

// Where a delivered broadcast was published: on this shard (from a client's
// message read here to its frame handed to every local recipient), or on
// another shard (from the read on that shard, through the broker, to the
// frame handed to this shard's recipients: the whole publish → deliver path),
// or on this shard on a topic that keeps history (the read, the broker's
// sequencing and the way back, to the frames handed to the local
// recipients and the sender's ok: the price of sequencing).
enum class DeliverSource : uint8_t { kLocal, kCluster, kSequenced, kCount };

class WorkerMetrics {
 public:
  explicit WorkerMetrics(std::string shard);
  ~WorkerMetrics();

  WorkerCounters& counters() { return *counters_; }
  // Adds one observation to the deliver-latency histogram of `source`.
  void ObserveDeliverLatency(DeliverSource source, int64_t nanoseconds);
  // For MetricsEndpoint::Register.
  std::shared_ptr<prometheus::Collectable> collectable() const { return collectable_; }

  struct Latencies;  // per DeliverSource, fixed buckets of atomics (worker_metrics.cc)

  void AddClose(CloseReason r) { Add(counters_->closes, r); }
  void AddRefusal(Refusal r) { Add(counters_->refusals, r); }
  void AddTokenRefusal(TokenFailure f) { Add(counters_->token_refusals, f); }
  void AddStaticRequest(int status) {
    counters_->static_requests[StaticStatusIndex(status)].fetch_add(1, std::memory_order_relaxed);
  }
  void AddApiRequest(ApiEndpoint e, int status) {
    counters_->api_requests[static_cast<size_t>(e)][ApiStatusIndex(status)].fetch_add(
        1, std::memory_order_relaxed);
  }

 private:
  template <typename Arr, typename E>
  static void Add(Arr& a, E e) {
    a[static_cast<size_t>(e)].fetch_add(1, std::memory_order_relaxed);
  }
  std::shared_ptr<WorkerCounters> counters_;
  std::shared_ptr<prometheus::Collectable> collectable_;
  std::shared_ptr<Latencies> latency_;
};

}  // namespace sb::worker
