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
}  // namespace

Result<std::unique_ptr<BrokerLink>> BrokerLink::Create(EventLoop* loop, const std::string& endpoint,
                                                       OnMessage on_message) {
  Result<std::unique_ptr<ZmqSocket>> socket =
      ZmqSocket::Create({.kind = ZmqSocket::Kind::kDealer,
                         .recv_hwm = mesh::kRecvHighWaterMark,
                         .max_frame_bytes = static_cast<int64_t>(mesh::kMaxFrameBytes),
                         .linger_ms = kLingerMs});
  if (!socket.ok()) return socket.status();
  if (Status s = socket.value()->Connect(endpoint); !s.ok()) return s;
  std::unique_ptr<BrokerLink> link(new BrokerLink(std::move(socket).value()));
  if (Status s = link->socket_->Watch(loop, kReadBatch, std::move(on_message)); !s.ok()) return s;
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
