// PeerServer: the broker's peer socket — a second ZeroMQ ROUTER, bound on
// TCP (--peer-bind), where the other members' uplinks (broker/peer_uplinks)
// connect.
//
// Owns: that socket on the broker's loop; with the node's CURVE key, its
// encryption and its ZAP handler, which admits exactly the current
// members' public keys (common/zap_policy, fed by the membership's events)
// and any --peer-key besides; the inbound side of the link protocol
// (docs/PROTOCOL.md, Peer links): a hello is welcomed only if it names the
// member the connection's key was admitted for (libzmq's "User-Id"),
// heartbeats are answered at once, each inbound link's liveness is tracked
// (broker/peer_links decides); a welcomed link's kPeerData is handed to the
// router (options' hooks) and the router's acks go back on that link; what
// else arrives is dropped and counted; the connections open (a socket
// monitor); and its metrics, a Prometheus collectable read at scrape time
// under a mutex the loop holds while it works. Does not: decide whether
// the endpoint may be bound without CURVE (broker/peer_endpoint), dial
// out (broker/peer_uplinks), or route anything (broker/mesh_server). Runs
// on the broker's loop thread (scrapes on civetweb's).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "broker/membership.h"
#include "broker/peer_endpoint.h"
#include "broker/peer_links.h"
#include "common/curve.h"
#include "common/event_loop.h"
#include "common/status.h"
#include "common/zap_policy.h"
#include "common/zmq_socket.h"

namespace CLI {
class App;
}

namespace prometheus {
class Collectable;
}

namespace sb::broker {

struct PeerServerOptions {
  std::string endpoint;  // tcp://HOST:PORT (port 0: any)
  // The node's keypair: CURVE and the ZAP handler. Without it the socket
  // is plain text and admits anyone (CheckPeerBind said that was allowed).
  std::optional<curve::Keypair> keys;
  // Keys admitted besides the members' (--peer-key), with a name each.
  std::vector<PeerKey> members;
  // The link protocol: this node's name and cluster (a hello from another
  // cluster is refused), its current incarnation (in welcomes), and the
  // heartbeat interval inbound links are held to.
  std::string node;
  std::string cluster = "default";
  std::function<std::string()> incarnation = [] { return std::string("static"); };
  PeerLinkOptions links;
  // Routing (broker/mesh_server), called on the loop thread; each may be
  // empty. A welcomed hello names the member's stream: on_hello returns the
  // seq this broker takes next on it (the welcome's "expected"). Each
  // kPeerData from a welcomed link goes to on_data; a link in that falls
  // silent is reported by on_inbound_down.
  std::function<uint64_t(const std::string& node, uint64_t stream)> on_hello;
  std::function<void(const std::string& node, uint64_t seq, std::string_view packed)> on_data;
  std::function<void(const std::string& node)> on_inbound_down;
};

// The peer flags as given on the command line.
struct PeerFlags {
  std::string bind;               // --peer-bind; empty: no peer socket
  std::string secret_file;        // --curve-secret-file
  std::vector<std::string> keys;  // --peer-key NAME=PUBKEY, each
  bool insecure = false;          // --insecure
};
// Declares --peer-bind, --curve-secret-file, --peer-key and --insecure.
void AddPeerFlags(CLI::App& app, PeerFlags* flags);
// The options they make: the secret file read (common/curve), each
// --peer-key parsed, CheckPeerBind applied. nullopt without --peer-bind;
// InvalidConfig naming the flag at fault — and for --curve-secret-file or
// --peer-key without --peer-bind, or --peer-key without a secret file (no
// CURVE, nobody to admit or refuse).
Result<std::optional<PeerServerOptions>> PeerOptionsFromFlags(const PeerFlags& flags);

class PeerServer {
 public:
  // Serves the ZAP handler (with keys), then binds and watches, on `loop`.
  static Result<std::unique_ptr<PeerServer>> Create(EventLoop* loop, PeerServerOptions options);
  ~PeerServer();
  PeerServer(const PeerServer&) = delete;
  PeerServer& operator=(const PeerServer&) = delete;

  // The endpoint bound (a port 0 resolved).
  std::string endpoint() const { return socket_->LastEndpoint(); }
  bool curve() const { return curve_; }

  // The membership changed: a joined member's key is admitted, a changed
  // one's replaced, a left one's no longer (unless a --peer-key names it)
  // and its inbound link forgotten.
  void ApplyMembers(std::span<const MemberEvent> events);
  // A kPeerAck on the member's link in, if it has one.
  void SendAck(const std::string& node, uint64_t seq);
  std::shared_ptr<prometheus::Collectable> collectable() const { return collectable_; }

 private:
  class Collector;
  explicit PeerServer(EventLoop* loop, PeerServerOptions options);
  void OnMessage(std::span<const std::string_view> frames);
  bool Reply(std::string_view routing_id, const mesh::Message& msg);
  void Tick();
  // Admits `key` for `name`; logged, not fatal, if the key is not valid.
  void AdmitKey(const std::string& name, const std::string& key);
  void RemoveKey(const std::string& key);

  EventLoop* loop_;
  PeerServerOptions options_;
  std::unique_ptr<ZmqSocket> socket_;
  bool curve_ = false;
  // Held by the loop while it works and by scrapes while they read.
  mutable std::mutex mu_;
  ZapPolicy policy_;
  std::map<std::string, std::string, std::less<>> member_keys_;  // member → Z85 key
  InboundLinks inbound_;
  uint64_t hellos_ = 0, heartbeats_ = 0, refused_ = 0, unhandled_ = 0, data_ = 0;
  EventLoop::TimerId tick_timer_ = 0;
  // The socket monitor's counts: open = succeeded + failed - disconnected.
  int64_t handshakes_ = 0, disconnects_ = 0;
  std::shared_ptr<prometheus::Collectable> collectable_;
};

}  // namespace sb::broker
