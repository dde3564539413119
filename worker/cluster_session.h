// ClusterSession: this shard's side of the mesh protocol (docs/PROTOCOL.md).
//
// Owns: the session with the node's broker — hello with the shard's whole
// state (on each new connection, at once), welcome and epoch, reset,
// heartbeats both ways and the broker's liveness, the broker's last member
// list (sent back in every hello, so a new broker knows whom to expect), the keyed publishes of
// the last five minutes (restated in every hello, so a new broker knows the node's idempotency
// keys); the history streams this shard holds (named in every hello, their copies restated
// right after it, so a new broker rebuilds history from them), fetches of history and their
// answers; the outbox of publishes
// (numbered, kept until acked, sent in order in windows paced by acks and re-sent after every
// welcome, bounded: when full, the hub refuses broadcasts); duplicate suppression of deliveries per
// origin instance (a bounded table); and the credit the shard grants back, once per loop turn. Does
// not: touch ZeroMQ (worker/broker_link does, through Transport), know sockets or channels (the
// shard and its hub, through Handler), or read clocks. Plain data on the shard's loop thread; the
// Shard owns one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "protocol/mesh.h"
#include "worker/handoff_state.h"

namespace sb::worker {

struct ClusterOptions {
  std::string shard;      // name in the broker's logs and metrics
  uint64_t instance = 0;  // random per process start, nonzero
  // Random per process start (mesh::kTokenHexDigits hex digits), known only
  // to this shard and its broker: proves a reconnect is this process.
  std::string token;
  uint32_t window = 1000;  // messages the broker may send ahead of our credit
  size_t max_outbox_messages = 32768;
  size_t max_outbox_bytes = 64u << 20;
  // Publishes sent and not yet acked, at most, in messages and in bytes
  // (topic and message; one larger publish still goes, alone): the rest of
  // the outbox waits for acks. After a broker restart a shard re-sends its
  // whole outbox; in windows this large, N origins never put more than
  // N × max_unacked deliveries (N × max_unacked_bytes) in a receiving
  // shard's broker queue, so a healthy receiver's queue (the broker's
  // --queue-max-messages / --queue-max-bytes) is not overflowed by the
  // re-sent backlog.
  uint32_t max_unacked = 1000;
  size_t max_unacked_bytes = 4u << 20;
  // Origin instances whose last delivered seq is remembered for duplicate
  // suppression; past it, the one that delivered least recently is
  // forgotten (every shard process start is a new instance, so the table
  // would otherwise grow for the process's whole life).
  size_t max_origins = 4096;
  // The keyed publishes a hello restates, at most this many bytes of keys
  // and topics, the newest first: a hello is one frame (mesh::kMaxFrameBytes)
  // and 100,000 keys on long topics would not fit. Older ones are left out
  // (counted): a new broker does not know them.
  size_t max_hello_key_bytes = 16u << 20;
  // The history copies restated after a hello (kRestate), at most this many
  // bytes of topics and messages: they are queued at once, in the shard's
  // memory until the broker reads them (the link's send queue is not
  // bounded), and a new broker settles only once they have come. Copies
  // beyond it are left out (the handler counts them): a new broker does not
  // hold them.
  size_t max_restate_bytes = 16u << 20;
  int64_t heartbeat_ms = 1000;
  int misses = 3;  // broker silent for heartbeat_ms × misses: it is gone
};

class ClusterSession {
 public:
  class Transport {
   public:
    virtual ~Transport() = default;
    // A message made for this send: its frames go as they are (mesh::Frames).
    // False if it could not be handed over (no connection): the session
    // re-sends what matters after its next hello.
    virtual bool Send(const mesh::Message& msg) = 0;
    // A packed message (a finished mesh::BatchWriter's kBatch); as Send.
    virtual bool SendPacked(std::string_view packed) = 0;
  };
  class Handler {
   public:
    virtual ~Handler() = default;
    // Everything the broker must know of this shard (for a hello).
    virtual void ClusterState(std::vector<std::string>* topics,
                              std::vector<mesh::TopicState>* presence) = 0;
    // Another shard's broadcast for local subscribers of `topic`; `stamp`
    // as the publish carried it (0: none).
    virtual void Deliver(std::string_view topic, std::string_view message, bool binary,
                         uint64_t stamp) = 0;
    // Other shards' presence on `topic`: a presence_diff, or (snapshot) their
    // whole presence_state.
    virtual void RemotePresence(std::string_view topic, std::string_view json, bool snapshot) = 0;
    // A broadcast on a history topic (kFlagSequenced: offset and stream set),
    // this shard's own included: in offset order or not, repeated or not —
    // the topic's stream (worker/history) decides.
    virtual void DeliverSequenced(std::string_view /*topic*/, const mesh::Message& /*msg*/) {}
    // A sequenced publish of this shard is done (acked). As a rule its
    // delivery back came first (the origin is one of its recipients); a
    // keyed repeat the broker routed to nobody gets only this.
    virtual void SequencedAcked(uint64_t /*seq*/) {}
    // The answer to a Fetch (kHistory).
    virtual void History(const mesh::Message& /*msg*/) {}
    // The broker welcomed this shard: fetches it has not answered go again.
    virtual void Welcomed() {}
    // For a hello: the history streams this shard holds, and the copies it
    // restates (each a packed kRestate, mesh::Pack), at most `max_bytes` of
    // topics and messages in all.
    virtual void HistoryState(std::vector<mesh::StreamPosition>* /*positions*/,
                              std::vector<std::string>* /*restates*/, size_t /*max_bytes*/) {}
  };

  ClusterSession(ClusterOptions options, Transport* transport, Handler* handler);

  // Says hello; call once the transport is connecting.
  void Start(int64_t now_ms);
  // The transport has a new connection to the broker's endpoint (its
  // handshake done): whoever is there has not heard from us on it — a new
  // broker, as a rule — so hello at once, rather than when a heartbeat is
  // answered with a reset.
  void OnConnected(int64_t now_ms);
  // Whether a broadcast of `bytes` fits in the outbox and in a mesh message
  // (mesh::kMaxBodyBytes).
  bool CanPublish(size_t bytes) const;
  // Numbers the broadcast and keeps it until acked; Flush sends it (this
  // turn's publishes in one batch, in order) once the broker has welcomed us.
  // One whose topic or message is over the mesh's bounds is counted
  // (too_large) and not published. `stamp`: when the client's message was
  // read, Unix ns (mesh::Message::stamp); 0: not stamped (the shard made it).
  // `key`: an HTTP API publish's idempotency key (mesh::kFlagKeyed), 1..
  // mesh::kMaxKeyBytes, or empty; a keyed publish is remembered with
  // `now_ms` for kKeyTtlMs and restated in every hello, so that a new
  // broker knows the keys this shard accepted. `sequenced`: the topic keeps
  // history (mesh::kFlagSequenced): the broker delivers it to this shard too.
  // Returns its seq (what the broker's delivery of it carries), 0 if it
  // was not published.
  uint64_t Publish(std::string_view topic, std::string_view message, bool binary,
                   uint64_t stamp = 0, std::string_view key = {}, int64_t now_ms = 0,
                   bool sequenced = false);
  // Asks the broker for `topic`'s history after `after`, at most `limit`
  // messages (kFetch), now if it has welcomed this shard; false if not sent
  // (the caller sends it again after the next welcome: Handler::Welcomed).
  bool Fetch(uint64_t id, std::string_view topic, uint64_t after, uint32_t limit);
  void Subscribe(std::string_view topic);
  void Unsubscribe(std::string_view topic);
  // `change_json`: a mesh PresenceChange.
  void Presence(std::string_view topic, std::string_view change_json);

  // One message from the broker (frames after ZeroMQ's).
  void OnMessage(std::span<const std::string_view> frames, int64_t now_ms);
  // Heartbeats, the broker's liveness, hellos while not welcomed.
  void OnTick(int64_t now_ms);
  // End of a loop turn: credit for what was consumed, publishes not yet sent.
  void Flush();

  // Hand-off to a new process (docs/UPGRADE.md). Export writes the
  // session's identity (shard, instance, token), epoch, members, next seq,
  // outbox, dedupe table (by instance) and keyed publishes. The new process
  // makes its session with the old one's shard, instance and token, and
  // imports the rest before Start: its hello is the old process's, so the
  // broker re-binds the instance; the whole outbox goes again after the
  // welcome, as after any hello (the broker knows the seqs it routed), and a
  // delivery the old process handed to clients is dropped as a duplicate.
  // Refused, changing nothing, after Start, when the identity differs from
  // this session's options, or when an outbox seq is out of order or not
  // below next_seq.
  void Export(handoff::Session* session) const;
  Status Import(const handoff::Session& session);

  bool up() const { return up_; }
  // The shards the broker last said it has (kMembers), sorted.
  const std::vector<std::string>& members() const { return members_; }
  uint64_t epoch() const { return epoch_; }
  size_t outbox_messages() const { return outbox_.size(); }
  // Publishes sent and not yet acked (at most options.max_unacked).
  size_t unacked_sent() const { return sent_; }
  // Origin instances remembered for duplicate suppression.
  size_t origins() const { return last_delivered_.size(); }
  size_t outbox_bytes() const { return outbox_bytes_; }
  // Data messages consumed and not yet credited back.
  uint32_t uncredited() const { return consumed_; }
  // Keyed publishes remembered for the hello.
  size_t keys() const { return claims_.size(); }

  struct Counters {
    uint64_t published = 0;          // broadcasts put in the outbox
    uint64_t too_large = 0;          // broadcasts over the mesh's bounds, not published
    uint64_t acked = 0;              // ... and acked
    uint64_t delivered = 0;          // kDeliver handed to local subscribers
    uint64_t sequenced = 0;          // sequenced kDeliver handed to the history streams
    uint64_t histories = 0;          // kHistory answers handed over
    uint64_t fetches = 0;            // kFetch sent
    uint64_t restated = 0;           // kRestate sent after a hello
    uint64_t duplicates = 0;         // kDeliver already delivered (after a resync)
    uint64_t origins_forgotten = 0;  // origin instances dropped from the dedupe table
    uint64_t presence = 0;           // kDiff and kSnapshot received
    uint64_t hellos = 0;
    uint64_t broker_back = 0;  // a broker lost to silence that spoke again as itself
    uint64_t connects = 0;     // new connections to the broker's endpoint
    uint64_t welcomes = 0;
    uint64_t epoch_changes = 0;  // welcomes from a broker with a new epoch
    uint64_t broker_lost = 0;    // the broker went silent
    uint64_t bad_frames = 0;
    uint64_t keys_left_out = 0;  // keyed publishes a hello had no room for
  };
  const Counters& counters() const { return counters_; }

 private:
  struct Outgoing {
    uint64_t seq;
    std::string topic;
    std::string message;
    uint8_t flags;
    uint64_t stamp;
    std::string key;
  };
  struct Claim {
    std::string key;
    std::string topic;
    uint64_t seq;
    int64_t at_ms;
  };
  void SendHello(int64_t now_ms);
  // Sends `restates` (packed kRestate) in batches; false if one could not be
  // handed over.
  bool SendRestates(const std::vector<std::string>& restates);
  // Forgets the keyed publishes older than mesh::kKeyTtlMs at `now_ms`.
  void ExpireClaims(int64_t now_ms);
  bool Send(const mesh::Message& msg);
  void SendPublishes();
  void OnOne(const mesh::Message& msg, int64_t now_ms);
  // Whether one more publish (the sent_-th) may go now (max_unacked).
  bool MaySendNext() const;
  // Makes room in last_delivered_ for one more origin (max_origins).
  void ForgetAnOriginIfFull();

  ClusterOptions options_;
  Transport* transport_;
  Handler* handler_;
  bool up_ = false;
  bool resync_ = false;  // a send failed: say hello again at the next tick
  bool silent_ = false;  // not up because the broker went silent (it may speak again)
  uint64_t epoch_ = 0;
  std::vector<std::string> members_;
  int64_t last_heard_ms_ = 0;
  int64_t last_hello_ms_ = 0;
  int64_t last_tick_ms_ = 0;
  uint32_t unanswered_hellos_ = 0;  // hellos since the last welcome
  int64_t next_heartbeat_ms_ = 0;
  std::deque<Outgoing> outbox_;  // seq order; the first `sent_` have been sent
  size_t sent_ = 0;
  size_t sent_bytes_ = 0;  // of the first sent_
  size_t outbox_bytes_ = 0;
  uint64_t next_seq_ = 1;
  uint32_t consumed_ = 0;
  struct Origin {
    uint64_t seq = 0;     // the last delivered
    int64_t last_ms = 0;  // when
  };
  std::unordered_map<uint64_t, Origin> last_delivered_;  // by origin instance
  // Keyed publishes of the last kKeyTtlMs, oldest first, at most
  // mesh::kMaxHelloKeys (the oldest forgotten first).
  std::deque<Claim> claims_;
  mesh::BatchWriter batch_;
  Counters counters_;
};

}  // namespace sb::worker
