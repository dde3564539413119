// Gateway: the client sockets of one shard — bytes in, frames out.
//
// Owns: accepting on the listening socket (inherited or bound by main), each
// connection from HTTP request to WebSocket close (Beast parses the request,
// worker/http_upgrade decides the answer, or worker/static_files for the
// files of --static; protocol/websocket frames), the
// HTTP API's connections (worker/http_api decides; requests the listener
// must perform go up to it, answered through RespondApi; HTTP/1.1
// keep-alive, one request at a time), the
// per-socket outbound queues of shared frames flushed once per loop turn
// (FlushAll), transport limits (frame size, message time, outbound memory,
// idle, stalled-write and handshake timeouts, sockets in all states and per
// address), the SIGTERM drain, and the transport counters (bytes, frames,
// sockets, closes, refusals). Does not: decode Phoenix messages or decide
// anything about channels — a complete WebSocket data message goes up to the
// Listener (the Shard), which answers through Send / Deliver / Close.
// Runs on the one loop thread; owns its connections; the loop, the listener
// and the metrics are the caller's and outlive it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/event_loop.h"
#include "common/status.h"
#include "common/unique_fd.h"
#include "worker/address_counts.h"
#include "worker/auth.h"
#include "worker/frame_ref.h"
#include "worker/handoff_state.h"
#include "worker/http_api.h"
#include "worker/http_upgrade.h"
#include "worker/hub.h"
#include "worker/outbound_queue.h"
#include "worker/reasons.h"
#include "worker/static_files.h"
#include "worker/worker_metrics.h"

namespace sb::worker {

struct GatewayOptions {
  size_t max_frame_bytes = 1 << 20;
  // What one socket's queue may hold: frames with their overhead and the
  // queue's slots (OutboundQueue::charged), owed frames apart.
  size_t max_outbound_bytes = 1 << 20;
  // Owed frames (Send with `owed`: presence states) one socket may have
  // waiting beyond max_outbound_bytes; the shard sets it to --max-topics.
  size_t max_owed_frames = 100;
  // Open WebSockets; the next upgrade is answered 503. The shard holds at
  // most max_connections + Gateway::kSocketAllowance sockets in any state.
  size_t max_connections = 10000;
  // Sockets one remote address may hold in any state; 0: unlimited.
  size_t max_connections_per_address = 0;
  // Nothing received for this long: closed 1001. Also how long a socket's
  // writes may make no progress while its kernel buffer is full before it
  // is closed as a slow consumer.
  std::chrono::milliseconds idle_timeout{60000};
  std::chrono::milliseconds handshake_timeout{10000};
  // How long a data message (all its fragments) may take to arrive.
  std::chrono::milliseconds message_timeout{10000};
  // How long a close handshake we started may take before the socket is dropped.
  std::chrono::milliseconds close_timeout{2000};
  std::chrono::milliseconds shutdown_timeout{5000};
  std::optional<TokenRules> token;  // token auth is on when set
  OriginPolicy origin;
  // --static: GET and HEAD of other paths than the shard's own are
  // answered from files under this root (worker/static_files.h).
  std::optional<StaticRoot> static_root;
  // The HTTP API (/api/*) is on when set; its bearer key.
  std::optional<std::string> api_key;
  // Requests one keep-alive API connection may make; the last is answered
  // "Connection: close" (requests pipelined behind it are not read), so a
  // backend's connections spread over the shards again now and then.
  // Between requests a connection may stay idle for handshake_timeout.
  // Bodies are bounded by max_frame_bytes.
  uint32_t max_api_requests_per_connection = 10000;
};

class Gateway {
 public:
  // What the gateway reports, in the order it happens on a socket.
  class Listener {
   public:
    virtual ~Listener() = default;
    // The WebSocket is open; `identity` from its token (auth on).
    virtual void OnOpen(ConnId conn, std::optional<Identity> identity) = 0;
    // One complete data message; `payload` is valid during the call.
    virtual void OnMessage(ConnId conn, bool binary, std::string_view payload) = 0;
    // The WebSocket stopped being open (closed, failed, timed out). Called
    // from Settle, never in the middle of a Deliver.
    virtual void OnClosed(ConnId conn) = 0;
    // An authorized, well-formed API request on HTTP connection `conn`. The
    // listener answers it with RespondApi, during the call or later; the
    // connection reads no further request until then.
    virtual void OnApiRequest(ConnId conn, ApiRequest request) = 0;
  };

  // Serves `listen_fd` (non-blocking, listening; not owned) on `loop`.
  static Result<std::unique_ptr<Gateway>> Create(EventLoop* loop, int listen_fd,
                                                 GatewayOptions options, Listener* listener,
                                                 WorkerMetrics* metrics);
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // Sockets beyond max_connections the shard still accepts, so that
  // upgrades past the limit are answered 503 at once instead of waiting in
  // the backlog. With max_connections + this many sockets held (handshaking,
  // open or closing), the shard stops accepting until one goes: the backlog,
  // or another shard on the same socket, holds the rest.
  static constexpr size_t kSocketAllowance = 64;

  // One message to one open socket. `owed`: the socket is owed it (a
  // joiner's presence state) and it is queued even past max_outbound_bytes,
  // up to max_owed_frames such frames waiting.
  void Send(ConnId conn, bool binary, std::string_view message, bool owed = false);
  // One message to every open socket of `to` except `except`, framed once
  // and shared. Returns how many sockets it was queued on.
  uint64_t Deliver(std::span<const ConnId> to, ConnId except, bool binary,
                   std::string_view message);
  // Closes an open socket for what it sent: close frame `code`, its input
  // no longer read, the connection dropped once the frame is written.
  void Close(ConnId conn, uint16_t code, CloseReason reason, std::string_view text);

  // Answers the API request waiting on `conn` (counted by endpoint and
  // status). Nothing if the connection is gone or has no request waiting.
  void RespondApi(ConnId conn, ApiEndpoint endpoint, int status, std::string_view body);

  // Runs what closes have put off (Listener::OnClosed), then drain
  // completion. The gateway calls it at the end of each of its own entry
  // points; whoever else calls Send / Deliver / Close calls it when done.
  void Settle();
  // End of a loop turn: writes every socket with queued frames (one
  // sendmsg each, up to 64 frames), settling what the writes closed.
  void FlushAll();
  // Housekeeping: handshake, idle, message, stalled-write and close
  // deadlines; queue gauges.
  void Sweep();

  // Stops accepting, closes every socket with 1012 (service restart: clients
  // come back, to another shard on the same port) and calls `done` once
  // every socket is gone or options.shutdown_timeout has passed.
  void Drain(std::function<void()> done);

  // --- Hand-off to a new process (docs/UPGRADE.md). Open WebSockets and
  // HTTP connections move (keep-alive API connections between or inside
  // requests, answers being written); WebSockets in their close handshake
  // and HTTP requests whose answer is with the listener stay, and the old
  // process's exit ends them. Reading stops at a frame boundary by itself:
  // the gateway reads only in its own callbacks, and what a read brought is
  // parsed whole before the callback returns (whole messages went up, the
  // rest is the parser's leftovers; an HTTP request's bytes are kept from
  // its first), so a hand-off made from anywhere else on the loop sees every
  // socket between reads.

  // The open WebSockets.
  std::vector<ConnId> OpenConnections() const;
  // The sockets that move: the open WebSockets and the HTTP connections.
  std::vector<ConnId> HandoffConnections() const;
  // Whether an HTTP request's answer is with the listener (RespondApi not
  // called yet): such a connection does not move, so the old process waits.
  bool AnswersPending() const;
  // The transport state of `conn`, one of HandoffConnections() (peer
  // address, deadlines, outbound frames and what is written of the first;
  // a WebSocket's parser leftovers, an HTTP connection's unanswered bytes,
  // request count and how it ends) into `out`, `out->id` included; returns
  // its fd (still owned here), or -1 if `conn` does not move.
  int ExportConnection(ConnId conn, handoff::Connection* out) const;
  // `conn` now belongs to the new process: its fd is closed here without a
  // close frame, not counted as a close, and the listener is not told (its
  // state moved too).
  void Release(ConnId conn);
  // A socket handed over by the old process, made ready for Adopt by the
  // gateway to be on `loop`: set non-blocking and registered with the loop
  // (EventLoop::Prewatch). Any thread, before the gateway exists or while
  // it adopts (it touches only the fd and the epoll instance). An fd whose
  // preparation failed must not be adopted (close it: the old process's copy
  // is its own).
  static Status PrepareAdoption(const EventLoop& loop, int fd);
  // The old process's fd of a connection that would move now, else -1.
  int HandoffFd(ConnId conn) const;
  // Takes a socket handed over by the old process and prepared by
  // PrepareAdoption, with its transport state: on the loop at once, its queue written at the end of
  // the turn, its deadlines running from where they were. An HTTP connection's bytes are parsed as
  // if just read, on the loop's next turn (a whole request among them is answered then); one that
  // was closing closes as the old process would have. Returns its id here (ids are per process).
  // The listener is not told (it imports a WebSocket's channels itself). Refused, closing `fd` (the
  // old process's copy is its own) and unregistering it, if the parser leftovers are not ones this
  // gateway's
  // --max-frame could have left, or the fd is not usable.
  Result<ConnId> Adopt(UniqueFd fd, const handoff::Connection& state);
  // Accepts no more (the old process once its sockets are handed over: a
  // connection accepted now would be closed by its exit; the new process
  // takes it from the backlog).
  void StopAccepting();

  // Sockets held, in any state.
  size_t connections() const { return live_; }
  // Monotonic ns when the input being handled was read (0 outside input).
  int64_t read_time_ns() const { return read_time_ns_; }

 private:
  struct Conn;
  enum class State : uint8_t { kHttp, kOpen, kClosing };

  Gateway(EventLoop* loop, int listen_fd, GatewayOptions options, Listener* listener,
          WorkerMetrics* metrics);

  void OnAcceptable();
  void OnEvent(ConnId id, uint32_t events);
  void OnReadable(Conn* c);
  void OnHttpBytes(Conn* c, const char* data, size_t n);
  // Parses what the connection's HTTP state holds, request after request
  // (keep-alive), until more bytes are needed or an answer is awaited.
  void ParseHttp(Conn* c);
  // An upgrade or a refusal (not an API request): answers and, unless
  // upgraded, closes.
  void FinishHttp(Conn* c, HttpDecision d);
  void HandleApi(Conn* c);
  void OnWsBytes(Conn* c, char* data, size_t n);

  // Queues a frame; false (and the socket is closing) if the queue refused
  // it (OutboundQueue::Push): over --max-outbound.
  bool Enqueue(Conn* c, const FrameRef& frame,
               OutboundQueue::Kind kind = OutboundQueue::Kind::kData);
  void SlowConsumer(Conn* c);
  void MarkDirty(Conn* c);
  void Flush(Conn* c);
  void SetWritable(Conn* c, bool want);

  // The WebSocket stops being open (counted once, by `reason`); the
  // listener hears of it in Settle.
  void EndOpen(Conn* c, CloseReason reason);
  // Starts the close handshake: close frame `code`, no more input handled.
  void CloseWith(Conn* c, uint16_t code, CloseReason reason, std::string_view text);
  // Closes the fd now; the Conn is freed at the end of the loop turn.
  void Destroy(Conn* c);
  // Out of fds: stops accepting for 100 ms.
  void PauseAccept();
  // Watches the listening socket exactly when the shard should accept: not
  // draining, not paused, and under max_connections + kSocketAllowance.
  void UpdateAccepting();

  // Whether `c` goes to the new process at a hand-off.
  static bool Moves(const Conn& c);
  Status AdoptHttp(Conn* c, const handoff::HttpPhase& h);
  // Parses the bytes adopted HTTP connections came with (adopted_bytes_).
  void ParseAdopted();

  Conn* Find(ConnId id) const;
  Conn* FindOpen(ConnId id) const;

  EventLoop* loop_;
  int listen_fd_;
  GatewayOptions opt_;
  Listener* listener_;
  WorkerMetrics* metrics_;
  WorkerCounters& counters_;

  std::vector<std::unique_ptr<Conn>> by_fd_;  // index: fd
  std::vector<std::unique_ptr<Conn>> graveyard_;
  std::vector<ConnId> dirty_;
  std::vector<ConnId> closed_;  // open sockets that ended: OnClosed put off until Settle
  int64_t read_time_ns_ = 0;
  uint64_t next_seq_ = 1;
  size_t live_ = 0;  // Conn objects with an open fd (all states)
  size_t websockets_ = 0;
  size_t blocked_ = 0;  // sockets waiting for EPOLLOUT
  AddressCounts per_address_;
  OutboundQueue::Limits queue_limits_;
  bool accepting_ = true;        // the listening socket is on the loop
  bool accept_paused_ = false;   // out of fds a moment ago
  bool accept_stopped_ = false;  // StopAccepting
  bool draining_ = false;
  std::function<void()> drained_;
  bool settling_ = false;
  std::vector<ConnId> adopted_bytes_;   // adopted with bytes to parse on the next turn
  EventLoop::TimerId parse_timer_ = 0;  // pending ParseAdopted
  std::unique_ptr<char[]> read_buf_;    // one per loop: sockets keep no read buffer of their own
};

}  // namespace sb::worker
