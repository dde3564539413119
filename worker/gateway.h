// Gateway: the I/O of one shard — client sockets on the shard's event loop.
//
// Owns: accepting on the listening socket (inherited or bound by main), each
// connection from HTTP request to WebSocket close (Beast parses the request,
// protocol/websocket frames, protocol/phoenix decodes), the per-socket
// outbound queues of shared frames flushed once per loop turn
// (BeforeSleep), transport limits (frame size, outbound bytes, idle and
// handshake timeouts, max connections), the SIGTERM drain, and the shard's
// counters. Decisions about channels and presence are the Hub's: the gateway
// feeds it events and performs its actions. In a cluster it also owns the
// link to the node's broker (worker/broker_link) and is its Handler: what the
// hub says the broker must hear goes there, and other shards' broadcasts and
// presence come back through it.
// Runs on the one loop thread; owns its connections; the loop and metrics
// are the caller's and outlive it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/event_loop.h"
#include "common/status.h"
#include "worker/auth.h"
#include "worker/broker_link.h"
#include "worker/cluster_session.h"
#include "worker/frame_ref.h"
#include "worker/http_upgrade.h"
#include "worker/hub.h"
#include "worker/worker_metrics.h"

namespace sb::worker {

struct GatewayOptions {
  size_t max_frame_bytes = 1 << 20;
  size_t max_outbound_bytes = 1 << 20;
  size_t max_connections = 10000;
  std::chrono::milliseconds idle_timeout{60000};
  std::chrono::milliseconds handshake_timeout{10000};
  // How long a close handshake we started may take before the socket is dropped.
  std::chrono::milliseconds close_timeout{2000};
  std::chrono::milliseconds shutdown_timeout{5000};
  std::optional<TokenRules> token;  // token auth is on when set
  OriginPolicy origin;
  HubLimits hub;
  std::string ref_prefix;  // see Hub
  // The node's broker (tcp:// or ipc://); empty: a shard on its own.
  std::string broker_endpoint;
  ClusterOptions cluster;
};

class Gateway : private ClusterSession::Handler {
 public:
  // Serves `listen_fd` (non-blocking, listening; not owned) on `loop`.
  static Result<std::unique_ptr<Gateway>> Create(EventLoop* loop, int listen_fd,
                                                 GatewayOptions options, WorkerMetrics* metrics);
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // Stops accepting, closes every socket with 1012 (service restart: clients
  // come back, to another shard on the same port) and calls `done` once
  // every socket is gone or options.shutdown_timeout has passed.
  void Drain(std::function<void()> done);

  size_t connections() const { return live_; }

 private:
  struct Conn;
  enum class State : uint8_t { kHttp, kOpen, kClosing };

  Gateway(EventLoop* loop, int listen_fd, GatewayOptions options, WorkerMetrics* metrics);

  // ClusterSession::Handler
  void ClusterState(std::vector<std::string>* topics,
                    std::vector<mesh::TopicState>* presence) override;
  void Deliver(std::string_view topic, std::string_view message, bool binary) override;
  void RemotePresence(std::string_view topic, std::string_view json, bool snapshot) override;
  // Once per loop turn: the broker link's and the hub's numbers into metrics.
  void PublishClusterMetrics();

  void OnAcceptable();
  void OnEvent(uint64_t id, uint32_t events);
  void OnReadable(Conn* c);
  void OnHttpBytes(Conn* c, const char* data, size_t n);
  void OnWsBytes(Conn* c, char* data, size_t n);
  void OnMessage(Conn* c, bool binary, std::string_view payload);
  void Perform(std::vector<Action>& actions);

  // Queues a frame; false (and the socket is closing) if it would pass
  // --max-outbound. `force`: close frames and HTTP responses, never refused.
  bool Enqueue(Conn* c, const FrameRef& frame, bool force = false);
  void SlowConsumer(Conn* c);
  void MarkDirty(Conn* c);
  void Flush(Conn* c);
  void FlushAll();
  void SetWritable(Conn* c, bool want);

  // The WebSocket stops being open (counted once, by `reason`); it leaves the hub.
  void EndOpen(Conn* c, CloseReason reason);
  // Starts the close handshake: close frame `code`, no more input handled.
  void CloseWith(Conn* c, uint16_t code, CloseReason reason, std::string_view text);
  // Closes the fd now; the Conn is freed at the end of the loop turn.
  void Destroy(Conn* c);
  void LeaveHub(Conn* c);
  // Runs what closes have put off (hub disconnects and their presence
  // diffs), then drain completion. Called at the end of every entry point.
  void Settle();
  void Cron();
  void PauseAccept();

  Conn* Find(uint64_t id) const;
  int64_t NowMs() const;

  EventLoop* loop_;
  int listen_fd_;
  GatewayOptions opt_;
  WorkerMetrics* metrics_;
  WorkerCounters& counters_;
  Hub hub_;

  std::vector<std::unique_ptr<Conn>> by_fd_;  // index: fd
  std::vector<std::unique_ptr<Conn>> graveyard_;
  std::vector<uint64_t> dirty_;
  std::vector<uint64_t> pending_leave_;  // hub disconnects put off until Settle
  std::vector<Action> actions_;
  std::vector<int64_t> turn_broadcasts_ns_;  // read times of this turn's broadcasts
  int64_t read_time_ns_ = 0;                 // when the input being handled was read
  int64_t message_read_ns_ = 0;              // read time of the client message being performed
  uint64_t cron_ticks_ = 0;
  uint64_t next_seq_ = 1;
  size_t live_ = 0;  // Conn objects with an open fd (all states)
  size_t websockets_ = 0;
  int64_t queued_bytes_ = 0;
  bool accepting_ = true;
  bool draining_ = false;
  std::function<void()> drained_;
  bool settling_ = false;
  std::unique_ptr<char[]> read_buf_;    // one per loop: sockets keep no read buffer of their own
  std::unique_ptr<BrokerLink> broker_;  // null unless options.broker_endpoint is set
};

}  // namespace sb::worker
