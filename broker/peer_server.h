// PeerServer: the broker's peer socket — a second ZeroMQ ROUTER, bound on
// TCP (--peer-bind), where the other nodes' brokers will connect.
//
// Owns: that socket on the broker's loop; with the node's CURVE key, its
// encryption and its ZAP handler, which admits only the members' public
// keys (common/zap_policy; the --peer-key flags today, membership later);
// reading what arrives (for now every message is dropped and counted:
// peer links come later); the connections open (a socket monitor); and its
// metrics, a Prometheus collectable read at
// scrape time under a mutex the loop holds while it works. Does not:
// decide whether the endpoint may be bound without CURVE
// (broker/peer_endpoint), or route anything (broker/mesh_server). Runs on
// the broker's loop thread (scrapes on civetweb's).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "broker/peer_endpoint.h"
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
  std::vector<PeerKey> members;  // the keys admitted, with the member's name
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
  std::shared_ptr<prometheus::Collectable> collectable() const { return collectable_; }

 private:
  class Collector;
  PeerServer() = default;

  std::unique_ptr<ZmqSocket> socket_;
  bool curve_ = false;
  // Held by the loop while it works and by scrapes while they read.
  mutable std::mutex mu_;
  ZapPolicy policy_;
  uint64_t unhandled_ = 0;
  // The socket monitor's counts: open = succeeded + failed - disconnected.
  int64_t handshakes_ = 0, disconnects_ = 0;
  std::shared_ptr<prometheus::Collectable> collectable_;
};

}  // namespace sb::broker
