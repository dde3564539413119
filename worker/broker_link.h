// BrokerLink: the shard's connection to its node's broker.
//
// Owns: the DEALER socket (common/zmq_socket) on the shard's loop, the
// ClusterSession it feeds, reading from the broker in bounded batches, the
// session's timer (heartbeats, liveness, hellos), and the end-of-turn flush
// (credit back, publishes not yet sent). Does not: decide anything about the
// protocol (ClusterSession) or about sockets and channels (the Handler — the
// gateway). Runs on the shard's loop thread; the gateway owns it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/event_loop.h"
#include "common/status.h"
#include "common/zmq_socket.h"
#include "worker/cluster_session.h"

namespace sb::worker {

class BrokerLink : public ClusterSession::Transport {
 public:
  static Result<std::unique_ptr<BrokerLink>> Create(EventLoop* loop, const std::string& endpoint,
                                                    ClusterOptions options,
                                                    ClusterSession::Handler* handler);
  ~BrokerLink() override;

  ClusterSession& session() { return session_; }
  const ClusterSession& session() const { return session_; }
  // End of the loop turn: credit and pending publishes go out, and input
  // that arrived while sending is picked up.
  void Flush();

  bool Send(const mesh::Message& msg) override;
  bool SendPacked(std::string_view packed) override;

 private:
  BrokerLink(EventLoop* loop, std::unique_ptr<ZmqSocket> socket, ClusterOptions options,
             ClusterSession::Handler* handler);
  void Tick();
  int64_t NowMs() const;

  EventLoop* loop_;
  std::unique_ptr<ZmqSocket> socket_;
  ClusterSession session_;
  std::chrono::milliseconds tick_;
  EventLoop::TimerId tick_timer_ = 0;
  std::vector<std::string_view> frames_;
};

}  // namespace sb::worker
