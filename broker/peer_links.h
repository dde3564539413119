// PeerLinks and InboundLinks: the decisions of the links between this
// node's broker and the other members' (docs/CLUSTER.md, Peer links).
//
// PeerLinks owns each member's *uplink* as a state — connecting (no
// connection yet, or one being remade), greeting (connected, hello sent),
// up (welcomed, heard from within `misses` heartbeats) — and says, from the
// events and times passed in, what to do: make or close a member's socket,
// send the hello or a heartbeat, report the link up (with the hello's round
// trip) or down (and why); it keeps each link's last heartbeat round trip.
// A link silent for `misses` intervals is made anew (a new connection, a
// new hello): libzmq would keep a stalled TCP connection open. So is one
// whose handshake failed, `misses` intervals later: libzmq gives up on a
// connection the server refused (a key it does not admit yet) for good.
//
// InboundLinks owns what the peer socket knows of the links that came in:
// for each routing id, the member that said hello on it and when it was
// last heard; whether a hello is accepted (its node must be the member the
// connection's key was admitted for, and its cluster ours); which links fell
// silent. A member has at most one inbound link: a new hello replaces it.
//
// Does not: own sockets, read clocks or encode messages (broker/peer_uplinks
// and broker/peer_server do, and pass "now" in nanoseconds of the
// monotonic clock). Plain data on the broker's loop thread.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "broker/membership.h"
#include "protocol/mesh.h"

namespace sb::broker {

struct PeerLinkOptions {
  int64_t heartbeat_ms = 1000;
  // Silent intervals after which a link is down: the failure detection bound.
  int misses = 3;
};

// "no heartbeat for 3 intervals" for `misses` 3: the reason logged.
std::string SilenceReason(int misses);

class PeerLinks {
 public:
  enum class State { kConnecting, kGreeting, kUp };
  struct Link {
    Member member;
    State state = State::kConnecting;
    int64_t hello_sent_ns = 0;
    int64_t last_heard_ns = 0;
    int64_t next_beat_ns = 0;
    int64_t retry_at_ns = 0;  // connecting after a failed handshake: remade then
    int64_t rtt_ns = -1;      // the last round trip; -1 before the first
    std::string incarnation;  // the member's, from its welcome
  };
  struct Action {
    enum class Kind {
      kConnect,        // make the member's socket anew (closing any), connect it
      kClose,          // close the member's socket
      kSendHello,      // on the member's socket
      kSendHeartbeat,  // with `stamp_ns`
      kUp,             // the link is up; `rtt_ns`: hello to welcome
      kDown,           // the link was up and is not; `reason`
    };
    Kind kind;
    std::string peer;
    Member member;  // kConnect
    int64_t stamp_ns = 0;
    int64_t rtt_ns = 0;
    std::string reason;
    bool operator==(const Action&) const = default;
  };

  explicit PeerLinks(PeerLinkOptions options) : options_(options) {}

  // Membership changed: a joined member gets a socket, a changed one a new
  // socket (its old link goes down), a left one loses it.
  std::vector<Action> OnMember(const MemberEvent& event);
  // The member's socket completed a handshake: say hello on it.
  std::vector<Action> OnConnected(std::string_view peer, int64_t now_ns);
  // The member's connection closed.
  std::vector<Action> OnDisconnected(std::string_view peer);
  // A handshake with the member failed (refused, or broken off).
  std::vector<Action> OnHandshakeFailed(std::string_view peer, int64_t now_ns);
  // A welcome from the member: up, if it names the member and a hello waits for it.
  std::vector<Action> OnWelcome(std::string_view peer, const mesh::PeerIntro& welcome,
                                int64_t now_ns);
  // A heartbeat from the member (`echo`: the stamp it answers, 0 if none).
  void OnHeartbeat(std::string_view peer, uint64_t echo, int64_t now_ns);
  // Time passed: heartbeats due, links silent too long.
  std::vector<Action> Tick(int64_t now_ns);

  const std::map<std::string, Link, std::less<>>& links() const { return links_; }

 private:
  int64_t interval_ns() const { return options_.heartbeat_ms * 1'000'000; }
  Link* Find(std::string_view peer);
  // `l` is connecting from now on; if it was up, a down with `reason` is said.
  void Drop(Link& l, std::string reason, std::vector<Action>* out);
  PeerLinkOptions options_;
  std::map<std::string, Link, std::less<>> links_;
};

class InboundLinks {
 public:
  enum class HelloResult { kAccepted, kWrongNode, kWrongCluster };
  struct Link {
    std::string node;
    std::string incarnation;
    int64_t last_heard_ns = 0;
  };

  InboundLinks(PeerLinkOptions options, std::string cluster)
      : options_(options), cluster_(std::move(cluster)) {}

  // A hello on `routing_id`. `admitted_as`: the member name the ZAP handler
  // admitted the connection's key for; empty on a plain-text socket (anyone
  // may say anything there). `replaced`: the routing id of the member's
  // previous inbound link, if one is forgotten for this one.
  HelloResult OnHello(std::string_view routing_id, std::string_view admitted_as,
                      const mesh::PeerIntro& hello, int64_t now_ns, std::string* replaced);
  // Anything from `routing_id` after its hello: the link's node, or nullptr
  // for a routing id that has no accepted hello (or went silent).
  const Link* OnHeard(std::string_view routing_id, int64_t now_ns);
  // The links silent for `misses` intervals, forgotten now.
  std::vector<Link> Tick(int64_t now_ns);
  // The member left: its link is forgotten (what it sends goes unanswered).
  bool Forget(std::string_view node);

  const std::map<std::string, Link, std::less<>>& links() const { return links_; }

 private:
  PeerLinkOptions options_;
  std::string cluster_;
  std::map<std::string, Link, std::less<>> links_;  // by routing id
};

}  // namespace sb::broker
