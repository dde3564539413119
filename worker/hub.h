// Hub: the channel logic of one shard, as a plain class.
//
// Owns: which socket joined which topic under which join_ref, the topic →
// subscribers table, presence on this shard, per-socket limits that are
// decisions (max joined topics, message rate, topic authorization), and every
// protocol answer Phoenix gives (docs/WORKER.md, "Protocol").
// Input is events (a socket connected, sent a decoded message, went away,
// another shard's broadcast or presence came) plus the current time; output
// is a list of `Action`s. Does not: touch sockets, frame WebSocket messages,
// read clocks, or count bytes — the shard (worker/shard) performs the
// actions, and the gateway (worker/gateway) owns transport limits.
// Runs on the shard's loop thread; the Shard owns the one Hub.
//
// Actions are appended in the order the client must see them. A
// kBroadcast names its recipients: the topic's subscribers as they are when
// the call returns (a leaving socket is no longer one). It is emitted even
// when nobody here receives it (the topic may have just emptied), so the
// rest of the cluster sees every client broadcast.
//
// In a cluster (a ClusterView is given) the hub also says what the broker
// must hear: kSubscribe / kUnsubscribe when a topic gets its first local
// subscriber or loses its last, kPresence with each local presence change,
// and `publish` on a client's broadcast. It asks the view whether the broker
// is up and whether a broadcast fits in the outbox. What other shards send
// comes in through Deliver (their broadcasts) and RemoteDiff /
// RemoteSnapshot (their presence); a joiner's presence_state covers the
// whole cluster.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "protocol/history_spec.h"
#include "protocol/mesh.h"
#include "protocol/phoenix.h"
#include "worker/handoff_state.h"
#include "worker/presence.h"
#include "worker/rate_limiter.h"
#include "worker/remote_presence.h"

namespace sb::worker {

using ConnId = uint64_t;

struct HubLimits {
  size_t max_topics_per_socket = 100;
  double messages_per_second = 100;  // sustained rate per socket; <= 0: unlimited
  double message_burst = 200;        // bucket size
  // A join's presence, key and meta JSON together, in bytes; larger:
  // refused {"reason":"presence too large"}.
  size_t max_presence_bytes = 4096;
};

// What the shard does for the hub. Messages in `data` are Phoenix messages
// (protocol/phoenix encodings), not yet WebSocket-framed.
struct Action {
  enum class Kind {
    kSend,       // one message to socket `conn`
    kBroadcast,  // one message to `recipients` except `conn` (0: none excepted), framed once
    // Cluster only:
    kSubscribe,    // `topic` got its first local subscriber
    kUnsubscribe,  // `topic` lost its last local subscriber
    kPresence,     // local presence on `topic` changed: `data` is a mesh PresenceChange JSON
    // History (docs/WORKER.md, History): `conn` joined `topic`, which keeps
    // history, as `join_ref` with push `ref` (and `recover`, if it asked):
    // the shard answers once it knows the stream's position. The actions
    // after this one for `conn` (its presence_state) wait for that answer.
    kJoinHistory,
  };
  Kind kind;
  ConnId conn = 0;
  std::string topic;
  std::string data;
  // kBroadcast: the subscribers of `topic` when the hub call returned; a view
  // into the hub, valid until the next call into it.
  std::span<const ConnId> recipients;
  bool binary = false;
  bool publish = false;  // kBroadcast of a client's message: the rest of the cluster gets it too
  // kBroadcast with `publish` of an HTTP API publish with an idempotency
  // key: no local recipients; the broker decides, and delivers it here too
  // if it is the key's first publish (docs/WORKER.md, Idempotency).
  std::string key;
  // kSend of what the socket is owed whatever it has not read yet (a
  // joiner's presence_state, a refused join's reason): the transport must
  // not refuse it for size.
  bool owed = false;
  // kBroadcast with `publish` on a topic that keeps history: nobody here is
  // a recipient now; the broker sequences it and delivers it back, and only
  // then do the local subscribers get it and the sender (`conn`, 0 for the
  // HTTP API) its ok — with `join_ref` and `ref`, as Phoenix replies.
  bool sequenced = false;
  // kBroadcast (sequenced), kJoinHistory: the client's channel and push.
  std::optional<std::string> join_ref;
  std::optional<std::string> ref;
  // kJoinHistory: where the client says it is, if it asked to recover.
  std::optional<history::Position> recover;
};

// What the hub asks of the shard's link to the broker.
class ClusterView {
 public:
  virtual ~ClusterView() = default;
  // The broker is there to answer (a subscribe's presence snapshot will come).
  virtual bool up() const = 0;
  // A client broadcast of `bytes` fits in the outbox to the broker.
  virtual bool CanPublish(size_t bytes) const = 0;
};

// Who a socket is, from its token (absent when auth is off).
struct Identity {
  std::string sub;
  std::vector<std::string> topic_patterns;  // see TopicAllowed in worker/auth.h
};

class Hub {
 public:
  // `ref_prefix` makes presence phx_refs unique across shards and restarts.
  // `cluster` (not owned, outlives the hub): the shard is part of a cluster;
  // null: a shard on its own.
  Hub(HubLimits limits, std::string ref_prefix, const ClusterView* cluster = nullptr);

  // A new socket. Ids are nonzero (0 means "nobody" in kBroadcast) and are not
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

  // Cluster: a client broadcast that does not fit in the outbox
  // (ClusterView::CanPublish) is refused with {"reason":"unavailable"} and
  // goes nowhere, not even to local sockets. While the broker is not up,
  // joiners get their presence_state at once, with what is known of the
  // other shards.
  //
  // A broadcast from the HTTP API (worker/http_api): `event` with the JSON
  // text `payload_json` to every subscriber of `topic` here and, in a
  // cluster, to the rest of the cluster (`publish`), as a client's broadcast
  // goes. The caller has checked the topic, the event and that the outbox
  // has room (ClusterView::CanPublish). With an idempotency `key` in a
  // cluster, nobody here is a recipient: the publish goes to the broker
  // with its key, and comes back to this shard's subscribers as a delivery
  // if the key is new to the node. Without a cluster the key changes
  // nothing here (the shard's table answers repeats).
  void Publish(std::string_view topic, std::string_view event, std::string_view payload_json,
               std::vector<Action>* out, std::string_view key = {});
  // `topic`'s presence_state as a joiner would get it: local metas and, in a
  // cluster, the other shards'. Nullopt in a cluster when the other shards'
  // presence on `topic` is not known here (no local subscriber, or the
  // broker's snapshot has not come yet).
  std::optional<std::string> PresenceState(std::string_view topic) const;

  // Cluster: another shard's broadcast on `topic`. Returns who receives it
  // here: the topic's subscribers (empty if the last one left after the
  // broker routed it); valid until the next call into the hub.
  std::span<const ConnId> Deliver(std::string_view topic);
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
  // History: the topics matching `rules` (not owned, outlive the hub; null:
  // none) keep history. Cluster only: the broker sequences them.
  void KeepHistory(const history::Rules* rules) { history_ = rules; }
  bool KeepsHistory(std::string_view topic) const {
    return history_ != nullptr && cluster_ != nullptr && history_->Find(topic) != nullptr;
  }
  // Whether `conn` is joined to `topic` as `join_ref` (a history join's
  // answer goes only to the channel that asked).
  bool JoinedAs(ConnId conn, std::string_view topic,
                const std::optional<std::string>& join_ref) const;
  // History: `topic`'s stream broke here (another epoch, or a gap nobody can
  // fill). Every channel on it gets phx_error and is closed, as Phoenix does
  // when a channel crashes — its presence leaves — so that phoenix.js
  // rejoins it and recovers what it can.
  void ErrorTopic(std::string_view topic, std::vector<Action>* out);

  // Hand-off to a new process (docs/UPGRADE.md). The old process exports
  // the shard-wide part (presence refs; the other shards' presence on every
  // topic whose snapshot came) and each socket (its token's patterns, rate
  // bucket and channels with their presence). The new one, on a hub made
  // with the same limits and no sockets yet, imports the session first,
  // then each socket: nothing is emitted — the broker hears the whole state
  // in the new process's hello, and no client hears a presence change.
  void ExportSession(handoff::Session* session) const;
  // False if `conn` is not connected.
  bool ExportConnection(ConnId conn, handoff::Connection* out) const;
  // Refused, changing nothing, once a socket is connected or if a remote
  // presence is not a presence_state.
  Status ImportSession(const handoff::Session& session);
  // Refused, changing nothing, if the id is 0 or connected, a topic comes
  // twice, a presence ref was never issued by the session imported
  // (presence_seq at or past its next one) or a meta is not a JSON object.
  // The identity's subject is not kept (the hub needs only the patterns).
  Status ImportConnection(const handoff::Connection& conn);

  // Sockets joined to `topic` (nullptr if none), in join order.
  const std::vector<ConnId>* Subscribers(std::string_view topic) const;

  size_t connections() const { return conns_.size(); }
  size_t topics() const { return topics_.size(); }
  // Cluster: the other shards' presence this shard holds (its metrics).
  const RemotePresence& remote_presence() const { return remote_; }

  // Counters for metrics (monotonic).
  struct Stats {
    uint64_t joins_ok = 0;
    uint64_t joins_unauthorized = 0;
    uint64_t joins_too_many = 0;       // over max_topics_per_socket
    uint64_t joins_invalid_topic = 0;  // empty, or over limits::kMaxTopicBytes
    uint64_t joins_invalid_presence = 0;
    uint64_t joins_rate_limited = 0;
    uint64_t joins_presence_too_large = 0;  // over max_presence_bytes
    uint64_t joins_refused() const {
      return joins_unauthorized + joins_too_many + joins_invalid_topic + joins_invalid_presence +
             joins_rate_limited + joins_presence_too_large;
    }
    uint64_t leaves = 0;         // phx_leave that closed a channel
    uint64_t broadcasts = 0;     // client events relayed to a topic
    uint64_t unmatched = 0;      // pushes to a topic the socket has not joined
    uint64_t stale_dropped = 0;  // frames with a stale join_ref
    uint64_t rate_limited = 0;
    uint64_t reserved_refused = 0;
    uint64_t broadcasts_refused = 0;       // refused while the cluster outbox was full
    uint64_t remote_invalid = 0;           // remote presence that did not parse
    uint64_t deliveries_from_cluster = 0;  // other shards' broadcasts with local recipients
    uint64_t channels_errored = 0;         // channels closed with phx_error (ErrorTopic)
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

  void HandleOne(ConnId id, const phx::Message& msg, int64_t now_ms, std::vector<Action>* out);
  // Fills the recipients of the kBroadcast actions from `first` on.
  void Resolve(std::vector<Action>* out, size_t first) const;
  void HandleJoin(ConnId id, Conn& conn, const phx::Message& msg, std::vector<Action>* out);
  void HandleLeave(ConnId id, Conn& conn, const phx::Message& msg, std::vector<Action>* out);
  void HandlePush(ConnId id, Conn& conn, const phx::Message& msg, std::vector<Action>* out);
  // Index in conn.joined of `topic`, or -1.
  static int FindJoined(const Conn& conn, std::string_view topic);
  // Removes channel `index` of `conn`: unsubscribes, untracks its presence
  // (a presence_diff broadcast to `topic` except `except`), erases a topic
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
  const ClusterView* cluster_ = nullptr;
  const history::Rules* history_ = nullptr;
  int64_t now_ms_ = 0;  // of the message being handled
  RemotePresence remote_;
  uint64_t next_presence_seq_ = 1;
  std::unordered_map<ConnId, Conn> conns_;
  TopicMap topics_;
  Stats stats_;
};

}  // namespace sb::worker
