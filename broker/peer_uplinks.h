// PeerUplinks: this broker's links out to the other members' peer sockets,
// one ZeroMQ DEALER per member (docs/CLUSTER.md, Peer links).
//
// Owns: each member's socket — a CURVE client with this node's keypair and
// the member's public key as the server's (plain text without a secret key,
// only to a loopback endpoint unless --insecure) — made when the member
// joins, made anew when it changes, its link falls silent or a handshake
// fails (libzmq gives a refused one up), closed when it leaves; carrying out
// what broker/peer_links decides (hello on each new connection, a heartbeat
// every interval, up on the welcome, down after 3 silent intervals or a
// closed connection) with the loop's clock and a timer; the log line of
// each link going up or down; and the uplink metrics (up, round trip,
// downs, by member), a Prometheus collectable read at scrape time under a
// mutex the loop holds while it works.
//
// Apart from broker/peer_server because the two share nothing but the
// membership feed: each member's DEALER lives in a ZeroMQ context of its
// own (common/zmq_socket), and a node dials out whether or not it binds a
// peer socket. Does not: decide anything (broker/peer_links) or route
// messages: broker/mesh_server's router decides what goes on a link that is
// up (SendData), and hears of links going up and down and of acks. Runs on the
// broker's loop thread (scrapes on civetweb's).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "broker/membership.h"
#include "broker/peer_links.h"
#include "common/curve.h"
#include "common/event_loop.h"
#include "common/status.h"
#include "common/zmq_socket.h"

namespace prometheus {
class Collectable;
}

namespace sb::broker {

struct PeerUplinksOptions {
  std::string node;     // this node's name, said in each hello
  std::string cluster;  // said in each hello
  // This node's current incarnation, said in each hello.
  std::function<std::string()> incarnation = [] { return std::string("static"); };
  // The node's keypair (--curve-secret-file): the uplinks are CURVE clients.
  std::optional<curve::Keypair> keys;
  bool insecure = false;  // plain text to a non-loopback member allowed
  PeerLinkOptions links;
  // Routing (broker/mesh_server): the id of the stream this broker sends a
  // member on, said in each hello to it (0 when empty); and what the links
  // tell the router — up (with the seq the member takes next and whether its
  // peer socket reads batches, from its welcome), down, and the member's
  // acks. Called on the loop thread; each may be empty.
  std::function<uint64_t(const std::string& peer)> stream;
  std::function<void(const std::string& peer, uint64_t expected, bool batches)> on_up;
  std::function<void(const std::string& peer)> on_down;
  std::function<void(const std::string& peer, uint64_t seq)> on_ack;
};

class PeerUplinks {
 public:
  // Arms the timer on `loop`; the members come through ApplyMembers.
  static std::unique_ptr<PeerUplinks> Create(EventLoop* loop, PeerUplinksOptions options);
  ~PeerUplinks();
  PeerUplinks(const PeerUplinks&) = delete;
  PeerUplinks& operator=(const PeerUplinks&) = delete;

  // InvalidConfig naming the member unless an uplink to it may be made:
  // with CURVE (`curve`), to a loopback endpoint, or with `insecure` — the
  // rule --peer-bind follows (broker/peer_endpoint).
  static Status CheckMember(const Member& member, bool curve, bool insecure);

  // The membership changed. A member the rule above refuses is logged and
  // not linked.
  void ApplyMembers(std::span<const MemberEvent> events);

  // One kPeerData on the member's uplink, if it is up. False if not handed
  // over: not up, or the socket at its high-water mark (the caller keeps the
  // message and tries again later; nothing is dropped here).
  bool SendData(const std::string& peer, uint64_t seq, std::string_view packed);
  // Several kPeerData in one kBatch (`batch`, packed), as SendData.
  bool SendBatch(const std::string& peer, std::string_view batch);

  std::shared_ptr<prometheus::Collectable> collectable() const { return collectable_; }

 private:
  class Collector;
  PeerUplinks(EventLoop* loop, PeerUplinksOptions options);
  void Do(const std::vector<PeerLinks::Action>& actions);
  void Connect(const Member& member);
  // Whether the uplink to `peer` is up (called with mu_ held).
  bool IsUp(const std::string& peer) const;
  bool Send(const std::string& peer, const mesh::Message& msg);
  bool SendFrames(const std::string& peer, std::span<const std::string_view> frames);
  void OnMessage(const std::string& peer, std::span<const std::string_view> frames);
  void OnConnectionEvent(const std::string& peer, ZmqSocket::ConnectionEvent e);
  void Tick();

  EventLoop* loop_;
  PeerUplinksOptions options_;
  // Held by the loop while it works and by scrapes while they read.
  mutable std::mutex mu_;
  PeerLinks links_;
  std::map<std::string, std::unique_ptr<ZmqSocket>, std::less<>> sockets_;
  std::map<std::string, uint64_t, std::less<>> downs_;  // kept after a member leaves
  EventLoop::TimerId tick_timer_ = 0;
  std::shared_ptr<prometheus::Collectable> collectable_;
};

}  // namespace sb::broker
