// PresenceClients: one forked client process of bench-node-scale: many
// WebSocket connections, each joined to one topic with a presence, that
// reconnect and rejoin like phoenix.js when their socket closes.
//
// Owns: `count` WsClient connections from one source address, their join and
// reconnect state (phoenix.js's reconnectAfterMs back-off: 10, 50, 100, 150,
// 200, 250, 500, 1000, 2000, then 5000 ms), its single-threaded epoll loop,
// and the counters and histograms it reports. Does not: start or kill the
// node, or print. Talks to the parent over one stream socket: NodeCommands in,
// NodeReports out (one after the connect phase, one per query, one at the
// end). Every wait ends by `deadline_ns` (CLOCK_MONOTONIC, shared by all
// processes, so the parent's kill time is comparable with ours). Construct it
// on the heap: it carries a 64 KiB read buffer.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <queue>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bench/client_process.h"
#include "bench/io_util.h"
#include "bench/ws_client.h"

namespace sb::bench {

// Child -> parent. Counters are cumulative.
struct NodeReport {
  enum Kind : uint32_t { kJoined = 1, kStatus = 2, kFinal = 3 };
  uint32_t kind = 0;
  uint64_t joined_first = 0;  // connections joined at least once
  uint64_t held = 0;          // joined and open now
  uint64_t last_first_join_ns = 0;
  // Failed attempts (each retried with the back-off): connect, an HTTP
  // status other than 101 (the last in last_http_status), a refused join,
  // anything else that closed a socket before its join reply.
  uint64_t failed_connect = 0, failed_upgrade = 0, failed_join = 0, failed_other = 0;
  uint32_t last_http_status = 0, last_close_code = 0;
  uint64_t closed_before_kill = 0;  // joined sockets that closed before the kill
  // Once armed: joined sockets that closed, and how many of them have
  // joined again; kill -> join reply per rejoined socket (with the kill time).
  uint64_t closed_after_kill = 0, rejoined = 0, rejoin_max_ns = 0;
  Histogram rejoin;
  // Sockets open through the kill (never closed): how many presence_diffs
  // with leaves each saw after it (0, 1, more), their total, and kill ->
  // first such diff.
  uint64_t survivors = 0, leave_diffs_0 = 0, leave_diffs_1 = 0, leave_diffs_more = 0;
  uint64_t leave_diffs = 0, leave_keys = 0, leave_max_ns = 0;
  Histogram leave;
  uint64_t diffs = 0, states = 0, state_bytes = 0, messages = 0;
  // Ticker only, once armed: ticks published, ticks received by its other
  // sockets, publish -> receive latency, and the longest gap between two
  // ticks on a socket that stayed open (the stall a client would see), and
  // how many receivers stayed open.
  uint64_t ticks_sent = 0, ticks_received = 0, tick_gap_max_ns = 0, tick_latency_max_ns = 0;
  uint64_t tick_publisher_closed = 0;  // publishers closed by the kill (of 2)
  uint64_t tick_receivers_open = 0;
  Histogram tick_latency;
};

// Parent -> child.
struct NodeCommand {
  // 'a' arm: every close from now on is the kill's (answered by a kStatus
  // report, so the parent knows it was read before it kills); 'k' the shard
  // was killed at `arg` ns; 'q' report now; 's' stop and report.
  char op = 0;
  uint64_t arg = 0;
};

struct NodeClientConfig {
  int first = 0;  // global index of the first connection: topic and presence key follow it
  int count = 0;
  int topics = 1000;     // connection g joins room:<g % topics> as presence u<g>
  bool presence = true;  // false: joins without a presence
  in_addr_t source = 0;  // network byte order
  uint16_t port = 0;     // the node's, on 127.0.0.1
  int inflight = 200;    // handshakes (connect -> join reply) in flight in the connect phase
  // A ticker joins "tick" without presence; its connections 0 and 1 each
  // publish a stamped broadcast every `tick_ms` that the others receive.
  bool ticker = false;
  int tick_ms = 20;
  uint64_t deadline_ns = 0;
};

class PresenceClients {
 public:
  // `ctl` is the process's end of the socket to the parent.
  PresenceClients(const NodeClientConfig& config, int ctl);
  PresenceClients(const PresenceClients&) = delete;
  PresenceClients& operator=(const PresenceClients&) = delete;

  // The whole life of the process: connect and join, report, hold and
  // rejoin while answering commands until stopped (or the deadline, or the
  // parent's EOF), report, close. Returns the exit code.
  int Run();

  // phoenix.js's reconnectAfterMs: the delay before attempt `tries` (1-based).
  static uint64_t BackoffMs(int tries);

 private:
  enum class Phase : uint8_t { kWaiting, kHandshake, kJoined };
  // Per connection beside its WsClient.
  struct Slot {
    Phase phase = Phase::kWaiting;
    uint8_t tries = 0;        // consecutive failed attempts since the last join
    uint8_t leave_diffs = 0;  // after the kill, saturating
    bool joined_once = false;
    bool closed_after_kill = false;
    uint32_t join_ref = 0;
    uint64_t first_leave_ns = 0;
    uint64_t rejoin_ns = 0;
    uint64_t last_tick_ns = 0;  // ticker
  };

  void Start(size_t i);
  void Dispatch(int timeout_ms);
  void RunTimers();
  void ReadCommand();
  void OnMessage(size_t i, std::string_view msg);
  void Lost(size_t i);
  void SendReport(uint32_t kind);
  void Tick();
  void OnTick(Slot& s, std::string_view msg);

  const NodeClientConfig config_;
  const int ctl_;
  Rng rng_;
  int epfd_ = -1;
  sockaddr_in src_{}, dst_{};
  std::string host_;
  std::vector<WsClient> conns_;
  std::vector<Slot> slots_;
  // (when, index) of connections waiting out their back-off, earliest first.
  std::priority_queue<std::pair<uint64_t, uint32_t>, std::vector<std::pair<uint64_t, uint32_t>>,
                      std::greater<>>
      timers_;
  size_t started_ = 0;
  uint64_t kill_ns_ = 0;
  static constexpr size_t kTickPublishers = 2;
  uint64_t next_tick_ns_[kTickPublishers] = {}, tick_ref_ = 1;
  bool armed_ = false, stop_ = false, parent_gone_ = false;
  NodeReport report_;
  char buf_[65536];
};

}  // namespace sb::bench
