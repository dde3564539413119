#include "broker/peer_server.h"

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <set>

#include "common/metric_families.h"
#include "common/metric_names.h"
#include "common/mono_time.h"
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
        "Messages read on the peer socket, by result (hello: a link's hello welcomed; heartbeat: "
        "answered; data: routed; refused: a hello from the wrong node or cluster; unhandled: "
        "dropped)",
        prometheus::MetricType::Counter);
    for (const auto& [result, n] :
         {std::pair{m::kResultHello, s_->hellos_}, std::pair{m::kResultHeartbeat, s_->heartbeats_},
          std::pair{m::kResultData, s_->data_}, std::pair{m::kResultRefused, s_->refused_},
          std::pair{m::kResultUnhandled, s_->unhandled_}}) {
      out.Add(f, {{std::string(m::kLabelResult), std::string(result)}}, static_cast<double>(n));
    }
    // One series per member (and --peer-key name): whether its link in is alive.
    std::set<std::string> names;
    for (const auto& [name, key] : s_->member_keys_) names.insert(name);
    for (const PeerKey& k : s_->options_.members) names.insert(k.name);
    std::set<std::string> in;
    for (const auto& [id, link] : s_->inbound_.links()) in.insert(link.node);
    prometheus::MetricFamily& up = out.Family(
        m::kBrokerPeerInboundUp,
        "1 while the member's link to this peer socket is welcomed and heard from within 3 "
        "heartbeats",
        prometheus::MetricType::Gauge);
    for (const std::string& name : names) {
      out.Add(up, {{std::string(m::kLabelPeer), name}}, in.contains(name) ? 1.0 : 0.0);
    }
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
                 "admits only the members (and --peer-key), the uplinks encrypt");
  app.add_option("--peer-key", f->keys,
                 "NAME=PUBKEY: a key admitted on the peer socket besides the members'; repeatable")
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

PeerServer::PeerServer(EventLoop* loop, PeerServerOptions options)
    : loop_(loop), options_(std::move(options)), inbound_(options_.links, options_.cluster) {}

Result<std::unique_ptr<PeerServer>> PeerServer::Create(EventLoop* loop, PeerServerOptions options) {
  std::unique_ptr<PeerServer> server(new PeerServer(loop, std::move(options)));
  PeerServer* self = server.get();
  for (const PeerKey& k : self->options_.members) {
    if (Status s = self->policy_.Admit(k.name, k.public_key); !s.ok()) return s;
  }
  ZmqSocket::Options zo{.kind = ZmqSocket::Kind::kRouter,
                        .recv_hwm = mesh::kRecvHighWaterMark,
                        .max_frame_bytes = static_cast<int64_t>(mesh::kMaxFrameBytes)};
  if (self->options_.keys) {
    zo.curve_server = true;
    zo.curve_secret_key = self->options_.keys->secret_key;
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
  if (Status s = self->socket_->Bind(self->options_.endpoint); !s.ok()) return s;
  if (Status s = self->socket_->Watch(
          loop, kReadBatch,
          [self](std::span<const std::string_view> frames) { self->OnMessage(frames); });
      !s.ok()) {
    return s;
  }
  self->collectable_ = std::make_shared<Collector>(self);
  self->Tick();
  return server;
}

PeerServer::~PeerServer() {
  if (tick_timer_ != 0) loop_->Cancel(tick_timer_);
}

void PeerServer::ApplyMembers(std::span<const MemberEvent> events) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const MemberEvent& e : events) {
    const std::string& name = e.member.name;
    if (auto it = member_keys_.find(name); it != member_keys_.end()) {
      RemoveKey(it->second);
      member_keys_.erase(it);
    }
    if (e.kind == MemberEventKind::kLeft) {
      // Its connection stays open (ZAP is asked at the handshake only), but
      // nothing it sends is answered: its uplink falls silent and is made
      // anew, and the new handshake is refused.
      if (inbound_.Forget(name)) spdlog::info("peer {}: inbound link closed (left)", name);
      continue;
    }
    if (e.kind == MemberEventKind::kChanged) inbound_.Forget(name);
    AdmitKey(name, e.member.curve_public);
    member_keys_[name] = e.member.curve_public;
  }
}

void PeerServer::AdmitKey(const std::string& name, const std::string& key) {
  // Membership validated the key: a failure here is a bug, not a config error.
  if (Status s = policy_.Admit(name, key); !s.ok()) {
    spdlog::error("peer socket: member {} not admitted: {}", name, s.message());
  }
}

void PeerServer::RemoveKey(const std::string& key) {
  policy_.Remove(key);
  // A --peer-key with the same key is still admitted, under its own name.
  for (const PeerKey& k : options_.members) {
    if (k.public_key == key) AdmitKey(k.name, k.public_key);
  }
}

void PeerServer::OnMessage(std::span<const std::string_view> frames) {
  const int64_t now = MonoNowNs();
  std::lock_guard<std::mutex> lock(mu_);
  mesh::Message msg;
  if (frames.size() < 2 || !mesh::Decode(frames.subspan(1), &msg).ok()) {
    ++unhandled_;
    return;
  }
  const std::string_view routing_id = frames[0];
  switch (msg.type) {
    case mesh::Type::kPeerHello: {
      Result<mesh::PeerIntro> hello = mesh::DecodePeerIntro(msg.body);
      if (!hello.ok()) {
        ++unhandled_;
        return;
      }
      // Who the ZAP handler admitted this connection's key as; without
      // CURVE nobody was asked, and the name is taken as said.
      const std::string admitted = curve_ ? socket_->Property("User-Id") : std::string();
      std::string replaced;
      switch (inbound_.OnHello(routing_id, admitted, *hello, now, &replaced)) {
        case InboundLinks::HelloResult::kWrongNode:
          ++refused_;
          spdlog::warn("peer socket: hello from {} refused: its key is member {}'s", hello->node,
                       admitted);
          return;
        case InboundLinks::HelloResult::kWrongCluster:
          ++refused_;
          spdlog::warn("peer socket: hello from {} refused: cluster {}, not {}", hello->node,
                       hello->cluster, options_.cluster);
          return;
        case InboundLinks::HelloResult::kAccepted:
          break;
      }
      ++hellos_;
      spdlog::info("peer {}: inbound link up (incarnation {})", hello->node, hello->incarnation);
      const uint64_t expected =
          options_.on_hello ? options_.on_hello(hello->node, hello->stream) : 0;
      const std::string body = mesh::EncodePeerIntro({.node = options_.node,
                                                      .cluster = "",
                                                      .incarnation = options_.incarnation(),
                                                      .expected = expected,
                                                      .batches = true});
      (void)Reply(routing_id, {.type = mesh::Type::kPeerWelcome, .body = body});
      return;
    }
    case mesh::Type::kPeerHeartbeat: {
      if (inbound_.OnHeard(routing_id, now) == nullptr) {
        // No welcomed link (never said hello, or went silent and was
        // forgotten): unanswered, so the uplink remakes its link.
        ++unhandled_;
        return;
      }
      ++heartbeats_;
      (void)Reply(routing_id, {.type = mesh::Type::kPeerHeartbeat, .echo = msg.stamp});
      return;
    }
    case mesh::Type::kPeerData: {
      const InboundLinks::Link* link = inbound_.OnHeard(routing_id, now);
      if (link == nullptr || !options_.on_data) {
        // Not welcomed (what an uplink queued before its new connection's
        // hello): its sender sends it again from what our welcome says.
        ++unhandled_;
        return;
      }
      ++data_;
      options_.on_data(link->node, msg.seq, msg.body);
      return;
    }
    case mesh::Type::kBatch: {
      // Several kPeerData (our welcome said we read them so), handled in
      // order as if they had come one by one; anything else in a batch is
      // not the protocol and is counted, not handled.
      const InboundLinks::Link* link = inbound_.OnHeard(routing_id, now);
      if (link == nullptr || !options_.on_data) {
        ++unhandled_;
        return;
      }
      const std::string node = link->node;  // on_data may change the links
      const Status s = mesh::ForEachInBatch(msg.body, [&](std::span<const std::string_view> inner) {
        mesh::Message m;
        if (!mesh::Decode(inner, &m).ok() || m.type != mesh::Type::kPeerData) {
          ++unhandled_;
          return;
        }
        ++data_;
        options_.on_data(node, m.seq, m.body);
      });
      if (!s.ok()) ++unhandled_;
      return;
    }
    default:
      // Anything from a welcomed link is a sign of life.
      (void)inbound_.OnHeard(routing_id, now);
      ++unhandled_;
      return;
  }
}

void PeerServer::SendAck(const std::string& node, uint64_t seq) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [routing_id, link] : inbound_.links()) {
    if (link.node == node) {
      (void)Reply(routing_id, {.type = mesh::Type::kPeerAck, .seq = seq});
      // Sent outside a read (from the router's flush, before the loop
      // sleeps): the send can consume libzmq's only notification of data
      // that arrived meanwhile, which would then wait for the next arrival
      // (a heartbeat a second later) while the sender's link times out.
      socket_->CheckReadable();
      return;
    }
  }
}

bool PeerServer::Reply(std::string_view routing_id, const mesh::Message& msg) {
  const mesh::Frames frames(msg);
  std::vector<std::string_view> out;
  out.reserve(1 + frames.views().size());
  out.push_back(routing_id);
  out.insert(out.end(), frames.views().begin(), frames.views().end());
  return socket_->Send(out);
}

void PeerServer::Tick() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const InboundLinks::Link& l : inbound_.Tick(MonoNowNs())) {
      spdlog::info("peer {}: inbound link down ({})", l.node, SilenceReason(options_.links.misses));
      if (options_.on_inbound_down) options_.on_inbound_down(l.node);
    }
  }
  // A fifth of an interval: a silent link is seen within 3 intervals and that.
  tick_timer_ = loop_->AddTimer(
      std::chrono::milliseconds(std::max<int64_t>(1, options_.links.heartbeat_ms / 5)), [this] {
        tick_timer_ = 0;
        Tick();
      });
}

}  // namespace sb::broker
