// ClientProcess: one forked client process of bench-ws-load, and what it
// tells the parent.
//
// Owns: `count` WsClient connections (or the publisher's one) opened from one
// source address with at most `inflight` handshakes (connect -> join reply)
// in flight, its single-threaded epoll loop, and the counters and latency
// histogram it reports. Does not: start the worker or other processes, or
// print. Talks to the parent over one stream socket: Commands in, two Reports
// out (kJoined after the connect phase, kFinal at the end). Every wait ends by
// `deadline_ns` (CLOCK_MONOTONIC, which all processes share). Construct it on
// the heap: it carries a 64 KiB read buffer.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "bench/io_util.h"
#include "bench/ws_client.h"

namespace sb::bench {

// Log-linear histogram of nanoseconds: exact below 64, then 32 buckets per
// power of two (relative error under 3%), saturating at 2^40 ns. Plain data,
// so it crosses the pipe as bytes.
struct Histogram {
  static constexpr int kSub = 32;
  static constexpr int kMaxExp = 40;
  static constexpr int kBuckets = 64 + (kMaxExp - 6) * kSub;
  uint64_t n[kBuckets] = {};

  static int Bucket(uint64_t v) {
    if (v < 64) return static_cast<int>(v);
    int e = 63 - __builtin_clzll(v);
    if (e >= kMaxExp) return kBuckets - 1;
    return 64 + (e - 6) * kSub + static_cast<int>((v >> (e - 5)) & (kSub - 1));
  }
  void Add(uint64_t v) { ++n[Bucket(v)]; }
  void Merge(const Histogram& o);
  // The midpoint of the bucket holding the p-th percentile (0 when empty).
  double Percentile(double p) const;
};

// Child -> parent, once after the connect phase (kJoined) and once at the end
// (kFinal). Counters are cumulative.
struct Report {
  enum Kind : uint32_t { kJoined = 1, kFinal = 2 };
  uint32_t kind = 0;
  uint64_t joined = 0, failed_connect = 0, failed_upgrade = 0, failed_accept = 0;
  uint64_t failed_join = 0, failed_other = 0, closed_after_join = 0, last_join_ns = 0;
  uint64_t held = 0;        // kFinal: joined sockets still open when told to stop
  uint64_t unfinished = 0;  // kFinal: never joined nor failed (a deadline passed)
  uint64_t deliveries = 0, min_per_socket = 0, max_per_socket = 0, last_delivery_ns = 0;
  uint64_t unparsed = 0;  // broadcasts without a readable "t"
  uint64_t sent = 0, acked = 0, nacked = 0, first_send_ns = 0, last_send_ns = 0;
  uint32_t last_http_status = 0, last_close_code = 0;
  Histogram latency;
};

// Parent -> child.
struct Command {
  char op = 0;  // 'g' publish (publisher), 's' stop, 'd' drain to `target` per socket then stop
  uint64_t target = 0;
};

enum class ClientRole { kIdle, kSubscriber, kPublisher };

struct ClientConfig {
  ClientRole role = ClientRole::kIdle;
  int first = 0;  // global index of the first connection (idle topics: idle:<i % 100>)
  int count = 0;
  in_addr_t source = 0;  // network byte order
  uint16_t port = 0;     // the worker's, on 127.0.0.1
  int inflight = 500;
  double rate = 0;  // publisher: pushes per second, 0 = window-limited
  int window = 64;  // publisher at rate 0: unacknowledged pushes at most
  double duration = 10;
  int payload_bytes = 64;
  uint64_t deadline_ns = 0;
};

class ClientProcess {
 public:
  // `ctl` is the process's end of the socket to the parent.
  ClientProcess(const ClientConfig& config, int ctl);
  ClientProcess(const ClientProcess&) = delete;
  ClientProcess& operator=(const ClientProcess&) = delete;

  // The whole life of the process: connect and join, report, obey commands
  // until stopped (or the deadline, or the parent's EOF), report, close.
  // Returns the exit code.
  int Run();

 private:
  enum class Phase : uint8_t { kPending, kHandshake, kJoined, kDone };

  std::string Topic(size_t i) const;
  void ConnectAll();
  void Dispatch(int timeout_ms);
  void ReadCommand();
  void OnMessage(size_t i, std::string_view msg);
  void Ended(size_t i);
  void Publish();
  void Drain(uint64_t target);
  int Finish();

  const ClientConfig config_;
  const int ctl_;
  Rng rng_;
  int epfd_ = -1;
  sockaddr_in src_{}, dst_{};
  std::string host_;
  std::vector<WsClient> conns_;
  std::vector<Phase> phase_;
  std::vector<uint64_t> delivered_;  // subscribers: per socket
  size_t joined_ = 0, done_before_join_ = 0;
  bool have_cmd_ = false, parent_gone_ = false;
  Command cmd_;
  Report report_;
  char buf_[65536];
};

}  // namespace sb::bench
