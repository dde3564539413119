// Router: the broker's state machine — every mesh message in, every send out.
//
// Owns: the broker's tables (links, interests, per-link queues and credit,
// cluster presence, liveness), the sessions of its shards (hello, rebind of
// a reconnected instance that proves it is the same process — what was in
// flight on its old connection is sent again — reset of strangers), publish routing with seqs
// checked against the shard's outbox window and duplicates suppressed, the member list
// it tells its shards (kMembers) and the settle window it waits out after a start, the
// node's idempotency keys (broker/key_table: a keyed publish's first claim is routed to every
// subscribed shard, its origin included, a repeat to nobody), the node's history (the
// sequencer: broker/history_store gives a sequenced publish its offset, and the router routes
// it to every subscribed shard and its origin; fetches are answered from it, and a new broker
// rebuilds it from the hellos' positions and the restates that follow them), the
// pending-publish accounting behind acks (a publish is done when each recipient consumed it,
// dropped it by policy, or died), the shed-presence repair, heartbeats and expiry, and the counters
// behind the broker's metrics. With several nodes, who sequences each
// history topic (broker/topic_owner over the nodes counted up): a sequenced
// publish on a topic another node owns goes to that owner as kPeerSequence
// and is acked once the owner's sequenced delivery came back and the local
// recipients consumed it; the owner sequences what it is sent and delivers
// it to the asking node as well as to the interested ones; a non-owner keeps
// copies (HistoryStore::Accept) and forwards its shards' fetches to the
// owner, answering them from its copy once the owner's answer is merged in.
// Input is decoded-or-not frames from a routing id plus monotonic
// time; output goes through `LinkSender`: control messages as they are made, queued data messages
// and batches packed. Does not: touch ZeroMQ, read clocks or log (broker/mesh_server does). Plain
// data on the broker's loop thread; the server owns one.
//
// docs/PROTOCOL.md states the protocol this implements; the comments here
// say how.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "broker/history_store.h"
#include "broker/interest_table.h"
#include "broker/key_table.h"
#include "broker/link_table.h"
#include "broker/liveness.h"
#include "broker/peer_stream.h"
#include "broker/pending_presence.h"
#include "broker/presence_registry.h"
#include "broker/settle_window.h"
#include "broker/shard_queue.h"
#include "protocol/mesh.h"

namespace sb::broker {

// Where the router's messages go, each to one routing id; the server sends
// every one as one multipart ZeroMQ message. Both return false when the
// message was not handed over (the routing id's connection is gone): the
// router keeps a data message queued rather than count it as in flight.
class LinkSender {
 public:
  virtual ~LinkSender() = default;
  // A message made for this send (a control message): its frames go as
  // they are (mesh::Frames), never packed first.
  virtual bool Send(const std::string& routing_id, const mesh::Message& msg) = 0;
  // A packed message: one that waited in a queue (mesh::Pack), or a
  // finished mesh::BatchWriter's kBatch.
  virtual bool SendPacked(const std::string& routing_id, std::string_view packed) = 0;
};

// Where the router's messages to other nodes' brokers go (broker/mesh_server
// sends them over the uplinks and the peer socket).
class PeerSender {
 public:
  virtual ~PeerSender() = default;
  // One kPeerData on `peer`'s uplink. False if not handed over (no
  // connection, or the socket's high-water mark): it stays in the outbox and
  // is tried again on a later turn.
  virtual bool SendPeerData(const std::string& peer, uint64_t seq, std::string_view packed) = 0;
  // Several consecutive kPeerData in one kBatch (`batch`, packed whole):
  // handed over whole or not at all, as SendPeerData. Only to a peer whose
  // welcome said it reads batches.
  virtual bool SendPeerBatch(const std::string& peer, std::string_view batch) = 0;
  // One kPeerAck on `peer`'s link in.
  virtual void SendPeerAck(const std::string& peer, uint64_t seq) = 0;
};

struct RouterOptions {
  QueuePolicy queue;
  LivenessPolicy liveness;
  uint64_t epoch = 1;  // nonzero; random per broker start (the caller's choice)
  // The largest message queued for a shard, packed: larger ones (a snapshot
  // or diff of a huge presence) could not travel in a batch within the
  // shard's frame bound, so they are dropped as too large instead.
  size_t max_packed_bytes = mesh::kMaxPackedBytes;
  // A new broker holds publishes and presence snapshots for a while after
  // its first event (its start), so that every live shard has said hello
  // first: otherwise a shard re-sending its unacked publishes right after a
  // broker restart would have them routed before the others re-subscribed.
  // How long (until every shard the hellos' member lists name has said
  // hello, within a bound): broker/settle_window. The default never
  // settles.
  SettlePolicy settle;
  // History (docs/PROTOCOL.md, History): the --history rules, the byte
  // bound and where new streams' epochs come from.
  HistoryOptions history;
  // Presence owed to a shard is queued (kDiff, one per topic) once its
  // backlog, queued and in flight, is at most presence_room messages, or
  // once the oldest change has waited presence_wait_ms and its queue is
  // under an eighth full; until then the changes merge (broker/pending_presence.h).
  // A shard that keeps up is sent each turn's changes at the end of that turn.
  size_t presence_room = 64;
  int64_t presence_wait_ms = 100;
  // And at most once per presence_interval_ms per shard (0: no such bound;
  // --presence-interval-ms): the other shards' changes of a topic reach a
  // client at most that often, merged, as Phoenix's tracker sends other
  // nodes' changes once per broadcast period. For a node whose presence
  // churns in bursts (a shard's clients rejoining at once), where every
  // change is one frame to every member of its topic.
  int64_t presence_interval_ms = 0;
  // Each peer node's outbox bound (--peer-outbox-messages, --peer-outbox-bytes).
  PeerOutboxOptions peer_outbox;
  // This node's name among the members (--node); empty for a node alone.
  // Names the node in history ownership (docs/CLUSTER.md, History across
  // nodes) and tags the streams it starts (history.stream_tag, if unset).
  std::string node;
};

// InvalidConfig unless the queue policy is valid and a queue can hold the
// largest message the mesh carries (options.max_packed_bytes): otherwise a
// broadcast the shard accepted and the broker acked could be dropped as too
// large for every queue. A shard cannot see the broker's bound, so the
// broker refuses to start with one it could not honour.
Status ValidateRouterOptions(const RouterOptions& options);

// Why a message a shard would have received was not delivered (or, for
// one in flight when its link went, may not have been).
enum class DropReason : uint8_t {
  kShed,        // shed from a full queue (shed_oldest)
  kDisconnect,  // dropped with a full queue and its link (disconnect), or the link was replaced
  kTooLarge,    // larger than a queue's byte bound alone
  kExpired,     // queued or in flight for a link that went silent (liveness)
  kCount
};

// Frames the broker refused to act on.
enum class Refused : uint8_t {
  kBadFrame,     // not a mesh v1 message, or a body that does not decode
  kStranger,     // a routing id that has not said hello (answered with kReset)
  kDuplicate,    // a publish already routed (a resend after a reconnect)
  kBadPresence,  // presence the registry refused
  kBadRebind,    // a hello for a live instance from another connection, without its token
  kBadSeq,       // a publish seq of 0, or further past the last acked than the shard's outbox
  kCount
};

class Router {
 public:
  Router(RouterOptions options, LinkSender* sender);

  // One message from `routing_id`: the frames after the routing id.
  void OnMessage(std::string_view routing_id, std::span<const std::string_view> frames,
                 int64_t now_us);
  // Heartbeats when due, expiry of silent links. Call at least every
  // liveness interval / 4 (sooner is harmless).
  void OnTick(int64_t now_us);
  // End of a loop turn: sends what credit allows on every link, repairs
  // shed presence, sends the acks this turn completed. Appends each sent
  // data message's queue delay (µs) to `*delays_us` if given.
  void Flush(int64_t now_us, std::vector<int64_t>* delays_us = nullptr);
  // When OnTick next has work (heartbeat or expiry), monotonic µs.
  int64_t NextTickUs(int64_t now_us) const;

  // --- Peer nodes (docs/CLUSTER.md, Routing between nodes) ---
  // Each member node is a pseudo-link: a LinkId of its own in the interest
  // table (its interest) and the presence registry (its shards' metas), so a
  // broadcast and a presence diff reach it as they reach a shard; what goes
  // to it is pushed to its outbox (broker/peer_stream) and sent, at Flush, by
  // `PeerSender`. One hop: what comes from a peer goes to local shards only.
  void SetPeerSender(PeerSender* sender) { peer_sender_ = sender; }
  // A member joined (a no-op if known).
  void AddPeer(const std::string& name);
  // A member left: its interest, presence (one leave diff per topic) and
  // outbox go.
  void RemovePeer(const std::string& name, int64_t now_us);
  // The stream this broker sends `name` on, named in its uplink's hello:
  // the epoch for the member's first addition, another id each time it is
  // added again. A member that left and came back (its etcd record expired
  // and was written anew) gets a new outbox numbered from 1; under the old
  // id its broker, which took the old outbox's seqs, would drop the new
  // ones as duplicates. The epoch for a name not known.
  uint64_t PeerStream(std::string_view name) const;
  // The uplink to `name` was welcomed: it takes `expected` next on this
  // broker's stream (0: nothing of it). The outbox resumes from there, and
  // this node's interest snapshot follows. `batches`: its peer socket reads
  // several kPeerData in one kBatch (the welcome said so); they go so.
  void OnPeerUp(const std::string& name, uint64_t expected, bool batches = false);
  // The uplink is down: nothing is sent until it is up again.
  void OnPeerDown(const std::string& name);
  // `name`'s hello on the peer socket names its `stream`: returns the seq
  // this broker takes next (the welcome's "expected").
  uint64_t OnPeerHello(const std::string& name, uint64_t stream, int64_t now_us);
  // `name`'s link in went silent (3 heartbeats): its metas leave, one diff
  // per topic to the local shards. Its interest is kept: what is broadcast
  // meanwhile waits in its outbox.
  void OnPeerInboundDown(const std::string& name, int64_t now_us);
  // A kPeerData from `name` (its link in): seq and the packed message.
  void OnPeerData(const std::string& name, uint64_t seq, std::string_view packed, int64_t now_us);
  // A kPeerAck on the uplink to `name`.
  void OnPeerAck(const std::string& name, uint64_t seq);
  // Whether an up peer has messages its sender did not take (retry soon).
  bool PeerBacklog() const;
  // The node that sequences `topic` (docs/CLUSTER.md, History across
  // nodes): this one's name (or "" for a node alone) or a member's.
  std::string_view OwnerOf(std::string_view topic) const;
  // The nodes counted up for ownership, sorted: this node and every member
  // whose link in said hello and has not gone silent since (the rule that
  // keeps its presence).
  const std::vector<std::string>& owner_nodes() const { return owner_nodes_; }

  // --- Introspection (metrics, tests) ---
  struct PeerView {
    const std::string& name;
    LinkId id;
    bool up;
    const PeerOutbox& out;
    const PeerInbox& in;
    uint64_t routed_out;  // kPeerData handed to the uplink
    uint64_t routed_in;   // kPeerData taken from the peer
    size_t interest_topics;
  };
  void ForEachPeer(const std::function<void(const PeerView&)>& fn) const;
  LinkId PeerId(std::string_view name) const;
  struct LinkView {
    LinkId id;
    const std::string& shard;  // from the hello
    uint64_t instance;
    const ShardQueue& queue;
    size_t in_flight;                 // sent, not yet credited back
    const PendingPresence& presence;  // presence changes not yet queued for it, merged
  };
  void ForEachLink(const std::function<void(const LinkView&)>& fn) const;
  LinkId FindInstance(uint64_t instance) const;

  struct Counters {
    uint64_t publishes = 0;         // publishes routed (duplicates not included)
    uint64_t routed = 0;            // kDeliver messages queued (one per recipient)
    uint64_t delivered = 0;         // kDeliver messages sent
    uint64_t diffs = 0;             // kDiff messages queued
    uint64_t presence_changes = 0;  // per-topic presence changes owed to shards, before merging
    uint64_t snapshots = 0;         // kSnapshot messages queued
    uint64_t acks = 0;              // kAck messages sent
    uint64_t hellos = 0;
    uint64_t rebinds = 0;  // hellos from an instance already linked
    uint64_t resent = 0;   // deliveries in flight on a rebound link's old connection, queued again
    uint64_t send_failed = 0;   // data sends not handed over (kept queued)
    uint64_t expired = 0;       // links dropped as silent
    uint64_t disconnected = 0;  // links dropped by the disconnect policy
    uint64_t dropped[static_cast<size_t>(DropReason::kCount)] = {};
    // Entries of hellos left out (the rest of each hello was taken).
    uint64_t hello_dropped[static_cast<size_t>(mesh::HelloDrop::kCount)] = {};
    uint64_t refused[static_cast<size_t>(Refused::kCount)] = {};
    uint64_t members_sent = 0;  // kMembers messages sent
    // Keyed publishes whose key and topic an earlier publish had claimed
    // within mesh::kKeyTtlMs: acked, not routed.
    uint64_t idempotent_repeats = 0;
    // kPeerData whose message the router could not act on (a bad frame, a
    // type no peer sends, a sequenced deliver), or from a node not a member.
    uint64_t peer_refused = 0;
    // A peer's per-topic presence snapshot over kMaxBodyBytes: not sent.
    uint64_t peer_too_large = 0;
    // History across nodes: sequenced publishes of local shards sent to
    // their topic's owner (again when the owner changed before it answered);
    // kPeerSequence sequenced here for other nodes; fetches sent to an owner;
    // changes of the set of nodes ownership is computed over.
    uint64_t sequence_forwarded = 0;
    uint64_t sequenced_for_peers = 0;
    uint64_t fetches_forwarded = 0;
    uint64_t owner_set_changes = 0;
    // Sequenced deliveries from a node that is not the topic's owner (as
    // this broker counts): dropped.
    uint64_t sequenced_not_owner = 0;
  };
  const Counters& counters() const { return counters_; }
  uint64_t epoch() const { return options_.epoch; }
  // How the settle window ended (kNotYet while it lasts).
  SettleEnd settle_end() const { return settle_.end(); }
  // What the last kMembers said: the shards linked, and while settling the
  // ones still expected; sorted.
  const std::vector<std::string>& members() const { return members_; }
  size_t links() const { return links_.size(); }
  const InterestTable& interests() const { return interests_; }
  const PresenceRegistry& presence() const { return presence_; }
  const KeyTable& keys() const { return keys_; }
  const HistoryStore& history() const { return history_; }

 private:
  // A publish waiting for its recipients.
  // A broadcast from a peer node waits the same way: `origin` is the
  // peer's LinkId, `seq` its stream's seq and `stream` that stream; when
  // done, the peer's inbox is told (it acks what is done, not what is taken).
  struct Pending {
    LinkId origin;
    uint64_t seq;
    uint32_t remaining;
    uint64_t stream = 0;
    // A peer's sequenced delivery of a publish this node forwarded: the
    // forwarded publish's own pending id, settled once this one is done.
    uint64_t then = 0;
  };
  struct Link {
    Link(const QueuePolicy& policy) : queue(policy) {}
    std::string shard;
    uint64_t instance = 0;
    std::string token;  // the hello's secret: only a hello with it re-binds the link
    ShardQueue queue;
    // The data messages sent and not yet credited back, oldest first: a
    // credit of n consumes the first n. Kept whole (a reference to the
    // payload) so that a rebind can send them again.
    std::deque<QueuedMessage> in_flight;
    // As origin: the last seq routed (duplicates are at or below it), and
    // the pending ids of its publishes in seq order, for the cumulative ack.
    uint64_t last_seq = 0;
    bool seq_known = false;
    uint64_t done_seq = 0;  // every publish up to it is done (what kAck says)
    // The most publishes the shard keeps unacked: no valid seq is further
    // than this past done_seq (it would not fit in the shard's outbox).
    uint64_t outbox = 0;
    std::deque<uint64_t> publishes;
    bool ack_due = false;
    // A kDiff or kSnapshot for this link was dropped: once its queue has
    // drained, a snapshot of each of its topics puts its presence right.
    bool presence_dirty = false;
    // Presence changes owed to it, merged per topic until its backlog is
    // small (ReleasePresence): what waits is bounded by the presence, not
    // by how fast it changes.
    PendingPresence presence;
    int64_t presence_released_us = 0;  // the last ReleasePresence that queued any
    // Said hello since the last AnnounceMembers: owed a kMembers.
    bool members_due = false;
    // The kRestate messages its hello announced that have not come yet.
    uint64_t restates_due = 0;
  };
  // A queued message's tag: a pending publish id (>= kFirstPublishTag),
  // kPresenceTag for a kDiff / kSnapshot, kHistoryTag for a kHistory (it
  // settles no publish and, dropped, needs no repair: the shard fetches
  // again when its connection changes).
  static constexpr uint64_t kPresenceTag = 1;
  static constexpr uint64_t kHistoryTag = 2;
  static constexpr uint64_t kFirstPublishTag = 3;

  struct Peer {
    explicit Peer(PeerOutboxOptions o) : out(o) {}
    std::string name;
    LinkId id = kNoLink;
    uint64_t stream = 0;  // its outbox's id (PeerStream)
    PeerOutbox out;
    PeerInbox in;
    bool up = false;
    bool batches = false;  // its peer socket reads kPeerData in a kBatch
    // Owed at the next Flush once settled: this node's interest snapshot;
    // per-topic presence snapshots (the peer asked for the topics, or the
    // local metas changed wholesale); both again after the outbox dropped.
    bool interest_due = false;
    bool resync = false;
    bool presence_lost = false;  // its metas were dropped (link in down)
    std::set<std::string, std::less<>> presence_due;
    uint64_t routed_out = 0, routed_in = 0;
    // Counted up for history ownership: presumed so from its addition (a
    // broker that just started has heard nobody yet) until it has not said
    // hello within liveness interval × misses; then from its hello until
    // its link in goes silent.
    bool counted = true;
    bool heard = false;
    int64_t since_us = -1;  // when this router first ticked with it unheard
  };
  // A sequenced publish of a local shard sent to its topic's owner, until
  // the owner's sequenced delivery of it comes back.
  struct Forwarded {
    LinkId origin;  // the shard's link
    uint64_t tag;   // its pending id
    uint8_t flags;
    uint64_t stamp;
    std::string topic;
    std::string body;
    std::string owner;  // the node it was sent to
  };
  // A local shard's fetch sent to the topic's owner, until answered.
  struct RemoteFetch {
    LinkId from;
    uint64_t request;  // the shard's id
    std::string topic;
    uint64_t after;
    uint32_t limit;
    std::string owner;
  };
  // The owner of `topic` if it is another node (nullptr: this one).
  Peer* RemoteOwner(std::string_view topic);
  // The set of nodes counted up may have changed: recomputes it; if it did,
  // Flush retargets.
  void RecomputeOwners();
  // Sends what waits on a node that no longer owns its topic to the new
  // owner (or sequences it here).
  void Retarget(int64_t now_us);
  // Sends forwarded publish `f` (origin seq `seq`) to `owner`.
  void SendToOwner(Peer& owner, uint64_t instance, uint64_t seq, const Forwarded& f);
  // The owner's side: a kPeerSequence from `peer`; true if done later.
  bool SequenceForPeer(Peer& peer, uint64_t seq, const mesh::Message& msg, int64_t now_us);
  // A sequenced delivery from the owner (`msg`): kept as a copy, then
  // routed to the local subscribers and the origin shard; true if done later.
  bool DeliverSequencedFromPeer(Peer& peer, uint64_t seq, const mesh::Message& msg,
                                std::string_view packed, int64_t now_us);
  // This node sequences a publish of shard `origin` (instance) numbered
  // `seq`: its offset here, the sequenced kDeliver (`*packed`) pushed to
  // every interested peer and to `also` (if given) once; returns the local
  // shards subscribed, for the caller to queue it for.
  std::vector<LinkId> SequenceHere(uint64_t origin, uint64_t seq, uint8_t flags, uint64_t stamp,
                                   std::string_view topic, std::string_view body, Peer* also,
                                   std::string* packed, int64_t now_us);
  // Queues `payload` tagged `tag` for each of `to`, local links (a copy:
  // Enqueue may remove links); one gone settles its share at once.
  void EnqueueEach(std::vector<LinkId> to, const Payload& payload, uint64_t tag, int64_t now_us);
  // The owner's answer to a forwarded fetch: merged into the copy, then the
  // shard is answered from it.
  void OnPeerHistory(const mesh::Message& msg, int64_t now_us);
  // The packed kHistory answering fetch `request` from this node's store.
  std::string HistoryAnswer(uint64_t request, std::string_view topic, uint64_t after,
                            uint32_t limit, int64_t now_us);
  Peer* FindPeer(std::string_view name);
  Peer* FindPeer(LinkId id);
  void PushToPeer(Peer& peer, std::string packed);
  // Local interest in `topic` may have changed: the peers get +/- if it did.
  void LocalInterestChanged(std::string_view topic);
  // Every peer interested in `topic` is owed a per-topic presence snapshot.
  void LocalPresenceChanged(std::string_view topic);
  void HandlePeerData(Peer& peer, uint64_t seq, std::string_view packed, int64_t now_us);
  // Acts on one taken message; true if it is done later (a broadcast queued
  // for local shards), false if it is done now.
  bool HandlePeerMessage(Peer& peer, uint64_t seq, std::string_view packed, int64_t now_us);
  // Queues a peer's broadcast (stream seq `seq`) for the local shards; the
  // inbox is told it is done once they all consumed it. False if it was
  // refused (a sequenced one).
  bool DeliverFromPeer(Peer& peer, uint64_t seq, const mesh::Message& msg, std::string_view packed,
                       int64_t now_us);
  void FlushPeers(bool settling);

  void OnHello(std::string_view routing_id, const mesh::Message& msg, int64_t now_us);
  void OnPublish(LinkId id, Link& link, const mesh::Message& msg, int64_t now_us);
  // Who gets a publish: every other subscribed link (a client's broadcast:
  // the origin delivered it itself), every subscribed link (a keyed one:
  // the origin waits for the broker's verdict; a sequenced one also goes to
  // its origin, subscribed or not), or nobody (a keyed repeat).
  enum class To : uint8_t { kOthers, kAll, kNobody };
  // Queues a publish for its recipients; acked when they are done. A
  // sequenced one is given its offset here (once settled: the restates
  // have raised every topic's top).
  void Route(LinkId id, Link& link, uint64_t seq, uint8_t flags, uint64_t stamp,
             std::string_view topic, std::string_view body, To to, int64_t now_us);
  // Whether the broker is still settling at `now_us` (see RouterOptions).
  bool Settling(int64_t now_us);
  // Once settled: routes the publishes held meanwhile, in arrival order.
  void ReleaseHeld(int64_t now_us);
  void OnPresence(LinkId id, const mesh::Message& msg, int64_t now_us);
  void OnFetch(LinkId id, Link& link, const mesh::Message& msg, int64_t now_us);
  // Answers the fetch from this node's store, or sends it to the topic's
  // owner if that is another node (answered when the owner's answer comes).
  void FetchOrForward(LinkId to, Link& link, uint64_t request, std::string_view topic,
                      uint64_t after, uint32_t limit, int64_t now_us);
  // Queues the kHistory answering fetch `request` for `to`.
  void AnswerFetch(LinkId to, Link& link, uint64_t request, std::string_view topic, uint64_t after,
                   uint32_t limit, int64_t now_us);
  void OnRestate(Link& link, const mesh::Message& msg, int64_t now_us);
  void OnCredit(Link& link, uint32_t n);
  // Queues a data message for `to`; accounts for whatever the push drops.
  void Enqueue(LinkId to, Link& link, const Payload& payload, uint64_t tag, int64_t now_us);
  // Calls `fn` for each link subscribed to `topic` but `origin`. `fn` may
  // remove links (the disconnect policy does).
  void ForEachRecipient(LinkId origin, std::string_view topic,
                        const std::function<void(LinkId, Link&)>& fn);
  // Owes `delta` on `topic` to every shard interested in it but `origin`
  // (merged into what each is owed already; ReleasePresence queues it).
  void SendDiffs(LinkId origin, const std::vector<TopicDiff>& diffs, int64_t now_us);
  void SendDiff(LinkId origin, std::string_view topic, const PresenceDelta& delta, int64_t now_us);
  // Queues what `link` is owed as kDiffs, one per topic, once its backlog
  // is small, or once the oldest change has waited presence_wait_ms and
  // its queue has room.
  void ReleasePresence(LinkId id, Link& link, int64_t now_us);
  void SendSnapshot(LinkId to, Link& link, std::string_view topic, int64_t now_us);
  void SendControl(const std::string& routing_id, const mesh::Message& msg);
  // Tells every shard the members when they changed, and a shard that said
  // hello since the last turn in any case (it may be new, or have restarted
  // under the same name and know nothing).
  void AnnounceMembers();
  // A message tagged `tag` is finished with for one recipient (consumed,
  // dropped, or the recipient died): the publish it carries, if any, is one
  // recipient nearer done.
  void Settle(uint64_t tag);
  // Counts `dropped` under `reason` and settles them; a dropped presence
  // message marks `link` for repair.
  void Dropped(Link* link, std::vector<QueuedMessage>& dropped, DropReason reason);
  // Drops the link; what was queued or in flight for it is counted under
  // `reason`.
  void RemoveLink(LinkId id, int64_t now_us, DropReason reason = DropReason::kDisconnect);
  // Sends from `link`'s queue as many messages as its credit allows.
  void SendWhatCreditAllows(LinkId id, Link& link, int64_t now_us, std::vector<int64_t>* delays_us);
  Link* Find(LinkId id);

  RouterOptions options_;
  LinkSender* sender_;
  LinkTable links_;
  InterestTable interests_;
  PresenceRegistry presence_;
  int64_t last_tick_ms_ = 0;  // the last OnTick (a much later one: this broker stalled)
  Liveness liveness_;
  std::unordered_map<LinkId, std::unique_ptr<Link>> state_;
  std::unordered_map<uint64_t, LinkId> by_instance_;
  std::unordered_map<uint64_t, Pending> pending_;
  uint64_t next_tag_ = kFirstPublishTag;
  std::vector<LinkId> recipients_;  // Route's, reused per publish (Route never nests)
  std::vector<QueuedMessage> scratch_;
  mesh::BatchWriter batch_;
  mesh::BatchWriter peer_batch_;  // FlushPeers' batches of kPeerData
  bool nested_ = false;           // handling the messages of a kBatch
  // Publishes held while settling, in arrival order.
  struct Held {
    LinkId origin;
    uint64_t seq;
    uint8_t flags;
    uint64_t stamp;
    std::string topic;
    std::string body;
    To to;
  };
  std::vector<Held> held_;
  // Fetches held while settling, answered after the held publishes.
  struct HeldFetch {
    LinkId from;
    uint64_t request;
    std::string topic;
    uint64_t after;
    uint32_t limit;
  };
  std::vector<HeldFetch> held_fetches_;
  KeyTable keys_;
  HistoryStore history_;
  SettleWindow settle_;
  std::vector<std::string> members_;  // as last announced
  bool members_dirty_ = false;        // a hello, a link gone or the window ended since
  std::string last_reset_;            // the stranger last answered with kReset, and when
  int64_t last_reset_us_ = 0;
  Counters counters_;
  PeerSender* peer_sender_ = nullptr;
  std::map<std::string, std::unique_ptr<Peer>, std::less<>> peers_;
  std::unordered_map<LinkId, Peer*> peer_ids_;
  // Additions of each member so far: its next outbox's stream is the epoch
  // plus this.
  std::map<std::string, uint64_t, std::less<>> peer_additions_;
  // Topics at least one local shard subscribes (what the peers are told).
  std::set<std::string, std::less<>> local_topics_;
  // kPeerData that came while settling, handled once settled.
  struct HeldPeerData {
    std::string peer;
    uint64_t stream;  // the peer's stream when it came: one started anew since drops it
    uint64_t seq;
    std::string packed;
  };
  std::vector<HeldPeerData> held_peer_;
  // History across nodes (empty for a node alone).
  std::vector<std::string> owner_nodes_;
  bool retarget_due_ = false;
  // Keyed by (origin instance, seq).
  std::map<std::pair<uint64_t, uint64_t>, Forwarded> forwarded_;
  std::map<uint64_t, RemoteFetch> remote_fetches_;  // by the id sent to the owner
  uint64_t next_remote_fetch_ = 1;
};

}  // namespace sb::broker
