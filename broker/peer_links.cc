#include "broker/peer_links.h"

namespace sb::broker {

std::string SilenceReason(int misses) {
  return "no heartbeat for " + std::to_string(misses) + " intervals";
}

PeerLinks::Link* PeerLinks::Find(std::string_view peer) {
  auto it = links_.find(peer);
  return it == links_.end() ? nullptr : &it->second;
}

void PeerLinks::Drop(Link& l, std::string reason, std::vector<Action>* out) {
  if (l.state == State::kUp) {
    out->push_back(
        {.kind = Action::Kind::kDown, .peer = l.member.name, .reason = std::move(reason)});
  }
  l.state = State::kConnecting;
}

std::vector<PeerLinks::Action> PeerLinks::OnMember(const MemberEvent& event) {
  const std::string& name = event.member.name;
  std::vector<Action> out;
  if (Link* l = Find(name)) {
    Drop(*l, event.kind == MemberEventKind::kLeft ? "left" : "member changed", &out);
    if (event.kind == MemberEventKind::kLeft) {
      links_.erase(name);
      out.push_back({.kind = Action::Kind::kClose, .peer = name});
      return out;
    }
  }
  if (event.kind == MemberEventKind::kLeft) return out;
  links_[name] = Link{.member = event.member};
  out.push_back({.kind = Action::Kind::kConnect, .peer = name, .member = event.member});
  return out;
}

std::vector<PeerLinks::Action> PeerLinks::OnConnected(std::string_view peer, int64_t now_ns) {
  std::vector<Action> out;
  Link* l = Find(peer);
  if (l == nullptr) return out;
  // A handshake while up: libzmq replaced a connection whose close we have
  // not been told of; what the old one carried is gone.
  Drop(*l, "reconnected", &out);
  l->state = State::kGreeting;
  l->retry_at_ns = 0;
  l->hello_sent_ns = now_ns;
  l->last_heard_ns = now_ns;
  out.push_back({.kind = Action::Kind::kSendHello, .peer = l->member.name});
  return out;
}

std::vector<PeerLinks::Action> PeerLinks::OnDisconnected(std::string_view peer) {
  std::vector<Action> out;
  // libzmq reconnects by itself: the next handshake says hello again.
  if (Link* l = Find(peer)) Drop(*l, "connection closed", &out);
  return out;
}

std::vector<PeerLinks::Action> PeerLinks::OnHandshakeFailed(std::string_view peer, int64_t now_ns) {
  std::vector<Action> out;
  if (Link* l = Find(peer)) {
    Drop(*l, "handshake failed", &out);
    l->retry_at_ns = now_ns + options_.misses * interval_ns();
  }
  return out;
}

std::vector<PeerLinks::Action> PeerLinks::OnWelcome(std::string_view peer,
                                                    const mesh::PeerIntro& welcome,
                                                    int64_t now_ns) {
  std::vector<Action> out;
  Link* l = Find(peer);
  // The server's key is the member's, so the welcome is the member's; a
  // name that disagrees is a misconfigured member, never up.
  if (l == nullptr || l->state != State::kGreeting || welcome.node != l->member.name) return out;
  l->state = State::kUp;
  l->incarnation = welcome.incarnation;
  l->last_heard_ns = now_ns;
  l->rtt_ns = now_ns - l->hello_sent_ns;
  l->next_beat_ns = now_ns + interval_ns();
  out.push_back({.kind = Action::Kind::kUp, .peer = l->member.name, .rtt_ns = l->rtt_ns});
  return out;
}

void PeerLinks::OnHeartbeat(std::string_view peer, uint64_t echo, int64_t now_ns) {
  auto it = links_.find(peer);
  if (it == links_.end() || it->second.state != State::kUp) return;
  Link& l = it->second;
  l.last_heard_ns = now_ns;
  // Only a stamp this link could have sent: not from the future, not older
  // than the silence that would have remade the link.
  const auto stamp = static_cast<int64_t>(echo);
  if (echo != 0 && stamp <= now_ns && now_ns - stamp <= options_.misses * interval_ns()) {
    l.rtt_ns = now_ns - stamp;
  }
}

std::vector<PeerLinks::Action> PeerLinks::Tick(int64_t now_ns) {
  std::vector<Action> out;
  const int64_t silence = options_.misses * interval_ns();
  for (auto& [name, l] : links_) {
    if (l.state == State::kConnecting) {
      if (l.retry_at_ns != 0 && now_ns >= l.retry_at_ns) {
        l.retry_at_ns = 0;
        out.push_back({.kind = Action::Kind::kConnect, .peer = name, .member = l.member});
      }
      continue;
    }
    if (now_ns - l.last_heard_ns >= silence) {
      // A greeting unanswered that long (a refused hello, a stalled peer)
      // is retried on a new connection too.
      Drop(l, SilenceReason(options_.misses), &out);
      out.push_back({.kind = Action::Kind::kConnect, .peer = name, .member = l.member});
      continue;
    }
    if (l.state == State::kUp && now_ns >= l.next_beat_ns) {
      out.push_back({.kind = Action::Kind::kSendHeartbeat, .peer = name, .stamp_ns = now_ns});
      l.next_beat_ns = now_ns + interval_ns();
    }
  }
  return out;
}

InboundLinks::HelloResult InboundLinks::OnHello(std::string_view routing_id,
                                                std::string_view admitted_as,
                                                const mesh::PeerIntro& hello, int64_t now_ns,
                                                std::string* replaced) {
  if (!admitted_as.empty() && hello.node != admitted_as) return HelloResult::kWrongNode;
  if (hello.cluster != cluster_) return HelloResult::kWrongCluster;
  replaced->clear();
  for (auto it = links_.begin(); it != links_.end(); ++it) {
    if (it->second.node == hello.node && it->first != routing_id) {
      *replaced = it->first;
      links_.erase(it);
      break;
    }
  }
  links_[std::string(routing_id)] =
      Link{.node = hello.node, .incarnation = hello.incarnation, .last_heard_ns = now_ns};
  return HelloResult::kAccepted;
}

const InboundLinks::Link* InboundLinks::OnHeard(std::string_view routing_id, int64_t now_ns) {
  auto it = links_.find(routing_id);
  if (it == links_.end()) return nullptr;
  it->second.last_heard_ns = now_ns;
  return &it->second;
}

std::vector<InboundLinks::Link> InboundLinks::Tick(int64_t now_ns) {
  std::vector<Link> gone;
  const int64_t silence = options_.misses * options_.heartbeat_ms * 1'000'000;
  for (auto it = links_.begin(); it != links_.end();) {
    if (now_ns - it->second.last_heard_ns >= silence) {
      gone.push_back(std::move(it->second));
      it = links_.erase(it);
    } else {
      ++it;
    }
  }
  return gone;
}

bool InboundLinks::Forget(std::string_view node) {
  for (auto it = links_.begin(); it != links_.end(); ++it) {
    if (it->second.node == node) {
      links_.erase(it);
      return true;
    }
  }
  return false;
}

}  // namespace sb::broker
