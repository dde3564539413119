#include "worker/broker_link.h"

namespace sb::worker {

namespace {
// Messages read per wake-up before client sockets get their turn.
constexpr int kReadBatch = 512;
// At exit, what is still queued for the broker (the last credit, the
// presence leaves of the drained sockets) may take this long to go; the
// publishes were acked before (Shard::Drain), so a broker that is gone
// delays the exit by this much at most.
constexpr int kLingerMs = 1000;
// How soon libzmq retries a lost or refused connection, and how far it
// backs off while it keeps failing (it doubles the wait up to this). A
// restarted broker is back within a few ms, and every ms of wait is a ms
// with no cross-shard delivery; a failed ipc connect costs the I/O thread
// a few µs (bench/RESULTS.md, issue 13: the CPU of a shard whose broker is
// down), so the wait stays short even when the broker stays away.
constexpr int kReconnectMs = 1;
constexpr int kReconnectMaxMs = 4;
}  // namespace

Result<std::unique_ptr<BrokerLink>> BrokerLink::Create(EventLoop* loop, const std::string& endpoint,
                                                       OnMessage on_message,
                                                       OnConnected on_connected) {
  Result<std::unique_ptr<ZmqSocket>> socket =
      ZmqSocket::Create({.kind = ZmqSocket::Kind::kDealer,
                         .recv_hwm = mesh::kRecvHighWaterMark,
                         .max_frame_bytes = static_cast<int64_t>(mesh::kMaxFrameBytes),
                         .reconnect_ivl_ms = kReconnectMs,
                         .reconnect_ivl_max_ms = kReconnectMaxMs,
                         .linger_ms = kLingerMs});
  if (!socket.ok()) return socket.status();
  std::unique_ptr<BrokerLink> link(new BrokerLink(std::move(socket).value()));
  if (Status s = link->socket_->Watch(loop, kReadBatch, std::move(on_message)); !s.ok()) return s;
  // Before connecting: the first connection is reported too.
  if (Status s = link->socket_->Monitor(loop, std::move(on_connected)); !s.ok()) return s;
  if (Status s = link->socket_->Connect(endpoint); !s.ok()) return s;
  return link;
}

bool BrokerLink::Send(const mesh::Message& msg) {
  const mesh::Frames frames(msg);
  return socket_->Send(frames.views());
}

bool BrokerLink::SendPacked(std::string_view packed) {
  if (!mesh::Unpack(packed, &frames_).ok()) return false;  // the session packed it
  return socket_->Send(frames_);
}

}  // namespace sb::worker
