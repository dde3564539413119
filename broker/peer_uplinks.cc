#include "broker/peer_uplinks.h"

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "broker/peer_endpoint.h"
#include "common/metric_families.h"
#include "common/metric_names.h"
#include "common/mono_time.h"
#include "protocol/mesh.h"

namespace sb::broker {

namespace m = sb::metrics;

namespace {
// Messages read per wake-up on one uplink: welcomes, heartbeats and acks.
constexpr int kReadBatch = 64;
// Messages libzmq queues for one uplink before a send would block: then
// SendData says no, and the router keeps the rest in the member's outbox
// (bounded, counted) until the connection drains — never a silent drop.
constexpr int kUplinkSendHwm = 1000;
}  // namespace

class PeerUplinks::Collector : public prometheus::Collectable {
 public:
  explicit Collector(const PeerUplinks* u) : u_(u) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    std::lock_guard<std::mutex> lock(u_->mu_);
    MetricFamilies out;
    const std::string peer(m::kLabelPeer);
    prometheus::MetricFamily& up = out.Family(
        m::kBrokerPeerUp,
        "1 while the uplink to the member is welcomed and heard from within 3 heartbeats",
        prometheus::MetricType::Gauge);
    prometheus::MetricFamily& rtt =
        out.Family(m::kBrokerPeerRttSeconds, "The uplink's last heartbeat round trip, seconds",
                   prometheus::MetricType::Gauge);
    for (const auto& [name, l] : u_->links_.links()) {
      out.Add(up, {{peer, name}}, l.state == PeerLinks::State::kUp ? 1.0 : 0.0);
      if (l.rtt_ns >= 0) out.Add(rtt, {{peer, name}}, static_cast<double>(l.rtt_ns) / 1e9);
    }
    prometheus::MetricFamily& downs = out.Family(
        m::kBrokerPeerLinkDownsTotal,
        "Times the uplink to the member went down: silent for 3 heartbeats, its connection "
        "closed, or the member changed",
        prometheus::MetricType::Counter);
    for (const auto& [name, l] : u_->links_.links()) {
      auto it = u_->downs_.find(name);
      out.Add(downs, {{peer, name}}, static_cast<double>(it == u_->downs_.end() ? 0 : it->second));
    }
    return std::move(out).Take();
  }

 private:
  const PeerUplinks* u_;
};

PeerUplinks::PeerUplinks(EventLoop* loop, PeerUplinksOptions options)
    : loop_(loop), options_(std::move(options)), links_(options_.links) {}

std::unique_ptr<PeerUplinks> PeerUplinks::Create(EventLoop* loop, PeerUplinksOptions options) {
  std::unique_ptr<PeerUplinks> u(new PeerUplinks(loop, std::move(options)));
  u->collectable_ = std::make_shared<Collector>(u.get());
  u->Tick();
  return u;
}

PeerUplinks::~PeerUplinks() {
  if (tick_timer_ != 0) loop_->Cancel(tick_timer_);
}

Status PeerUplinks::CheckMember(const Member& member, bool curve, bool insecure) {
  if (curve || insecure || IsLoopbackTcp(member.endpoint)) return Status::Ok();
  return Status::InvalidConfig("member " + member.name + " at " + member.endpoint +
                               ": not a loopback address, and no --curve-secret-file to link to "
                               "it with (or --insecure for plain text)");
}

void PeerUplinks::ApplyMembers(std::span<const MemberEvent> events) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const MemberEvent& e : events) {
    MemberEvent event = e;
    if (e.kind != MemberEventKind::kLeft) {
      if (Status s = CheckMember(e.member, options_.keys.has_value(), options_.insecure); !s.ok()) {
        spdlog::error("peer {}: not linked: {}", e.member.name, s.message());
        // An old link to it goes.
        event.kind = MemberEventKind::kLeft;
      }
    }
    Do(links_.OnMember(event));
  }
}

void PeerUplinks::Do(const std::vector<PeerLinks::Action>& actions) {
  using Kind = PeerLinks::Action::Kind;
  for (const PeerLinks::Action& a : actions) {
    switch (a.kind) {
      case Kind::kConnect:
        Connect(a.member);
        break;
      case Kind::kClose:
        sockets_.erase(a.peer);
        break;
      case Kind::kSendHello: {
        const std::string body =
            mesh::EncodePeerIntro({.node = options_.node,
                                   .cluster = options_.cluster,
                                   .incarnation = options_.incarnation(),
                                   .stream = options_.stream ? options_.stream(a.peer) : 0});
        (void)Send(a.peer, {.type = mesh::Type::kPeerHello, .body = body});
        break;
      }
      case Kind::kSendHeartbeat:
        (void)Send(a.peer, {.type = mesh::Type::kPeerHeartbeat,
                            .stamp = static_cast<uint64_t>(a.stamp_ns)});
        break;
      case Kind::kUp:
        spdlog::info("peer {}: up (rtt {:.3g} ms)", a.peer, static_cast<double>(a.rtt_ns) / 1e6);
        break;
      case Kind::kDown:
        ++downs_[a.peer];
        spdlog::warn("peer {}: down ({})", a.peer, a.reason);
        if (options_.on_down) options_.on_down(a.peer);
        break;
    }
  }
}

void PeerUplinks::Connect(const Member& member) {
  const std::string name = member.name;
  // The old socket first: its connection closes, and the member's peer
  // socket sees the new one say hello.
  sockets_.erase(name);
  ZmqSocket::Options zo{.kind = ZmqSocket::Kind::kDealer,
                        .send_hwm = kUplinkSendHwm,
                        .recv_hwm = mesh::kRecvHighWaterMark,
                        .max_frame_bytes = static_cast<int64_t>(mesh::kMaxFrameBytes)};
  if (options_.keys) {
    zo.curve_secret_key = options_.keys->secret_key;
    zo.curve_public_key = options_.keys->public_key;
    zo.curve_server_key = member.curve_public;
  }
  Result<std::unique_ptr<ZmqSocket>> socket = ZmqSocket::Create(zo);
  Status s = socket.ok() ? Status::Ok() : socket.status();
  if (s.ok()) {
    ZmqSocket& z = **socket;
    s = z.MonitorConnections(
        loop_, [this, name](ZmqSocket::ConnectionEvent e) { OnConnectionEvent(name, e); });
    if (s.ok()) {
      s = z.Watch(loop_, kReadBatch, [this, name](std::span<const std::string_view> frames) {
        OnMessage(name, frames);
      });
    }
    if (s.ok()) s = z.Connect(member.endpoint);
  }
  if (!s.ok()) {
    // The member's record validated; what fails here is the machine (no
    // fds, no memory). The link stays connecting and is not retried until
    // the member changes.
    spdlog::error("peer {}: cannot make its uplink to {}: {}", name, member.endpoint, s.message());
    return;
  }
  sockets_[name] = std::move(socket).value();
}

bool PeerUplinks::IsUp(const std::string& peer) const {
  auto it = links_.links().find(peer);
  return it != links_.links().end() && it->second.state == PeerLinks::State::kUp;
}

bool PeerUplinks::SendData(const std::string& peer, uint64_t seq, std::string_view packed) {
  std::lock_guard<std::mutex> lock(mu_);
  return IsUp(peer) && Send(peer, {.type = mesh::Type::kPeerData, .seq = seq, .body = packed});
}

bool PeerUplinks::SendBatch(const std::string& peer, std::string_view batch) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string_view> frames;
  return IsUp(peer) && mesh::Unpack(batch, &frames).ok() && SendFrames(peer, frames);
}

bool PeerUplinks::Send(const std::string& peer, const mesh::Message& msg) {
  const mesh::Frames frames(msg);
  return SendFrames(peer, frames.views());
}

bool PeerUplinks::SendFrames(const std::string& peer, std::span<const std::string_view> frames) {
  auto it = sockets_.find(peer);
  if (it == sockets_.end()) return false;
  const bool sent = it->second->Send(frames);
  // A send can consume the notification of an arrival.
  it->second->CheckReadable();
  return sent;
}

void PeerUplinks::OnConnectionEvent(const std::string& peer, ZmqSocket::ConnectionEvent e) {
  const int64_t now = MonoNowNs();
  std::lock_guard<std::mutex> lock(mu_);
  switch (e) {
    case ZmqSocket::ConnectionEvent::kHandshakeSucceeded:
      Do(links_.OnConnected(peer, now));
      break;
    case ZmqSocket::ConnectionEvent::kDisconnected:
      Do(links_.OnDisconnected(peer));
      break;
    case ZmqSocket::ConnectionEvent::kHandshakeFailed:
      // Refused (the member does not admit this node's key; its peer socket
      // counts it) or broken off: libzmq does not try a refused one again,
      // so the link makes a new socket a while later.
      Do(links_.OnHandshakeFailed(peer, now));
      break;
  }
}

void PeerUplinks::OnMessage(const std::string& peer, std::span<const std::string_view> frames) {
  const int64_t now = MonoNowNs();
  std::lock_guard<std::mutex> lock(mu_);
  mesh::Message msg;
  if (!mesh::Decode(frames, &msg).ok()) return;
  switch (msg.type) {
    case mesh::Type::kPeerWelcome: {
      Result<mesh::PeerIntro> welcome = mesh::DecodePeerIntro(msg.body);
      if (!welcome.ok()) return;
      const std::vector<PeerLinks::Action> actions = links_.OnWelcome(peer, *welcome, now);
      Do(actions);
      for (const PeerLinks::Action& a : actions) {
        if (a.kind == PeerLinks::Action::Kind::kUp && options_.on_up) {
          options_.on_up(peer, welcome->expected, welcome->batches);
        }
      }
      return;
    }
    case mesh::Type::kPeerAck:
      if (options_.on_ack) options_.on_ack(peer, msg.seq);
      return;
    case mesh::Type::kPeerHeartbeat:
      links_.OnHeartbeat(peer, msg.echo, now);
      return;
    default:
      return;
  }
}

void PeerUplinks::Tick() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    Do(links_.Tick(MonoNowNs()));
  }
  // A fifth of an interval: heartbeats go on time within that, and a
  // silent link is seen within 3 intervals and that.
  tick_timer_ = loop_->AddTimer(
      std::chrono::milliseconds(std::max<int64_t>(1, options_.links.heartbeat_ms / 5)), [this] {
        tick_timer_ = 0;
        Tick();
      });
}

}  // namespace sb::broker
