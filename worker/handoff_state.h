// HandoffState: the state a shard process hands to its successor when it is
// upgraded in place (docs/UPGRADE.md), as plain structs and their versioned
// binary encoding.
//
// Owns: what moves — per WebSocket its transport state (the parser's
// leftovers, the outbound queue, the peer address, deadlines), its token
// identity, rate bucket and channels (join_refs, presence); per HTTP
// connection (version 2 on) the bytes received and not yet answered, its
// queue of answers, the requests it has had and how it ends; the shard-wide
// session with the broker (identity, outbox, dedupe table, keyed claims,
// members), the hub's presence refs and the other shards' presence, and the
// history streams' positions — and the records that carry it: a chunk of at
// most kMaxConnectionsPerChunk connections (their fds ride with it,
// connection i's fd is fd i, or came before it in sockets records), the
// session, or (version 3 on) a sockets record: the fds of connections whose
// state follows later, sent while the old process still serves. Does not: read that state out
// of the Gateway, Hub or ClusterSession or put it back (the shard's wiring
// does), or send anything (common/fd_passing does). Pure functions of plain
// data; any thread.
//
// A record is: "SBHO", the format version (u16), its kind (u8), the body's
// length (u32), the body. Integers are little-endian and fixed-size; strings
// and lists carry a u32 length or count, each with an explicit bound; doubles
// are their IEEE-754 bits. Every decode refuses, naming what is wrong, a
// record that is cut, has bytes left over, or breaks a bound: a hostile or
// corrupt record never crashes the decoder or makes it allocate more than the
// record's size. The encoding is canonical: a record that decodes encodes
// back to the same bytes.
//
// Versioning: the encoder writes kVersion; the decoder reads every version
// from kOldestVersion to kVersion. A new field is a new version: the decoder
// reads it only from records of that version on (older ones get the field's
// default), so a new binary takes the state of the one it replaces. A record
// of any other version is refused with Status::Code::kNotFound and "unknown
// state version N: roll back" — the new process cannot take it and the old
// one keeps its connections.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/fd_passing.h"
#include "common/status.h"

namespace sb::worker::handoff {

inline constexpr char kMagic[4] = {'S', 'B', 'H', 'O'};
// Version 3 adds the sockets record; its session and connection records
// are version 2's.
inline constexpr uint16_t kVersion = 3;
inline constexpr uint16_t kOldestVersion = 1;
// Magic, version, kind, body length.
inline constexpr size_t kHeaderBytes = 4 + 2 + 1 + 4;

// One SOCK_SEQPACKET message carries at most this many fds (SCM_MAX_FD).
inline constexpr size_t kMaxConnectionsPerChunk = kMaxFdsPerMessage;

// Bounds. A record over one is refused; the encoder refuses to write one.
inline constexpr size_t kMaxRecordBytes = size_t{256} << 20;  // body of one record
inline constexpr size_t kMaxNameBytes = 4096;      // topics, keys, refs, subjects, patterns
inline constexpr size_t kMaxJsonBytes = 1u << 20;  // a presence meta, a topic's remote presence
inline constexpr size_t kMaxBlobBytes = size_t{64} << 20;   // a frame, parser bytes, a publish
inline constexpr size_t kMaxChannels = 65536;               // per connection
inline constexpr size_t kMaxPatterns = 65536;               // a token's topic patterns
inline constexpr size_t kMaxFrames = 1u << 20;              // one connection's outbound queue
inline constexpr size_t kMaxListEntries = size_t{1} << 22;  // session lists (outbox, claims...)

enum class RecordKind : uint8_t {
  kSession = 1,
  kConnections = 2,
  kSockets = 3,  // version 3 on
};

// --- One client connection: an open WebSocket or (version 2 on) an HTTP
// connection. WebSockets already in their close handshake and HTTP requests
// whose answer is with the listener do not move: the old process finishes
// or cuts them.

// A frame waiting in the outbound queue, whole WebSocket frame bytes.
struct OutboundFrame {
  // worker::OutboundQueue::Kind: 0 data, 1 pong, 2 owed, 3 forced.
  uint8_t kind = 0;
  std::string bytes;
  bool operator==(const OutboundFrame&) const = default;
};

// Who the socket is, from the token it connected with (auth on).
struct TokenIdentity {
  std::string sub;
  std::vector<std::string> topic_patterns;  // see worker::TopicAllowed
  bool operator==(const TokenIdentity&) const = default;
};

// worker::RateLimiter's state; its rate and burst are the new process's
// options.
struct RateBucket {
  double tokens = 0;    // finite, >= 0
  int64_t last_ms = 0;  // monotonic ms of the last refill
  bool operator==(const RateBucket&) const = default;
};

// One joined channel (worker::Hub's Joined).
struct Channel {
  std::string topic;  // 1..kMaxNameBytes
  std::optional<std::string> join_ref;
  // The presence this channel tracks: 0 none (key and meta then empty);
  // else its phx_ref is Session::presence_ref_prefix + seq in base 36.
  uint64_t presence_seq = 0;
  std::string presence_key;
  std::string presence_meta;  // the stored meta JSON, its "phx_ref" included
  bool operator==(const Channel&) const = default;
};

// How an HTTP connection ends, as worker::Gateway would end it.
enum class HttpEnd : uint8_t {
  kKeepAlive = 0,    // reading requests, one after the other
  kClose = 1,        // answered for the last time: closed once its queue is written
  kCloseLinger = 2,  // as kClose, then half-closed and the client's EOF awaited
  kLingering = 3,    // written and half-closed: waiting for the client's EOF
};

// An HTTP connection (the gateway's HttpState): requests before any
// upgrade, keep-alive API requests, static files, answers being written.
struct HttpPhase {
  // The bytes received and not yet answered, from the first byte of the
  // request in progress (the new process parses them again as if just
  // read). Empty unless end is kKeepAlive.
  std::string received;
  uint32_t requests = 0;   // API requests answered on the connection
  bool continued = false;  // "100 Continue" already sent for the request in progress
  HttpEnd end = HttpEnd::kKeepAlive;
  // Monotonic ms: kKeepAlive, when the request (or the idle wait for the
  // next one) times out; otherwise when the close gives up on the client.
  int64_t deadline_ms = 0;
  bool operator==(const HttpPhase&) const = default;
};

struct Connection {
  uint64_t id = 0;  // the old process's ConnId, nonzero, unique in the hand-off
  // worker::AddressCounts::Key (16 bytes) of the peer, empty if not counted.
  std::string address;
  // Monotonic ms (CLOCK_MONOTONIC is the machine's, not the process's, so
  // these stay meaningful in the new process): last byte received, last
  // write progress, start of the data message being received (0: none).
  int64_t last_rx_ms = 0;
  int64_t last_tx_ms = 0;
  int64_t message_since_ms = 0;
  // protocol::ws::MessageParser: bytes of an incomplete frame, fragments of
  // an unfinished data message and its opcode (1 text, 2 binary).
  std::string parser_tail;
  std::string parser_message;
  bool in_message = false;
  uint8_t message_opcode = 1;
  // The outbound queue, oldest first; `written` bytes of the first frame
  // are already on the wire (0 when the queue is empty, else less than the
  // first frame's size).
  uint64_t written = 0;
  std::vector<OutboundFrame> outbound;
  std::optional<TokenIdentity> identity;
  RateBucket rate;
  std::vector<Channel> channels;  // join order
  // Set: an HTTP connection, not a WebSocket (version 2 on). Its queue is
  // `outbound` (HTTP answers, kind 3) and `written`; the WebSocket fields
  // (parser, message_since_ms, identity, rate, channels) keep their
  // defaults.
  std::optional<HttpPhase> http;
  bool operator==(const Connection&) const = default;
};

// --- The shard-wide state.

// A publish in the broker session's outbox, not yet acked.
struct Publish {
  uint64_t seq = 0;
  std::string topic;
  std::string message;
  uint8_t flags = 0;  // mesh flags
  uint64_t stamp = 0;
  std::string key;  // idempotency key, empty: none
  bool operator==(const Publish&) const = default;
};

// The last seq delivered from one origin instance (duplicate suppression).
struct Origin {
  uint64_t instance = 0;
  uint64_t seq = 0;
  int64_t last_ms = 0;
  bool operator==(const Origin&) const = default;
};

// A keyed publish remembered for the hello.
struct Claim {
  std::string key;
  std::string topic;
  uint64_t seq = 0;
  int64_t at_ms = 0;
  bool operator==(const Claim&) const = default;
};

// A history stream's position: its epoch and the last offset delivered in
// order. Copies of messages do not move: the broker holds the stream, and
// the new process fetches what a recovering join needs.
struct StreamPosition {
  std::string topic;
  uint64_t stream = 0;
  uint64_t offset = 0;
  bool operator==(const StreamPosition&) const = default;
};

// The other shards' presence on a topic with local subscribers, as a
// presence_state JSON: without it the broker's next snapshot would read as
// every remote presence joining.
struct RemoteTopic {
  std::string topic;
  std::string state_json;
  bool operator==(const RemoteTopic&) const = default;
};

struct Session {
  // worker::ClusterSession: the identity the broker knows this shard by
  // (instance 0: the shard is not in a cluster, the lists are empty).
  std::string shard;
  uint64_t instance = 0;
  std::string token;
  uint64_t epoch = 0;
  uint64_t next_seq = 1;
  std::vector<std::string> members;
  std::vector<Publish> outbox;  // seq order (strictly increasing)
  std::vector<Origin> origins;
  std::vector<Claim> claims;  // oldest first
  // worker::Hub: presence phx_refs go on from here, so no ref is reused.
  std::string presence_ref_prefix;
  uint64_t next_presence_seq = 1;
  std::vector<RemoteTopic> remote_presence;
  // worker::HistoryStreams.
  std::vector<StreamPosition> streams;
  // What follows in chunks: the receiver knows when it has everything.
  uint64_t connections = 0;
  uint64_t chunks = 0;
  bool operator==(const Session&) const = default;
};

// --- Records.

struct Header {
  uint16_t version = 0;
  RecordKind kind = RecordKind::kSession;
  size_t body_bytes = 0;
  size_t record_bytes() const { return kHeaderBytes + body_bytes; }
};
// Reads a record's header from its first kHeaderBytes (more may follow).
// kNotFound for a version this binary cannot read; kRefused otherwise.
Result<Header> DecodeHeader(std::string_view bytes);

Result<std::string> EncodeSession(const Session& session);
Result<Session> DecodeSession(std::string_view record);

// A chunk of connections: `first`..`first + count` of the list given to
// EncodeChunks, to be sent with their fds in that order.
struct Chunk {
  size_t first = 0;
  size_t count = 0;
  std::string record;
};
// Splits `connections` into chunks of at most kMaxConnectionsPerChunk,
// closing a chunk early when the next connection would take the record past
// kMaxFdMessageBytes (so that a chunk is one message as a rule). A
// connection larger than that on its own makes a chunk of one, sent in
// several messages (SplitRecord). Refused if a value breaks a bound.
Result<std::vector<Chunk>> EncodeChunks(std::span<const Connection> connections);
Result<std::string> EncodeChunk(std::span<const Connection> connections);
// Decodes a chunk that came with `fds` fds: refused unless it names exactly
// that many connections, or `fds` is kFdsSentBefore (a chunk of
// connections whose fds came in sockets records: the caller matches them by
// id).
inline constexpr size_t kFdsSentBefore = SIZE_MAX;
Result<std::vector<Connection>> DecodeChunk(std::string_view record, size_t fds);

// A sockets record: the old process's ids of the connections whose fds ride
// with it (in that order), 1 to kMaxConnectionsPerChunk of them, each
// non-zero and once. Their state comes later, in chunks that carry no fds.
Result<std::string> EncodeSockets(std::span<const uint64_t> ids);
// Refused unless the record names exactly `fds` distinct non-zero ids.
Result<std::vector<uint64_t>> DecodeSockets(std::string_view record, size_t fds);

// A record as the messages that carry it: the first holds the header (and
// the fds), the rest, if any, continue it; each at most kMaxFdMessageBytes.
// Views into `record`.
std::vector<std::string_view> SplitRecord(std::string_view record);

// Puts a record back together from its messages, in order.
class RecordAssembler {
 public:
  // The next message. Refused if it is the first and its header is bad, or
  // it would take the record past its stated length; kNotFound for an
  // unknown version (as DecodeHeader).
  Status Add(std::string_view message);
  bool complete() const { return header_.has_value() && record_.size() == header_->record_bytes(); }
  // The whole record, once complete; the assembler starts over.
  std::string Take();

 private:
  std::optional<Header> header_;
  std::string record_;
};

}  // namespace sb::worker::handoff
