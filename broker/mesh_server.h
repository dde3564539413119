// MeshServer: the broker's I/O — its ROUTER socket on the broker's loop.
//
// Owns: the bound ZeroMQ ROUTER (common/zmq_socket), reading mesh messages
// in bounded batches and handing them to the Router, the Router's timer
// (heartbeats and expiry), the end-of-turn flush (what credit allows, acks),
// the router's messages to and from other nodes (over broker/peer_uplinks
// and broker/peer_server, whose hooks land here), and the broker's metrics:
// a Prometheus collectable that reads the Router
// at scrape time under the mutex the loop holds while it works, so every
// depth it reports is exact, never a sample. Does not: decide anything
// (broker/router). Runs on the broker's loop thread (scrapes on civetweb's).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "broker/router.h"
#include "common/event_loop.h"
#include "common/status.h"
#include "common/zmq_socket.h"

namespace prometheus {
class Collectable;
}

namespace sb::broker {

class PeerServer;
class PeerUplinks;
struct MemberEvent;

class MeshServer : private LinkSender, private PeerSender {
 public:
  // Binds `endpoint` and serves it on `loop`.
  static Result<std::unique_ptr<MeshServer>> Create(EventLoop* loop, const std::string& endpoint,
                                                    RouterOptions options);
  ~MeshServer() override;

  // The endpoint bound (a tcp port 0 resolved).
  std::string endpoint() const { return socket_->LastEndpoint(); }
  std::shared_ptr<prometheus::Collectable> collectable() const { return collectable_; }

  // --- Routing between nodes (docs/CLUSTER.md) ---
  // Where the router's messages to other nodes go: each member's uplink,
  // and the acks on its link into `server` (either may be null). Set once,
  // before the loop runs.
  void SetPeerLinks(PeerUplinks* uplinks, PeerServer* server);
  // The membership changed: a joined member becomes a peer of the router, a
  // left one is removed (its interest and presence go).
  void ApplyMembers(std::span<const MemberEvent> events);
  // The links' hooks (PeerUplinksOptions, PeerServerOptions), on the loop.
  void OnPeerUp(const std::string& peer, uint64_t expected, bool batches);
  void OnPeerDown(const std::string& peer);
  void OnPeerAck(const std::string& peer, uint64_t seq);
  uint64_t OnPeerHello(const std::string& peer, uint64_t stream);
  // The stream id the uplink to `peer` names in its hello (Router::PeerStream).
  uint64_t PeerStream(const std::string& peer);
  void OnPeerData(const std::string& peer, uint64_t seq, std::string_view packed);
  void OnPeerInboundDown(const std::string& peer);

 private:
  class Collector;
  bool SendPeerData(const std::string& peer, uint64_t seq, std::string_view packed) override;
  bool SendPeerBatch(const std::string& peer, std::string_view batch) override;
  void SendPeerAck(const std::string& peer, uint64_t seq) override;
  MeshServer(EventLoop* loop, std::unique_ptr<ZmqSocket> socket, RouterOptions options);
  bool Send(const std::string& routing_id, const mesh::Message& msg) override;
  bool SendPacked(const std::string& routing_id, std::string_view packed) override;
  // Sends out_frames_ (the routing id first); false if the peer is gone.
  bool SendFrames();
  void OnMessage(std::span<const std::string_view> frames);
  void Tick();
  void Flush();

  EventLoop* loop_;
  std::unique_ptr<ZmqSocket> socket_;
  // Held by the loop while it works and by scrapes while they read.
  std::mutex mu_;
  Router router_;
  struct Delays {
    std::vector<uint64_t> buckets;  // cumulative counts are built at scrape time
    uint64_t count = 0;
    double sum_seconds = 0;
  } delays_;
  std::vector<int64_t> turn_delays_us_;
  int64_t loop_lag_ns_ = 0;  // copied from the loop under mu_ for scrapes
  std::vector<std::string_view> out_frames_;
  EventLoop::TimerId tick_timer_ = 0;
  // Armed while an uplink took less than was ready for it (its high-water
  // mark): the next try comes this soon even if nothing else wakes the loop.
  EventLoop::TimerId peer_retry_timer_ = 0;
  PeerUplinks* uplinks_ = nullptr;
  PeerServer* peer_server_ = nullptr;
  std::shared_ptr<prometheus::Collectable> collectable_;
};

}  // namespace sb::broker
