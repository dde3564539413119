#include "common/zmq_socket.h"

#include <sys/epoll.h>

#include <cstring>
#include <zmq.hpp>

namespace sb {

Result<std::unique_ptr<ZmqSocket>> ZmqSocket::Create(const Options& options) {
  std::unique_ptr<ZmqSocket> s(new ZmqSocket());
  try {
    // One I/O thread is plenty for a handful of links.
    s->context_ = std::make_unique<zmq::context_t>(1);
    s->socket_ = std::make_unique<zmq::socket_t>(*s->context_, options.kind == Kind::kRouter
                                                                   ? zmq::socket_type::router
                                                                   : zmq::socket_type::dealer);
    zmq::socket_t& z = *s->socket_;
    z.set(zmq::sockopt::linger, options.linger_ms);
    z.set(zmq::sockopt::sndhwm, options.send_hwm);
    z.set(zmq::sockopt::rcvhwm, options.recv_hwm);
    z.set(zmq::sockopt::maxmsgsize, options.max_frame_bytes);
    z.set(zmq::sockopt::reconnect_ivl, options.reconnect_ivl_ms);
    z.set(zmq::sockopt::reconnect_ivl_max, options.reconnect_ivl_max_ms);
    if (options.kind == Kind::kRouter) {
      z.set(zmq::sockopt::router_mandatory, 1);
    } else {
      z.set(zmq::sockopt::immediate, 1);
    }
    if (options.curve_server) {
      z.set(zmq::sockopt::curve_server, 1);
      z.set(zmq::sockopt::curve_secretkey, options.curve_secret_key);
    } else if (!options.curve_server_key.empty()) {
      z.set(zmq::sockopt::curve_publickey, options.curve_public_key);
      z.set(zmq::sockopt::curve_secretkey, options.curve_secret_key);
      z.set(zmq::sockopt::curve_serverkey, options.curve_server_key);
    }
    if (!options.zap_domain.empty()) z.set(zmq::sockopt::zap_domain, options.zap_domain);
    s->fd_ = z.get(zmq::sockopt::fd);
  } catch (const zmq::error_t& e) {
    return Status::IoError(std::string("zmq socket: ") + e.what());
  }
  return s;
}

ZmqSocket::~ZmqSocket() {
  if (loop_ != nullptr) {
    loop_->Remove(fd_);
    if (read_timer_ != 0) loop_->Cancel(read_timer_);
  }
  if (monitor_) {
    monitor_loop_->Remove(monitor_fd_);
    // Stopped before either socket closes: the context waits for both.
    (void)zmq_socket_monitor(socket_->handle(), nullptr, 0);
    monitor_.reset();
  }
  if (zap_) {
    zap_loop_->Remove(zap_fd_);
    zap_.reset();
  }
  parts_.clear();
  socket_.reset();
  context_.reset();
}

Status ZmqSocket::Bind(const std::string& endpoint) {
  try {
    socket_->bind(endpoint);
  } catch (const zmq::error_t& e) {
    return Status::IoError("bind " + endpoint + ": " + e.what());
  }
  return Status::Ok();
}

Status ZmqSocket::Connect(const std::string& endpoint) {
  try {
    socket_->connect(endpoint);
  } catch (const zmq::error_t& e) {
    return Status::IoError("connect " + endpoint + ": " + e.what());
  }
  return Status::Ok();
}

std::string ZmqSocket::LastEndpoint() const {
  try {
    return socket_->get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t&) {
    return {};
  }
}

bool ZmqSocket::Readable() const {
  try {
    return (socket_->get(zmq::sockopt::events) & ZMQ_POLLIN) != 0;
  } catch (const zmq::error_t&) {
    return false;
  }
}

ZmqSocket::RecvResult ZmqSocket::Recv(std::vector<std::string_view>* frames) {
  frames->clear();
  parts_.clear();
  try {
    for (;;) {
      zmq::message_t& part = parts_.emplace_back();
      // Only the first part can be missing: libzmq delivers a message whole.
      auto got =
          socket_->recv(part, frames->empty() ? zmq::recv_flags::dontwait : zmq::recv_flags::none);
      if (!got) {
        parts_.pop_back();
        return RecvResult::kWouldBlock;
      }
      frames->emplace_back(static_cast<const char*>(part.data()), part.size());
      if (!part.more()) break;
    }
  } catch (const zmq::error_t&) {
    return RecvResult::kError;
  }
  // parts_ grew while the views were taken: the data pointers of messages
  // stay put when the vector moves them (zmq_msg_t keeps large data on the
  // heap, but small messages are stored inline), so take the views again.
  frames->clear();
  for (zmq::message_t& part : parts_) {
    frames->emplace_back(static_cast<const char*>(part.data()), part.size());
  }
  return RecvResult::kMessage;
}

std::string ZmqSocket::Property(const char* name) const {
  if (parts_.empty()) return {};
  // Every frame of a message carries its connection's metadata; the last is
  // one the peer sent (a ROUTER's first is the routing id it prepends).
  const char* v = zmq_msg_gets(parts_.back().handle(), name);
  return v != nullptr ? std::string(v) : std::string();
}

bool ZmqSocket::Send(std::span<const std::string_view> frames) {
  try {
    for (size_t i = 0; i < frames.size(); ++i) {
      zmq::send_flags flags = zmq::send_flags::dontwait;
      if (i + 1 < frames.size()) flags = flags | zmq::send_flags::sndmore;
      // After the first frame is accepted the rest of the message is too
      // (libzmq checks the high-water mark on the first part only).
      if (!socket_->send(zmq::const_buffer(frames[i].data(), frames[i].size()), flags)) {
        return false;
      }
    }
  } catch (const zmq::error_t&) {
    // EHOSTUNREACH: a ROUTER peer that is gone. Nothing was queued.
    return false;
  }
  return true;
}

}  // namespace sb

namespace sb {

Status ZmqSocket::Watch(EventLoop* loop, int batch, OnMessage on_message) {
  loop_ = loop;
  batch_ = batch;
  on_message_ = std::move(on_message);
  return loop->Add(fd_, EPOLLIN, [this](uint32_t) { ReadBatch(); });
}

void ZmqSocket::ReadBatch() {
  for (int i = 0; i < batch_; ++i) {
    switch (Recv(&frames_)) {
      case RecvResult::kMessage:
        // After the wake-up's first read, before the hand-over: libzmq's I/O
        // thread queues a connection's event before the first message it
        // reads from it, so the event of a message read now is visible too.
        // Once per wake-up, not per message: an empty read of the monitor
        // costs a poll(2) (≈ 1.2 µs here), as much as routing a message.
        if (monitor_ && i == 0) DrainMonitor();
        on_message_(frames_);
        continue;
      case RecvResult::kWouldBlock:
      case RecvResult::kError:  // a closed context; nothing more will come
        return;
    }
  }
  ScheduleRead();
}

void ZmqSocket::ScheduleRead() {
  if (read_timer_ != 0) return;
  read_timer_ = loop_->AddTimer(std::chrono::nanoseconds(0), [this] {
    read_timer_ = 0;
    ReadBatch();
  });
}

Status ZmqSocket::Monitor(EventLoop* loop, OnConnection on_connection) {
  return StartMonitor(
      loop, ZMQ_EVENT_HANDSHAKE_SUCCEEDED,
      [on_connection = std::move(on_connection)](ConnectionEvent) { on_connection(); });
}

Status ZmqSocket::MonitorConnections(EventLoop* loop, OnConnectionEvent on_event) {
  return StartMonitor(loop,
                      ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                          ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                          ZMQ_EVENT_DISCONNECTED,
                      std::move(on_event));
}

Status ZmqSocket::StartMonitor(EventLoop* loop, int events, OnConnectionEvent on_event) {
  // One monitor per context, which this object owns alone: the name is free.
  static constexpr char kEndpoint[] = "inproc://monitor";
  try {
    if (zmq_socket_monitor(socket_->handle(), kEndpoint, events) != 0) {
      throw zmq::error_t();
    }
    monitor_ = std::make_unique<zmq::socket_t>(*context_, zmq::socket_type::pair);
    monitor_->set(zmq::sockopt::linger, 0);
    monitor_->connect(kEndpoint);
    monitor_fd_ = monitor_->get(zmq::sockopt::fd);
  } catch (const zmq::error_t& e) {
    monitor_.reset();
    return Status::IoError(std::string("zmq monitor: ") + e.what());
  }
  monitor_loop_ = loop;
  on_connection_event_ = std::move(on_event);
  if (Status s = loop->Add(monitor_fd_, EPOLLIN, [this](uint32_t) { DrainMonitor(); }); !s.ok()) {
    return s;
  }
  // Events that came before the fd was registered raised no edge.
  DrainMonitor();
  return Status::Ok();
}

void ZmqSocket::DrainMonitor() {
  // Each event is two frames: 2 bytes of event and 4 of value, then the
  // endpoint. Edge-triggered like any libzmq fd: read until none is left.
  // Why the handshake and not ZMQ_EVENT_CONNECTED: a DEALER with
  // ZMQ_IMMEDIATE attaches the connection's pipe only once the handshake
  // is done, so a send on CONNECTED could still fail.
  for (;;) {
    zmq::message_t event, endpoint;
    try {
      if (!monitor_->recv(event, zmq::recv_flags::dontwait)) return;
      if (event.more()) (void)monitor_->recv(endpoint, zmq::recv_flags::none);
    } catch (const zmq::error_t&) {
      return;  // a closed context; nothing more will come
    }
    if (event.size() < 2) continue;
    uint16_t id;
    std::memcpy(&id, event.data(), sizeof id);
    switch (id) {
      case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
        break;
      case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
      case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
      case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
        on_connection_event_(ConnectionEvent::kHandshakeFailed);
        continue;
      case ZMQ_EVENT_DISCONNECTED:
        on_connection_event_(ConnectionEvent::kDisconnected);
        continue;
      default:
        continue;
    }
    // The connection's pipe reaches the socket as a command, which a send
    // processes only if the socket has not processed any in the last ~1 ms
    // (libzmq throttles them by the TSC): a busy socket would refuse the
    // first send on the new connection. Reading ZMQ_EVENTS processes them
    // unthrottled (and may take the fd's notification of an arrival, so a
    // watched socket schedules a read if one is waiting).
    if (loop_ != nullptr) {
      CheckReadable();
    } else {
      (void)Readable();
    }
    on_connection_event_(ConnectionEvent::kHandshakeSucceeded);
  }
}

void ZmqSocket::CheckReadable() {
  if (loop_ != nullptr && Readable()) ScheduleRead();
}

}  // namespace sb

namespace sb {

Status ZmqSocket::ServeZap(EventLoop* loop, ZapHandler handler) {
  try {
    zap_ = std::make_unique<zmq::socket_t>(*context_, zmq::socket_type::rep);
    zap_->set(zmq::sockopt::linger, 0);
    zap_->bind("inproc://zeromq.zap.01");
    zap_fd_ = zap_->get(zmq::sockopt::fd);
  } catch (const zmq::error_t& e) {
    zap_.reset();
    return Status::IoError(std::string("zap handler: ") + e.what());
  }
  zap_loop_ = loop;
  zap_handler_ = std::move(handler);
  if (Status s = loop->Add(zap_fd_, EPOLLIN, [this](uint32_t) { DrainZap(); }); !s.ok()) {
    return s;
  }
  DrainZap();
  return Status::Ok();
}

void ZmqSocket::DrainZap() {
  // A REP takes its next request only once it has replied to the last, and
  // its fd is edge-triggered: answer until none is left.
  std::vector<zmq::message_t> parts;
  std::vector<std::string_view> request;
  for (;;) {
    parts.clear();
    request.clear();
    try {
      zmq::message_t& first = parts.emplace_back();
      if (!zap_->recv(first, zmq::recv_flags::dontwait)) return;
      while (parts.back().more()) {
        zmq::message_t& next = parts.emplace_back();
        (void)zap_->recv(next, zmq::recv_flags::none);
      }
    } catch (const zmq::error_t&) {
      return;  // a closed context; nothing more will come
    }
    for (const zmq::message_t& p : parts) {
      request.emplace_back(static_cast<const char*>(p.data()), p.size());
    }
    const ZapReply reply = zap_handler_(request);
    const auto frames = reply.Frames();
    try {
      for (size_t i = 0; i < frames.size(); ++i) {
        const zmq::send_flags more =
            i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
        // inproc to libzmq's own session: never refused for a high-water mark
        // it does not set; if it ever were, that one handshake times out.
        (void)zap_->send(zmq::const_buffer(frames[i].data(), frames[i].size()),
                         more | zmq::send_flags::dontwait);
      }
    } catch (const zmq::error_t&) {
      return;
    }
  }
}

}  // namespace sb
