// ZmqSocket: the one adapter between Switchboard and libzmq (via cppzmq).
//
// Owns: a ZeroMQ context and one socket of it, its options, and the three
// things the broker and the shards do with it — bind or connect, receive one
// multipart message without blocking, send one without blocking. cppzmq's
// exceptions stop here and become values. Does not: register with the event
// loop (callers watch fd() for EPOLLIN) or interpret frames (protocol/mesh).
// Single-threaded: the owning loop's thread only.
//
// libzmq's fd is edge-like: it signals that the socket's state changed, not
// that a message is waiting. Callers therefore drain with Recv until
// kWouldBlock after each wake-up, and check Readable() after sending (a send
// can consume the notification of an arrival).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

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
    int recv_hwm = 0;
    int reconnect_ivl_ms = 100;
    int reconnect_ivl_max_ms = 1000;
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

 private:
  ZmqSocket() = default;
  std::unique_ptr<zmq::context_t> context_;
  std::unique_ptr<zmq::socket_t> socket_;
  std::vector<zmq::message_t> parts_;
  int fd_ = -1;
};

}  // namespace sb
