// BrokerLink: the shard's connection to its node's broker.
//
// Owns: the DEALER socket (common/zmq_socket) on the shard's loop — sending
// what the cluster session hands it (its Transport: a control message as
// its frames, a queued or batched message in packed form), reading the
// broker's messages in bounded batches, each handed to `on_message`, and
// reporting each new connection to the broker's endpoint (`on_connected`):
// a broker restarted under the shard is noticed the moment libzmq
// reconnects, which it retries every few ms. Both ends bound a frame
// (mesh::kMaxFrameBytes) and the receive queue (mesh::kRecvHighWaterMark).
// Does not: decide anything about the protocol (worker/cluster_session) or
// keep timers (the Shard drives the session's).
// Runs on the shard's loop thread; the Shard owns it.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/event_loop.h"
#include "common/status.h"
#include "common/zmq_socket.h"
#include "worker/cluster_session.h"

namespace sb::worker {

class BrokerLink : public ClusterSession::Transport {
 public:
  // One message from the broker: its frames, valid during the call.
  using OnMessage = std::function<void(std::span<const std::string_view> frames)>;
  // A new connection whose handshake is done: sends go over it.
  using OnConnected = std::function<void()>;

  static Result<std::unique_ptr<BrokerLink>> Create(EventLoop* loop, const std::string& endpoint,
                                                    OnMessage on_message, OnConnected on_connected);

  bool Send(const mesh::Message& msg) override;
  bool SendPacked(std::string_view packed) override;
  // End of the loop turn, after sending: input that arrived meanwhile is
  // picked up (ZMQ_FD is edge-triggered).
  void CheckReadable() { socket_->CheckReadable(); }

 private:
  explicit BrokerLink(std::unique_ptr<ZmqSocket> socket) : socket_(std::move(socket)) {}

  std::unique_ptr<ZmqSocket> socket_;
  std::vector<std::string_view> frames_;
};

}  // namespace sb::worker
