// ZmqSocket: the one adapter between Switchboard and libzmq (via cppzmq).
//
// Owns: a ZeroMQ context and one socket of it, its options, the three
// things the broker and the shards do with it — bind or connect, receive one
// multipart message without blocking, send one without blocking — and, once
// Watch() is called, the socket's registration on an EventLoop (fd and read
// timer, both removed by the destructor). cppzmq's exceptions stop here and
// become values. Does not: interpret frames (protocol/mesh). Single-threaded:
// the owning loop's thread only.
//
// Watch() puts the socket on an EventLoop the way both programs need it:
// messages are read in bounded batches (the rest wait for the next turn, a
// zero timer keeping the loop awake, so one busy peer cannot starve the
// loop's other work), and CheckReadable() after sending picks up arrivals
// whose notification a send consumed.
//
// Options' CURVE fields make the socket encrypt (ZeroMQ RFC 26) as a
// server or a client. ServeZap() hosts the ZAP handler (RFC 27) of the
// socket's own context — libzmq asks the handler bound at
// inproc://zeromq.zap.01 of the context the server socket lives in, and
// each ZmqSocket owns its context — as a REP socket on the owner's loop,
// answering through a decision function (common/zap_policy).
//
// Monitor() watches the socket's own connections through a libzmq socket
// monitor (an inproc PAIR in the socket's context, its fd on the same loop)
// and reports each connection whose handshake succeeded
// (MonitorConnections: also each that failed or closed); a wake-up's
// messages are handed over after the reports that were queued when its
// first message was read.
//
// libzmq's fd is edge-like: it signals that the socket's state changed, not
// that a message is waiting. Watch() deals with that; a caller that reads
// with Recv itself must drain until kWouldBlock after each wake-up, and
// check Readable() after sending (a send can consume the notification of an
// arrival).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/event_loop.h"
#include "common/status.h"
#include "common/zap_policy.h"

namespace zmq {
class context_t;
class socket_t;
class message_t;
}  // namespace zmq

namespace sb {

class ZmqSocket {
 public:
  enum class Kind { kRouter, kDealer };
  struct Options {
    // A ROUTER reports an unroutable send instead of dropping it silently; a
    // DEALER queues only to a completed connection (no silent backlog for a
    // peer that is not there: the caller keeps its own).
    Kind kind = Kind::kDealer;
    int send_hwm = 0;  // 0: unbounded (callers bound what they queue themselves)
    int recv_hwm = 0;  // messages per peer; when reached, libzmq stops reading that peer
    // ZMQ_MAXMSGSIZE: a peer that sends a larger frame is disconnected; -1: no bound.
    int64_t max_frame_bytes = -1;
    int reconnect_ivl_ms = 100;
    int reconnect_ivl_max_ms = 500;
    // How long closing the socket may wait for what is still queued to go
    // (ZMQ_LINGER); 0: dropped at once.
    int linger_ms = 0;
    // CURVE, Z85 keys (common/curve); all empty: no encryption (NULL). A
    // server gives its secret key; a client its own pair and the server's
    // public key. An invalid key fails Create.
    bool curve_server = false;
    std::string curve_secret_key;
    std::string curve_public_key;  // a client's own
    std::string curve_server_key;  // a client's: the server it may talk to
    // ZMQ_ZAP_DOMAIN: the domain named in a server's ZAP requests.
    std::string zap_domain;
  };
  static Result<std::unique_ptr<ZmqSocket>> Create(const Options& options);
  ~ZmqSocket();
  ZmqSocket(const ZmqSocket&) = delete;
  ZmqSocket& operator=(const ZmqSocket&) = delete;

  Status Bind(const std::string& endpoint);
  Status Connect(const std::string& endpoint);
  // The endpoint actually bound (tcp://127.0.0.1:0 → the port chosen).
  std::string LastEndpoint() const;
  int fd() const { return fd_; }
  bool Readable() const;

  enum class RecvResult { kMessage, kWouldBlock, kError };
  // One whole multipart message; `frames` is replaced, views into it are
  // valid until the next Recv.
  RecvResult Recv(std::vector<std::string_view>* frames);
  // Sends `frames` as one message (a ROUTER's first frame is the routing
  // id). False if it would block, the peer is unknown or gone, or there is
  // no connection — never partially sent.
  bool Send(std::span<const std::string_view> frames);
  // A metadata property of the message last received (Recv, or the one a
  // Watch callback is handed), as libzmq's zmq_msg_gets reads it: "User-Id"
  // is the user id the ZAP handler gave the sender's connection. Empty if
  // the message has none (no ZAP handler, no message).
  std::string Property(const char* name) const;

  using OnMessage = std::function<void(std::span<const std::string_view> frames)>;
  // Calls `on_message` for every message, at most `batch` per wake-up.
  Status Watch(EventLoop* loop, int batch, OnMessage on_message);

  using OnConnection = std::function<void()>;
  // Calls `on_connection` on `loop` for each connection whose handshake
  // succeeded: sends go over it from then on (call once). With Watch, the
  // reports queued by the time a wake-up's first message is read are made
  // before that message is handed over: the first message of a new
  // connection, a reply to what was sent on it, comes a round trip after
  // its report, so it follows the report unless that whole round trip fits
  // within one wake-up's batch of reads.
  Status Monitor(EventLoop* loop, OnConnection on_connection);

  enum class ConnectionEvent { kHandshakeSucceeded, kHandshakeFailed, kDisconnected };
  using OnConnectionEvent = std::function<void(ConnectionEvent)>;
  // As Monitor, reporting also each connection whose handshake failed (a
  // ZAP refusal, a protocol error, a timeout) and each connection that
  // closed. libzmq reports a closing connection as failed first unless its
  // handshake succeeded, so the connections open are succeeded + failed -
  // disconnected. Use Monitor or this, once.
  Status MonitorConnections(EventLoop* loop, OnConnectionEvent on_event);
  // Call after sending, at the end of a loop turn.
  void CheckReadable();

  using ZapHandler = std::function<ZapReply(std::span<const std::string_view> request)>;
  // Binds this context's ZAP handler and serves it on `loop`: `handler`
  // answers every handshake's request (a reply always goes, whatever came).
  // Call once, before Bind: libzmq admits a handshake that finds no handler
  // bound without asking anyone.
  Status ServeZap(EventLoop* loop, ZapHandler handler);

 private:
  ZmqSocket() = default;
  std::unique_ptr<zmq::context_t> context_;
  std::unique_ptr<zmq::socket_t> socket_;
  void ReadBatch();
  void ScheduleRead();
  // Hands over the monitor's events that have arrived.
  void DrainMonitor();
  std::vector<zmq::message_t> parts_;
  std::vector<std::string_view> frames_;
  int fd_ = -1;
  EventLoop* loop_ = nullptr;
  int batch_ = 0;
  OnMessage on_message_;
  EventLoop::TimerId read_timer_ = 0;
  std::unique_ptr<zmq::socket_t> monitor_;  // the PAIR the monitor's events arrive on
  int monitor_fd_ = -1;
  EventLoop* monitor_loop_ = nullptr;
  Status StartMonitor(EventLoop* loop, int events, OnConnectionEvent on_event);
  OnConnectionEvent on_connection_event_;
  // Answers the ZAP requests that have arrived.
  void DrainZap();
  std::unique_ptr<zmq::socket_t> zap_;  // the REP bound at inproc://zeromq.zap.01
  int zap_fd_ = -1;
  EventLoop* zap_loop_ = nullptr;
  ZapHandler zap_handler_;
};

}  // namespace sb
