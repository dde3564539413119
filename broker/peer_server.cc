#include "broker/peer_server.h"

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <CLI/CLI.hpp>
#include <algorithm>

#include "common/metric_families.h"
#include "common/metric_names.h"
#include "protocol/mesh.h"

namespace sb::broker {

namespace m = sb::metrics;

namespace {
// Messages read per wake-up, as on the shards' socket.
constexpr int kReadBatch = 512;
// Named in every ZAP request of this socket's handshakes.
constexpr char kZapDomain[] = "switchboard-peer";
}  // namespace

class PeerServer::Collector : public prometheus::Collectable {
 public:
  explicit Collector(const PeerServer* server) : s_(server) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    std::lock_guard<std::mutex> lock(s_->mu_);
    MetricFamilies out;
    out.CounterPerLabel(m::kBrokerPeerAuthFailuresTotal,
                        "Handshakes on the peer socket its ZAP handler refused, by reason",
                        m::kLabelReason, ZapPolicy::kRefusalNames, [&](size_t i) {
                          return s_->policy_.refused(static_cast<ZapPolicy::Refusal>(i));
                        });
    prometheus::MetricFamily& f = out.Family(
        m::kBrokerPeerMessagesTotal,
        "Messages read on the peer socket, by result (unhandled: dropped, no peer links yet)",
        prometheus::MetricType::Counter);
    out.Add(f, {{std::string(m::kLabelResult), std::string(m::kResultUnhandled)}},
            static_cast<double>(s_->unhandled_));
    out.Gauge(m::kBrokerPeerConnections,
              "Connections on the peer socket whose handshake succeeded and that are open",
              static_cast<double>(std::max<int64_t>(0, s_->handshakes_ - s_->disconnects_)));
    return std::move(out).Take();
  }

 private:
  const PeerServer* s_;
};

void AddPeerFlags(CLI::App& app, PeerFlags* f) {
  app.add_option("--peer-bind", f->bind,
                 "tcp://HOST:PORT of the peer socket, for other nodes' brokers (port 0: any)");
  app.add_option("--curve-secret-file", f->secret_file,
                 "the node's CURVE secret key (switchboard keygen): the peer socket encrypts and "
                 "admits only --peer-key members");
  app.add_option("--peer-key", f->keys,
                 "NAME=PUBKEY: a member admitted on the peer socket; repeatable")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_flag("--insecure", f->insecure,
               "allow a --peer-bind on a non-loopback address without --curve-secret-file");
}

Result<std::optional<PeerServerOptions>> PeerOptionsFromFlags(const PeerFlags& flags) {
  if (flags.bind.empty()) {
    if (!flags.secret_file.empty() || !flags.keys.empty()) {
      return Status::InvalidConfig(
          "--curve-secret-file and --peer-key: only with --peer-bind (the peer socket)");
    }
    return std::optional<PeerServerOptions>();
  }
  if (!flags.keys.empty() && flags.secret_file.empty()) {
    return Status::InvalidConfig(
        "--peer-key: only with --curve-secret-file (without CURVE no key is checked)");
  }
  if (Status s = CheckPeerBind(flags.bind, !flags.secret_file.empty(), flags.insecure); !s.ok()) {
    return s;
  }
  PeerServerOptions o{.endpoint = flags.bind, .keys = std::nullopt, .members = {}};
  if (!flags.secret_file.empty()) {
    Result<curve::Keypair> keys = curve::ReadSecretFile(flags.secret_file);
    if (!keys.ok()) return Status::InvalidConfig("--curve-secret-file: " + keys.status().message());
    o.keys = std::move(keys).value();
  }
  for (const std::string& k : flags.keys) {
    Result<PeerKey> key = ParsePeerKey(k);
    if (!key.ok()) return key.status();
    o.members.push_back(std::move(key).value());
  }
  return std::optional<PeerServerOptions>(std::move(o));
}

Result<std::unique_ptr<PeerServer>> PeerServer::Create(EventLoop* loop, PeerServerOptions options) {
  std::unique_ptr<PeerServer> server(new PeerServer());
  PeerServer* self = server.get();
  for (const PeerKey& k : options.members) {
    if (Status s = self->policy_.Admit(k.name, k.public_key); !s.ok()) return s;
  }
  ZmqSocket::Options zo{.kind = ZmqSocket::Kind::kRouter,
                        .recv_hwm = mesh::kRecvHighWaterMark,
                        .max_frame_bytes = static_cast<int64_t>(mesh::kMaxFrameBytes)};
  if (options.keys) {
    zo.curve_server = true;
    zo.curve_secret_key = options.keys->secret_key;
    zo.zap_domain = kZapDomain;
    self->curve_ = true;
  }
  Result<std::unique_ptr<ZmqSocket>> socket = ZmqSocket::Create(zo);
  if (!socket.ok()) return socket.status();
  self->socket_ = std::move(socket).value();
  // The handler before the bind: a handshake that found none would be let
  // in unasked.
  if (self->curve_) {
    if (Status s = self->socket_->ServeZap(loop,
                                           [self](std::span<const std::string_view> request) {
                                             std::lock_guard<std::mutex> lock(self->mu_);
                                             return self->policy_.Decide(request);
                                           });
        !s.ok()) {
      return s;
    }
  }
  // Before the bind too: every connection's events are seen.
  if (Status s =
          self->socket_->MonitorConnections(loop,
                                            [self](ZmqSocket::ConnectionEvent e) {
                                              std::lock_guard<std::mutex> lock(self->mu_);
                                              // A connection refused or lost in its
                                              // handshake is reported closed too.
                                              if (e == ZmqSocket::ConnectionEvent::kDisconnected) {
                                                ++self->disconnects_;
                                              } else {
                                                ++self->handshakes_;
                                              }
                                            });
      !s.ok()) {
    return s;
  }
  if (Status s = self->socket_->Bind(options.endpoint); !s.ok()) return s;
  if (Status s = self->socket_->Watch(loop, kReadBatch,
                                      [self](std::span<const std::string_view>) {
                                        std::lock_guard<std::mutex> lock(self->mu_);
                                        ++self->unhandled_;
                                      });
      !s.ok()) {
    return s;
  }
  self->collectable_ = std::make_shared<Collector>(self);
  return server;
}

PeerServer::~PeerServer() = default;

}  // namespace sb::broker
