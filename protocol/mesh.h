// Mesh: the wire format between a node's broker and its shards (and, later,
// between brokers), version 1. docs/PROTOCOL.md is the specification.
//
// Owns: encoding (Frames: only the header is written, topic and body are
// not copied) and decoding one mesh message — the ZeroMQ multipart frames
// after the ROUTER's routing id — the bounds every message is held to on
// both ends (sizes, hello lists, nesting), and the JSON bodies of the two
// control messages that carry structure (kHello, kPresence). Also the
// "packed" form of a message: its frames concatenated with length prefixes
// into one string, which is how the broker keeps a message in a queue and
// shares it between links, and what a kBatch carries.
// Does not: touch sockets, know links, credit or epochs' meaning (broker/,
// worker/), or parse Phoenix messages: a publish carries the Phoenix message
// bytes as the origin shard encoded them, so every shard frames the same
// bytes for its sockets.
//
// Every message's first frame is a header: the magic "SB", the version, the
// type, then that type's fixed fields (little-endian integers). Variable
// parts (topic, Phoenix message, JSON) are frames of their own. Decoding is
// total: any byte sequence gives a Message or a DecodeError, never a crash,
// and a decoded Message's views point into the frames it was decoded from.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "protocol/limits.h"

namespace sb::mesh {

inline constexpr uint8_t kVersion = 1;
// Topics are what phoenix.js sends as a string; the bound (protocol/limits.h)
// keeps a hostile shard (or a fuzzer) from making the broker hold megabyte keys.
inline constexpr size_t kMaxTopicBytes = limits::kMaxTopicBytes;

enum class Type : uint8_t {
  kHello = 1,      // shard → broker: who I am, my credit window, my whole state (JSON)
  kWelcome = 2,    // broker → shard: hello accepted; fields: epoch
  kReset = 3,      // broker → shard: I do not know you (new broker, or link dropped): hello again
  kHeartbeat = 4,  // both ways; fields: epoch (the broker's; 0 from a shard)
  kSubscribe = 5,  // shard → broker; frames: topic
  kUnsubscribe = 6,  // shard → broker; frames: topic
  kPublish =
      7,     // shard → broker; fields: seq, flags[, stamp]; frames: topic, Phoenix message[, key]
  kAck = 8,  // broker → shard; fields: seq (every publish up to it is done)
  kCredit = 9,     // shard → broker; fields: n (messages consumed; n more may come)
  kPresence = 10,  // shard → broker; frames: topic, PresenceChange JSON
  kDeliver =
      11,  // broker → shard; fields: origin, seq, flags[, stamp]; frames: topic, Phoenix message
  kDiff = 12,      // broker → shard; frames: topic, presence_diff JSON (Phoenix's shape)
  kSnapshot = 13,  // broker → shard; frames: topic, presence_state JSON of the other shards
  kBatch = 14,     // both ways; frames: messages, each as a u32 length then its packed form
  // broker → shard; frames: Members JSON (the shards the broker expects). Added
  // within version 1: an older shard counts it as a bad frame and goes on.
  kMembers = 15,
  // History (docs/PROTOCOL.md, History), added within version 1:
  // shard → broker; fields: id, offset (after), n (limit); frames: topic. "Send me
  // `topic`'s history after `offset`, at most `n` messages" (n = 0: only its position).
  kFetch = 16,
  // broker → shard, the answer to kFetch `id`; fields: id, stream, top, first; frames:
  // topic, the messages (each a u32 length then a packed sequenced kDeliver, in offset
  // order; may be empty). `first` is the oldest offset the broker holds (top + 1 if none).
  kHistory = 17,
  // shard → broker, after its hello: one history message the shard holds, so that a new
  // broker rebuilds the topic's history; fields and frames as a sequenced kDeliver.
  kRestate = 18,
  // Peer links between two nodes' brokers (docs/PROTOCOL.md, Peer links), added within
  // version 1; they travel only between brokers, on the peer socket and its uplinks.
  // uplink → peer socket, once the connection's handshake is done; frames: PeerIntro JSON
  // {"node","cluster","incarnation"}.
  kPeerHello = 19,
  // peer socket → uplink, the hello accepted; frames: PeerIntro JSON {"node","incarnation",
  // "expected","batches"}.
  kPeerWelcome = 20,
  // Both ways on a welcomed link; fields: stamp, echo. The uplink sends its clock's
  // nanoseconds as `stamp` (echo 0); the peer socket answers at once with `echo` = that
  // stamp (stamp 0): the uplink's round-trip time, and each side's proof of life.
  kPeerHeartbeat = 21,
  // Routing between nodes (docs/PROTOCOL.md, Peer links: routing), added within version 1.
  // uplink → peer socket, on a welcomed link; fields: seq (1, 2, … per sending broker start);
  // frames: one packed message (mesh::Pack) — kPeerInterest, kSubscribe, kUnsubscribe, kDeliver,
  // kPresence, kPeerPresence, kPeerSequence, kFetch or kHistory. The receiver takes seq = expected,
  // drops one below it. To a peer socket whose welcome said "batches", several consecutive
  // kPeerData may travel as one kBatch (each packed whole, seq and all), read as if one by one.
  kPeerData = 22,
  // peer socket → uplink; fields: seq (every kPeerData up to it was taken).
  kPeerAck = 23,
  // Inside kPeerData: the sender's whole local interest; frames: PeerInterest JSON
  // {"topics":[...]}. The receiver replaces what it held for the sender.
  kPeerInterest = 24,
  // Inside kPeerData: every presence meta the sender's shards track on a topic; frames: topic,
  // PresenceChange JSON (joins only). The receiver replaces the sender's metas on the topic.
  kPeerPresence = 25,
  // History across nodes (docs/CLUSTER.md, History across nodes), added within version 1.
  // Inside kPeerData, to the topic's owner node: a sequenced publish of one of the sender's
  // shards, for the owner to sequence; fields and frames as an unsequenced kDeliver (origin:
  // the shard's instance, seq: its publish seq — the owner dedupes a resend by both). The
  // owner answers with the sequenced kDeliver, to the sender among others.
  kPeerSequence = 26,
};

// Flag bits of kPublish / kDeliver.
inline constexpr uint8_t kFlagBinary = 1;  // the Phoenix message is a v2 binary broadcast
// The header carries one more field after the flags: `stamp`. Added within
// version 1; a message without the flag has the shorter header it always had.
inline constexpr uint8_t kFlagStamped = 2;
// kPublish only: an idempotency key follows the Phoenix message as a fourth
// frame of 1..kMaxKeyBytes (an HTTP API publish's "idempotency_key"). The
// broker routes the first publish of a key on a topic within
// kKeyTtlMs and drops the repeats (docs/PROTOCOL.md, Idempotency). Added within
// version 1; a broker never sets it on a kDeliver.
inline constexpr uint8_t kFlagKeyed = 4;
inline constexpr size_t kMaxKeyBytes = 200;
// kPublish: the topic keeps history; the broker sequences it (gives it the
// topic's next offset) and delivers it to every subscribed shard, its origin
// included. kDeliver, kRestate: the header carries two more fields after the
// stamp (if any): `offset` and `stream`. Added within version 1.
inline constexpr uint8_t kFlagSequenced = 8;
inline constexpr int64_t kKeyTtlMs = 5 * 60 * 1000;

// One decoded message. Fields a type does not have are zero / empty.
struct Message {
  Type type = Type::kHeartbeat;
  uint64_t epoch = 0;   // kWelcome, kHeartbeat
  uint64_t seq = 0;     // kPublish, kAck, kDeliver
  uint64_t origin = 0;  // kDeliver: the publishing shard's instance id
  uint32_t n = 0;       // kCredit
  uint8_t flags = 0;    // kPublish, kDeliver
  // kPublish, kDeliver with kFlagStamped: when the origin shard read the
  // client's message, in nanoseconds of the Unix epoch (CLOCK_REALTIME: the
  // one clock shards on several machines share), for the receiving shard's
  // publish → deliver latency. The broker copies it from publish to deliver.
  uint64_t stamp = 0;
  std::string_view
      topic;  // kSubscribe, kUnsubscribe, kPublish, kPresence, kDeliver, kDiff, kSnapshot
  // kHello: Hello JSON; kMembers: Members JSON; kBatch: the batched messages; kPresence:
  // PresenceChange JSON; kPublish, kDeliver: the Phoenix message; kDiff, kSnapshot: Phoenix
  // presence JSON.
  std::string_view body;
  // kPublish with kFlagKeyed: the idempotency key.
  std::string_view key;
  // History. kDeliver / kRestate with kFlagSequenced: the message's offset in its
  // topic's stream, and the stream's epoch (nonzero; clients see it as 16 hex
  // digits). kFetch: `offset` is "after", `n` the limit. kHistory: id, stream,
  // top (the last offset given), first (the oldest held).
  uint64_t offset = 0;
  uint64_t stream = 0;
  uint64_t id = 0;  // kFetch, kHistory: the request
  uint64_t top = 0;
  uint64_t first = 0;
  uint64_t echo = 0;  // kPeerHeartbeat: the stamp answered
  // kPeerData, kPeerAck use `seq`; kPeerData's body is the packed inner message.
};

// Decodes the frames of one message (routing id already removed). Refused,
// naming what is wrong, for: a bad magic, an unknown version or type, a
// header of the wrong length for its type, the wrong number of frames, an
// empty or over-long topic, an empty body or one over its bound (a hello's
// or batch's kMaxFrameBytes, any other kMaxBodyBytes), kFlagKeyed on any
// type but kPublish, or a key that is empty or over kMaxKeyBytes. JSON bodies are not
// parsed here (DecodeHello, DecodePresenceChange do it). `out`'s views point
// into `frames`.
Status Decode(std::span<const std::string_view> frames, Message* out);

// The longest header of any type (a stamped, sequenced kDeliver's).
inline constexpr size_t kMaxHeaderBytes = 45;

// The frames of one message, exactly the ones its type has, in order, with
// nothing copied but the header: the header is written into this object's
// own buffer, the topic and body frames are `msg`'s views. How a message
// goes to a socket as it is made (one ZeroMQ frame per view); the views are
// valid while `msg`'s strings are and this object is, which is why it is
// neither copied nor moved (views()[0] points into it).
class Frames {
 public:
  explicit Frames(const Message& msg);
  Frames(const Frames&) = delete;
  Frames& operator=(const Frames&) = delete;

  // Empty for a type that does not exist.
  std::span<const std::string_view> views() const { return {views_, count_}; }

 private:
  char header_[kMaxHeaderBytes];
  std::string_view views_[4];
  size_t count_ = 0;
};

// Packed form: each frame as a 32-bit little-endian length then its bytes.
// For a message that is kept (a broker queue shares one between links) or
// put in a kBatch; one that goes straight to a socket needs Frames only.
std::string Pack(const Message& msg);
// The frames of a packed message (views into `packed`); Refused if the
// lengths do not add up.
Status Unpack(std::string_view packed, std::vector<std::string_view>* frames);

// --- Batches ---------------------------------------------------------------
// A turn's messages for one peer travel as one kBatch: libzmq's cost is per
// message and per frame, so a turn's worth of deliveries or publishes in one
// frame costs one send instead of hundreds (receivers handle the inner
// messages in order, as if they had come one by one; a kBatch never nests).

// Batches are cut at about this size: large enough that libzmq's per-message
// cost vanishes, small enough to stay below malloc's mmap threshold (a fresh
// mapping per batch costs page faults) and to let libzmq's I/O thread start
// writing while the next batch is built.
inline constexpr size_t kBatchBytes = 64 * 1024;

// --- Sizes -----------------------------------------------------------------

// The largest frame of any mesh message. Both ends set it as their socket's
// ZMQ_MAXMSGSIZE (libzmq applies it to each frame and disconnects a peer
// that sends a larger one), so nothing that reaches the endpoint can make
// the other end buffer more than this per frame. The largest legitimate
// frames are a hello (a shard's whole state in one JSON body) and a kBatch.
inline constexpr size_t kMaxFrameBytes = size_t{64} << 20;
// The largest packed message that may go in a kBatch: a batch is cut once
// it holds kBatchBytes, so it is at most kBatchBytes, one such message and
// the batch's own 12 bytes of header and length — within kMaxFrameBytes.
inline constexpr size_t kMaxPackedBytes = kMaxFrameBytes - kBatchBytes - 64;
// The largest body (Phoenix message, presence JSON) of any message but a
// hello or a batch: with its topic and header it packs within
// kMaxPackedBytes. A shard refuses to publish a larger broadcast, and a
// broker sends no larger snapshot or diff.
inline constexpr size_t kMaxBodyBytes = kMaxFrameBytes - 2 * kBatchBytes;
static_assert(kMaxBodyBytes + kMaxTopicBytes + kMaxHeaderBytes + 12 <= kMaxPackedBytes);
// Both ends' ZMQ_RCVHWM, in messages per connection: when one peer's are
// not read yet, libzmq stops reading its connection (the peer's own socket
// buffers, then its sends fail), so one peer holds at most this many
// messages of the reader's memory. Far above what either end sends ahead:
// a turn's publishes or deliveries go as a few batches, and the broker
// reads up to 512 messages per wake-up.
inline constexpr int kRecvHighWaterMark = 1000;

// Builds packed kBatch messages in one buffer that is reused.
class BatchWriter {
 public:
  BatchWriter();
  // Appends one packed message (mesh::Pack); after Finish, starts a new batch.
  void Add(std::string_view packed);
  // Appends `msg`, packed straight into the batch (no packed copy first).
  void Add(const Message& msg);
  size_t count() const { return finished_ ? 0 : count_; }
  size_t bytes() const { return finished_ ? 0 : buf_.size(); }
  bool full() const { return bytes() >= kBatchBytes; }
  // The packed kBatch with everything added, valid until the next Add.
  std::string_view Finish();

 private:
  void Reset();
  std::string buf_;
  size_t count_ = 0;
  bool finished_ = false;
};

// Calls `fn` with the frames of each message in a kBatch body, in order.
// Refused at the first malformed entry (those before it were handed over).
Status ForEachInBatch(std::string_view body,
                      const std::function<void(std::span<const std::string_view>)>& fn);

// --- JSON bodies ---------------------------------------------------------

// One presence meta as a shard tracks it. `meta_json` is the meta object as
// JSON text, "phx_ref" included (empty in a leave: only key and ref count).
struct PresenceEntry {
  std::string key;
  std::string phx_ref;
  std::string meta_json;
};

struct TopicState {
  std::string topic;
  std::vector<PresenceEntry> metas;
};

// How deep a presence meta may nest: the client-facing limit (protocol/limits.h).
inline constexpr size_t kMaxMetaDepth = limits::kMaxPresenceMetaDepth;
// How many topics, and presence topics, one hello may list; and how many
// metas in all. A shard holds at most its connections × its joins per
// connection of either; these bounds keep what one hello can make the
// broker allocate (its strings, its table entries) in the hundreds of MiB.
inline constexpr size_t kMaxHelloTopics = size_t{1} << 20;
inline constexpr size_t kMaxHelloMetas = size_t{1} << 20;

// Why DecodeHello left an entry of a hello out. One bad entry never costs a
// shard its session: the rest of its state is taken, the entry is counted.
enum class HelloDrop : uint8_t {
  kTopic,      // a topic (of "topics" or "presence") not a string of 1..kMaxTopicBytes, or a
               // presence topic that is not {"topic":..,"metas":[..]}
  kMeta,       // a meta entry without key or phx_ref, or whose meta is not an object
               // nested at most kMaxMetaDepth deep
  kOverLimit,  // beyond kMaxHelloTopics or kMaxHelloMetas, or members beyond kMaxMembers
  kMember,     // a member name not a string of 1..kMaxShardNameBytes
  kStream,     // a history entry without a valid topic, a stream of 1..2^64-1 and a top
  kKey,        // an idempotency entry without a key of 1..kMaxKeyBytes, a valid topic, a seq
               // of 1..2^64-1 or an age_ms of 0..2^32-1
  kCount
};

// kHello's body:
// {"shard":"2","instance":"<16 hex digits>","window":1000,
//  "topics":["room:a",...],
//  "presence":[{"topic":"room:a","metas":[{"key":"alice","phx_ref":"..","meta":{..}}]}]}
// Added within version 1 (absent from an older shard's hello):
//  "token":"<32 hex digits>","outbox":32768,"acked":0,"heartbeat_ms":1000,
//  "members":["0","1","2"],
//  "idempotency":[{"key":"k1","topic":"room:a","seq":17,"age_ms":1200}],
//  "history":[{"topic":"room:a","stream":1234,"top":17}],"restate":17
inline constexpr size_t kTokenHexDigits = 32;
// How many idempotency keys one hello may list: a shard remembers at most
// this many (worker/shard), the broker as many (broker/key_table).
inline constexpr size_t kMaxHelloKeys = 100000;
// A member list (kMembers, a hello's "members") names at most this many
// shards, each name 1..kMaxShardNameBytes: a node runs a handful of shards,
// and the bound keeps what one message makes a broker hold small.
inline constexpr size_t kMaxMembers = 1024;
inline constexpr size_t kMaxShardNameBytes = 256;
// A keyed publish a shard accepted: its key, topic and seq, and how long ago.
struct KeyClaim {
  std::string key;
  std::string topic;
  uint64_t seq = 0;
  uint32_t age_ms = 0;
  bool operator==(const KeyClaim&) const = default;
};
// A history stream a shard holds messages of: where it is (the last offset
// the shard has), for a new broker to continue from.
struct StreamPosition {
  std::string topic;
  uint64_t stream = 0;  // nonzero
  uint64_t top = 0;
  bool operator==(const StreamPosition&) const = default;
};
// How many streams one hello may name.
inline constexpr size_t kMaxHelloStreams = size_t{1} << 20;

struct Hello {
  std::string shard;      // the shard's name, for logs and metric labels
  uint64_t instance = 0;  // random per shard process start; nonzero
  uint32_t window = 0;    // initial credit; nonzero
  // Random per shard process start, kTokenHexDigits lowercase hex digits, or
  // empty (an older shard). Unlike the instance, which every delivery
  // carries, only the shard and its broker know it: a hello for a known
  // instance from another connection re-binds that instance's session only
  // with the same token, so nobody who merely saw the instance can take it.
  std::string token;
  // The most publishes the shard keeps unacked (its outbox bound), 0 if
  // absent: a publish's seq is never further than this past the last acked.
  uint32_t outbox = 0;
  // Every publish up to this seq was acked (the shard forgot it), if given.
  std::optional<uint64_t> acked;
  // The shard's heartbeat interval, 0 if absent: how long a new broker
  // waits for its hello (the broker's settle window).
  uint32_t heartbeat_ms = 0;
  // The shards the last broker said it expected (its last kMembers), empty
  // if none did (a fresh shard, a cold start): a new broker ends its settle
  // window once each of them has said hello (docs/PROTOCOL.md, Publish).
  std::vector<std::string> members;
  std::vector<std::string> topics;
  std::vector<TopicState> presence;
  // The keyed publishes the shard accepted within kKeyTtlMs, at most
  // kMaxHelloKeys (beyond: kOverLimit), so that a new broker knows the keys
  // the last one had seen (docs/PROTOCOL.md, Idempotency).
  std::vector<KeyClaim> idempotency;
  // The history streams the shard holds messages of, and how many kRestate
  // messages follow the hello on the same connection (a new broker waits for
  // them before it settles; docs/PROTOCOL.md, History).
  std::vector<StreamPosition> history;
  uint64_t restate = 0;
  // Decoding only: the entries left out, by reason (never encoded).
  uint64_t dropped[static_cast<size_t>(HelloDrop::kCount)] = {};
};

// kPresence's body:
// {"joins":[{"key":..,"phx_ref":..,"meta":{..}}],"leaves":[{"key":..,"phx_ref":..}]}
struct PresenceChange {
  std::vector<PresenceEntry> joins;
  std::vector<PresenceEntry> leaves;
};

std::string EncodeHello(const Hello& hello);
// Refused (naming the field) unless the body has the shape above: shard a
// string, instance nonzero, window nonzero, topics and presence arrays, and
// if present a token of kTokenHexDigits lowercase hex digits, an outbox and
// a heartbeat_ms of 1..2^32-1 and an acked seq of 0..2^64-1.
// Entries of those arrays that are not valid are left out and counted in
// `dropped` (see HelloDrop), never a reason to refuse the whole hello.
Result<Hello> DecodeHello(std::string_view json);

// kMembers' body: {"members":["0","1","2"]}, the names of the shards the
// broker has, or (while it settles) expects, sorted and without repeats.
std::string EncodeMembers(const std::vector<std::string>& members);
// Refused unless "members" is an array of at most kMaxMembers strings of
// 1..kMaxShardNameBytes (a broker sends nothing else; a shard keeps the
// list it had).
Result<std::vector<std::string>> DecodeMembers(std::string_view json);

std::string EncodePresenceChange(const PresenceChange& change);
// Refused unless the shape above holds (a join is a meta entry as valid in
// a hello; a leave's "meta" is not required and is ignored). One change is
// one message: a bad entry refuses it whole.
Result<PresenceChange> DecodePresenceChange(std::string_view json);

// kPeerHello's and kPeerWelcome's body: {"node":"b","cluster":"prod","incarnation":"3f9c…"}
// (a welcome leaves "cluster" out). The node is a member name, the incarnation
// the sender's current one (docs/CLUSTER.md, Membership).
//
// Added for routing (absent from an older broker's): a hello's "stream", the sending broker's
// stream id (random per broker start, nonzero: its kPeerData seqs count from 1 within it), and a
// welcome's "expected", the seq the peer socket takes next on that stream (0: it holds nothing
// of that stream, so the sender starts from the oldest it keeps).
struct PeerIntro {
  std::string node;
  std::string cluster;  // a hello's; empty in a welcome
  std::string incarnation;
  uint64_t stream = 0;    // a hello's; 0 if absent
  uint64_t expected = 0;  // a welcome's; 0 if absent
  // A welcome's "batches": true: the peer socket reads kPeerData inside a
  // kBatch, so the uplink may send several in one. False if absent (a
  // broker from before batching: one kPeerData per message to it).
  bool batches = false;
  bool operator==(const PeerIntro&) const = default;
};
std::string EncodePeerIntro(const PeerIntro& intro);
// Refused unless "node" and "incarnation" are strings of 1..64 bytes and
// "cluster", if present, one too. Unknown fields are ignored.
Result<PeerIntro> DecodePeerIntro(std::string_view json);

// kPeerInterest's body: {"topics":["room:a",...]}, at most kMaxHelloTopics.
std::string EncodePeerInterest(const std::vector<std::string>& topics);
// Refused unless "topics" is an array of at most kMaxHelloTopics strings of
// 1..kMaxTopicBytes bytes.
Result<std::vector<std::string>> DecodePeerInterest(std::string_view json);

}  // namespace sb::mesh
