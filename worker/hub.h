// Hub: the channel logic of one shard, as a plain class.
//
// Owns: which socket joined which topic under which join_ref, the topic →
// subscribers table, presence on this shard, per-socket limits that are
// decisions (max joined topics, message rate, topic authorization), and every
// protocol answer Phoenix gives (../shared/PHOENIX-PROTOCOL.md §3, §4).
// Input is events (a socket connected, sent a decoded message, went away)
// plus the current time; output is a list of `Action`s. Does not: touch
// sockets, frame WebSocket messages, read clocks, or count bytes — the
// gateway (worker/gateway) performs the actions and owns transport limits.
// Runs on the shard's loop thread; the gateway owns the one Hub.
//
// Actions are appended in the order the client must see them, and describe
// the hub's state after the call: a kFanout goes to Subscribers(topic) as
// they are when the call returns. A kFanout is emitted even when no local
// socket would receive it (the topic may have just emptied), so whoever
// relays fan-outs beyond this shard sees every one.
//
// In a cluster (Hub::Options::cluster) the hub also says what the broker
// must hear: kSubscribe / kUnsubscribe when a topic gets its first local
// subscriber or loses its last, kPresence with each local presence change,
// and `publish` on the fan-outs of client broadcasts. What other shards
// report comes back through RemoteDiff / RemoteSnapshot; a joiner's
// presence_state covers the whole cluster.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "protocol/mesh.h"
#include "protocol/phoenix.h"
#include "worker/presence.h"
#include "worker/rate_limiter.h"
#include "worker/remote_presence.h"

namespace sb::worker {

using ConnId = uint64_t;

struct HubLimits {
  size_t max_topics_per_socket = 100;
  double messages_per_second = 100;  // sustained rate per socket; <= 0: unlimited
  double message_burst = 200;        // bucket size
};

// What the gateway does for the hub. Messages in `data` are Phoenix messages
// (protocol/phoenix encodings), not yet WebSocket-framed.
struct Action {
  enum class Kind {
    kSend,    // one message to socket `conn`
    kFanout,  // one message to every subscriber of `topic` except `conn` (0: none excepted),
              // framed once and shared
    kClose,   // close socket `conn` with `close_code`
    // Cluster only:
    kSubscribe,    // `topic` got its first local subscriber
    kUnsubscribe,  // `topic` lost its last local subscriber
    kPresence,     // local presence on `topic` changed: `data` is a mesh PresenceChange JSON
  };
  Kind kind;
  ConnId conn = 0;
  std::string topic;
  std::string data;
  bool binary = false;
  bool publish = false;  // kFanout of a client broadcast: the rest of the cluster gets it too
  uint16_t close_code = 0;
};

// Who a socket is, from its token (absent when auth is off).
struct Identity {
  std::string sub;
  std::vector<std::string> topic_patterns;  // see TopicAllowed in worker/auth.h
};

class Hub {
 public:
  // `ref_prefix` makes presence phx_refs unique across shards and restarts.
  Hub(HubLimits limits, std::string ref_prefix, bool cluster = false);

  // A new socket. Ids are nonzero (0 means "nobody" in kFanout) and are not
  // reused while connected; connecting a connected id changes nothing.
  void Connect(ConnId conn, std::optional<Identity> identity);
  // A decoded client message. `now_ms` is monotonic milliseconds. Heartbeats
  // are answered for any id; other messages from an id not connected are
  // ignored. A refused join changes nothing (a refused rejoin keeps the
  // channel it would have replaced).
  void Handle(ConnId conn, const phx::Message& msg, int64_t now_ms, std::vector<Action>* out);
  // The socket is gone (closed, timed out, failed): it leaves every topic;
  // its presences leave with one presence_diff per topic.
  void Disconnect(ConnId conn, std::vector<Action>* out);

  // Cluster: whether client broadcasts are accepted (the shard's outbox to
  // the broker has room). While not, a broadcast is refused with
  // {"reason":"unavailable"} and goes nowhere, not even to local sockets.
  void SetBroadcastsOpen(bool open) { broadcasts_open_ = open; }
  // Cluster: whether the broker is there to answer (a subscribe's snapshot).
  // While it is not, joiners get their presence_state at once, with what is
  // known of the other shards.
  void SetClusterUp(bool up) { cluster_up_ = up; }
  // Cluster: joiners that have waited kStateWaitMs for the other shards'
  // presence get their presence_state with what is known. Call from a timer.
  void SendOverdueStates(int64_t now_ms, std::vector<Action>* out);
  static constexpr int64_t kStateWaitMs = 1000;
  // Cluster: the broker's presence_diff / presence_state of the other shards
  // on `topic`. Fanned out to local subscribers as a presence_diff (a
  // snapshot: the difference from what was known); ignored for a topic
  // without local subscribers or when malformed (counted).
  void RemoteDiff(std::string_view topic, std::string_view diff_json, std::vector<Action>* out);
  void RemoteSnapshot(std::string_view topic, std::string_view state_json,
                      std::vector<Action>* out);
  // Cluster: everything the broker must know of this shard — topics with
  // local subscribers, and every local presence meta per topic.
  void ClusterState(std::vector<std::string>* topics,
                    std::vector<mesh::TopicState>* presence) const;
  // Sockets joined to `topic` (nullptr if none), in join order.
  const std::vector<ConnId>* Subscribers(std::string_view topic) const;

  size_t connections() const { return conns_.size(); }
  size_t topics() const { return topics_.size(); }

  // Counters for metrics (monotonic).
  struct Stats {
    uint64_t joins_ok = 0;
    uint64_t joins_unauthorized = 0;
    uint64_t joins_too_many = 0;  // over max_topics_per_socket
    uint64_t joins_invalid_presence = 0;
    uint64_t joins_rate_limited = 0;
    uint64_t joins_refused() const {
      return joins_unauthorized + joins_too_many + joins_invalid_presence + joins_rate_limited;
    }
    uint64_t leaves = 0;         // phx_leave that closed a channel
    uint64_t broadcasts = 0;     // client events relayed to a topic
    uint64_t unmatched = 0;      // pushes to a topic the socket has not joined
    uint64_t stale_dropped = 0;  // frames with a stale join_ref
    uint64_t rate_limited = 0;
    uint64_t reserved_refused = 0;
    uint64_t broadcasts_refused = 0;  // refused while the cluster outbox was full
    uint64_t remote_invalid = 0;      // remote presence that did not parse
  };
  const Stats& stats() const { return stats_; }

 private:
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  // Cluster: a joiner of a topic whose other-shard presence is not known yet
  // (the broker's snapshot answers the topic's subscribe) gets its
  // presence_state when the snapshot comes, or after kStateWaitMs.
  struct PendingState {
    ConnId conn;
    std::optional<std::string> join_ref;
    int64_t since_ms;
  };
  struct Topic {
    std::vector<ConnId> subscribers;     // join order
    std::unique_ptr<Presence> presence;  // created by the first track
    bool remote_known = false;           // cluster: a snapshot of the other shards came
    std::vector<PendingState> pending_states;
  };
  using TopicMap = std::unordered_map<std::string, Topic, StringHash, std::equal_to<>>;
  // One channel of a socket. Kept small: an idle socket with one channel is
  // a Conn node, one Joined and one subscriber slot.
  struct Joined {
    // The topic's node in topics_: nodes never move, and a topic is erased
    // only when its last subscriber leaves, so this stays valid while joined.
    TopicMap::value_type* topic;
    std::optional<std::string> join_ref;
    std::string presence_key;   // meaningful when presence_seq != 0
    uint64_t presence_seq = 0;  // 0: not tracked; else phx_ref = ref_prefix_ + base 36
  };
  struct Conn {
    Conn(std::unique_ptr<const std::vector<std::string>> patterns, const HubLimits& limits)
        : topic_patterns(std::move(patterns)),
          rate(limits.messages_per_second, limits.message_burst) {}
    // The identity's patterns, all the hub needs of it; null: auth is off.
    std::unique_ptr<const std::vector<std::string>> topic_patterns;
    std::vector<Joined> joined;  // a handful; searched linearly
    RateLimiter rate;
  };
  // An idle socket with one channel: a conns_ node (Conn + key + link), one
  // Joined on the heap, one ConnId in the topic's subscribers.
  static_assert(sizeof(Joined) <= 88, "per-channel state of a socket");
  static_assert(sizeof(Conn) <= 64, "per-socket state");

  void HandleJoin(ConnId id, Conn& conn, const phx::Message& msg, std::vector<Action>* out);
  void HandleLeave(ConnId id, Conn& conn, const phx::Message& msg, std::vector<Action>* out);
  void HandlePush(ConnId id, Conn& conn, const phx::Message& msg, std::vector<Action>* out);
  // Index in conn.joined of `topic`, or -1.
  static int FindJoined(const Conn& conn, std::string_view topic);
  // Removes channel `index` of `conn`: unsubscribes, untracks its presence
  // (a presence_diff fanned out to `topic` except `except`), erases a topic
  // left empty. Sends nothing to the socket itself.
  void Unsubscribe(ConnId id, Conn& conn, size_t index, ConnId except, std::vector<Action>* out);
  std::string PresenceRef(uint64_t seq) const;
  // The presence_state push of `topic` (local and known remote) for a joiner.
  Action StateFor(ConnId conn, const std::optional<std::string>& join_ref, std::string_view name,
                  const Topic& topic) const;
  // Sends the presence_state of the pending joiners of `entry` that joined
  // at or before `older_than_ms` and are still in the channel.
  void SendPendingStates(TopicMap::value_type& entry, int64_t older_than_ms,
                         std::vector<Action>* out);
  // A kPresence action with one join or one leave.
  void PresenceAction(std::string_view topic, std::string_view key, std::string_view phx_ref,
                      const std::string* meta_json, std::vector<Action>* out) const;

  HubLimits limits_;
  std::string ref_prefix_;
  bool cluster_ = false;
  bool broadcasts_open_ = true;
  bool cluster_up_ = false;
  int64_t now_ms_ = 0;  // of the message being handled
  RemotePresence remote_;
  uint64_t next_presence_seq_ = 1;
  std::unordered_map<ConnId, Conn> conns_;
  TopicMap topics_;
  Stats stats_;
};

}  // namespace sb::worker
