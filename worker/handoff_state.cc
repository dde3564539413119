#include "worker/handoff_state.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <unordered_set>
#include <utility>

namespace sb::worker::handoff {
namespace {

constexpr std::string_view kPrefix = "handoff state: ";

Status Bad(std::string_view what) {
  std::string s(kPrefix);
  s += what;
  return Status::Refused(std::move(s));
}

Status UnknownVersion(uint16_t version) {
  return Status::NotFound(std::string(kPrefix) + "unknown state version " +
                          std::to_string(version) + ": roll back");
}

// Appends fixed little-endian integers and bounded strings; the first bound
// broken is remembered (and the rest of the writing is wasted, never wrong).
class Writer {
 public:
  template <typename T>
  void Int(T v) {
    using U = std::make_unsigned_t<T>;
    U u = static_cast<U>(v);
    for (size_t i = 0; i < sizeof(T); ++i) {
      out_.push_back(static_cast<char>(u & 0xff));
      if constexpr (sizeof(T) > 1) u >>= 8;
    }
  }
  void Bool(bool b) { Int<uint8_t>(b ? 1 : 0); }
  void Double(double d) { Int<uint64_t>(std::bit_cast<uint64_t>(d)); }
  void Str(std::string_view s, size_t max, std::string_view what) {
    if (s.size() > max) Fail(std::string(what) + " of " + std::to_string(s.size()) + " bytes");
    Int<uint32_t>(static_cast<uint32_t>(s.size()));
    out_.append(s);
  }
  void Count(size_t n, size_t max, std::string_view what) {
    if (n > max) Fail(std::to_string(n) + " " + std::string(what));
    Int<uint32_t>(static_cast<uint32_t>(n));
  }
  // A chunk's or a sockets record's count (u16): "a chunk of 0
  // connections, 1 to 253" when out of bounds.
  void RecordCount(size_t n, std::string_view record, std::string_view entries) {
    if (n == 0 || n > kMaxConnectionsPerChunk) {
      Fail(std::string(record) + " of " + std::to_string(n) + " " + std::string(entries) +
           ", 1 to " + std::to_string(kMaxConnectionsPerChunk));
    }
    Int<uint16_t>(static_cast<uint16_t>(n));
  }
  void Fail(std::string what) {
    if (error_.empty()) error_ = std::move(what);
  }
  Status status() const { return error_.empty() ? Status::Ok() : Bad(error_); }
  std::string& out() { return out_; }

 private:
  std::string out_;
  std::string error_;
};

// Reads what Writer writes, from records of `version`; the first problem
// is remembered and every later read returns a default.
class Reader {
 public:
  Reader(std::string_view in, uint16_t version) : in_(in), version_(version) {}

  // The format version of the record: a field added in version N is read
  // only when version() >= N (older records get its default).
  uint16_t version() const { return version_; }

  template <typename T>
  T Int(std::string_view what) {
    if (!Need(sizeof(T), what)) return T{};
    using U = std::make_unsigned_t<T>;
    U u = 0;
    for (size_t i = 0; i < sizeof(T); ++i) {
      u |= static_cast<U>(static_cast<U>(static_cast<uint8_t>(in_[pos_ + i])) << (8 * i));
    }
    pos_ += sizeof(T);
    return static_cast<T>(u);
  }
  bool Bool(std::string_view what) {
    const uint8_t b = Int<uint8_t>(what);
    if (b > 1) Fail(std::string(what) + " is not 0 or 1");
    return b == 1;
  }
  double Double(std::string_view what) { return std::bit_cast<double>(Int<uint64_t>(what)); }
  std::string Str(size_t max, std::string_view what) {
    const uint32_t n = Int<uint32_t>(what);
    if (!ok()) return {};
    if (n > max) {
      Fail(std::string(what) + " of " + std::to_string(n) + " bytes, at most " +
           std::to_string(max));
      return {};
    }
    if (!Need(n, what)) return {};
    std::string s(in_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  // A list's count: at most `max`, and no more than the bytes left could
  // hold (every entry takes at least `min_entry_bytes`), so a hostile count
  // allocates nothing.
  size_t Count(size_t max, size_t min_entry_bytes, std::string_view what) {
    const uint32_t n = Int<uint32_t>(what);
    if (!ok()) return 0;
    if (n > max) {
      Fail(std::to_string(n) + " " + std::string(what) + ", at most " + std::to_string(max));
      return 0;
    }
    if (static_cast<uint64_t>(n) * min_entry_bytes > in_.size() - pos_) {
      Fail(std::to_string(n) + " " + std::string(what) + " in " +
           std::to_string(in_.size() - pos_) + " bytes");
      return 0;
    }
    return n;
  }
  void Fail(std::string what) {
    if (error_.empty()) error_ = std::move(what);
  }
  bool ok() const { return error_.empty(); }
  // After the last field: every byte was read.
  Status Finish() {
    if (ok() && pos_ != in_.size()) {
      Fail(std::to_string(in_.size() - pos_) + " bytes after the last field");
    }
    return ok() ? Status::Ok() : Bad(error_);
  }

 private:
  bool Need(size_t n, std::string_view what) {
    if (!ok()) return false;
    if (n > in_.size() - pos_) {
      Fail("cut in " + std::string(what));
      return false;
    }
    return true;
  }

  std::string_view in_;
  size_t pos_ = 0;
  uint16_t version_;
  std::string error_;
};

// Smallest encodings, for Reader::Count: a u32 length or count is 4 bytes.
constexpr size_t kMinStr = 4;

void WriteHeader(Writer& w, RecordKind kind, size_t body_bytes) {
  w.out().append(kMagic, sizeof(kMagic));
  w.Int<uint16_t>(kVersion);
  w.Int<uint8_t>(static_cast<uint8_t>(kind));
  w.Int<uint32_t>(static_cast<uint32_t>(body_bytes));
}

// `body` as a whole record of `kind`.
Result<std::string> Seal(RecordKind kind, Writer& body) {
  if (Status s = body.status(); !s.ok()) return s;
  if (body.out().size() > kMaxRecordBytes) {
    return Bad("a record of " + std::to_string(body.out().size()) + " bytes, at most " +
               std::to_string(kMaxRecordBytes));
  }
  Writer w;
  w.out().reserve(kHeaderBytes + body.out().size());
  WriteHeader(w, kind, body.out().size());
  w.out() += body.out();
  return std::move(w.out());
}

// The body of a record of `kind`, its header checked.
Result<std::pair<Header, std::string_view>> Open(std::string_view record, RecordKind kind) {
  Result<Header> h = DecodeHeader(record);
  if (!h.ok()) return h.status();
  if (h->kind != kind) {
    return Bad("a record of kind " + std::to_string(static_cast<int>(h->kind)) + ", expected " +
               std::to_string(static_cast<int>(kind)));
  }
  if (record.size() != h->record_bytes()) {
    return Bad("a record of " + std::to_string(record.size()) + " bytes, its header says " +
               std::to_string(h->record_bytes()));
  }
  return std::make_pair(*h, record.substr(kHeaderBytes));
}

// --- Connections.

// What is wrong with `c` beyond the bounds on lengths and counts, or "": the
// invariants the new process relies on. The encoder refuses to write what
// the decoder would refuse, so what decodes always encodes again.
std::string Problem(const Connection& c) {
  if (c.id == 0) return "a connection with id 0";
  if (!c.address.empty() && c.address.size() != 16) return "an address not of 16 bytes";
  if (c.message_opcode != 1 && c.message_opcode != 2) {
    return "a message opcode " + std::to_string(c.message_opcode) + ", not 1 or 2";
  }
  for (const OutboundFrame& f : c.outbound) {
    if (f.kind > 3) return "an outbound frame of kind " + std::to_string(f.kind);
    if (f.bytes.empty()) return "an empty outbound frame";
  }
  if (c.outbound.empty() ? c.written != 0 : c.written >= c.outbound.front().bytes.size()) {
    return "written bytes not within the first frame";
  }
  if (!std::isfinite(c.rate.tokens) || c.rate.tokens < 0) return "rate tokens not finite, >= 0";
  for (const Channel& ch : c.channels) {
    if (ch.topic.empty()) return "a channel with an empty topic";
    if (ch.presence_seq == 0 && (!ch.presence_key.empty() || !ch.presence_meta.empty())) {
      return "a presence key or meta without a presence";
    }
  }
  if (c.http) {
    // An HTTP connection has no WebSocket state: a record that says
    // otherwise was not written by a gateway.
    if (!c.parser_tail.empty() || !c.parser_message.empty() || c.in_message ||
        c.message_opcode != 1 || c.message_since_ms != 0 || c.identity || !c.channels.empty() ||
        c.rate != RateBucket{}) {
      return "an HTTP connection with WebSocket state";
    }
    if (static_cast<uint8_t>(c.http->end) > 3) {
      return "an HTTP end " + std::to_string(static_cast<int>(c.http->end));
    }
    if (c.http->end != HttpEnd::kKeepAlive && (!c.http->received.empty() || c.http->continued)) {
      return "a closing HTTP connection with a request in progress";
    }
  }
  return {};
}

void WriteConnection(Writer& w, const Connection& c) {
  if (std::string problem = Problem(c); !problem.empty()) w.Fail(std::move(problem));
  w.Int<uint64_t>(c.id);
  w.Str(c.address, 16, "an address");
  w.Int<int64_t>(c.last_rx_ms);
  w.Int<int64_t>(c.last_tx_ms);
  w.Int<int64_t>(c.message_since_ms);
  w.Str(c.parser_tail, kMaxBlobBytes, "a parser tail");
  w.Str(c.parser_message, kMaxBlobBytes, "a parser message");
  w.Bool(c.in_message);
  w.Int<uint8_t>(c.message_opcode);
  w.Int<uint64_t>(c.written);
  w.Count(c.outbound.size(), kMaxFrames, "outbound frames");
  for (const OutboundFrame& f : c.outbound) {
    w.Int<uint8_t>(f.kind);
    w.Str(f.bytes, kMaxBlobBytes, "an outbound frame");
  }
  w.Bool(c.identity.has_value());
  if (c.identity) {
    w.Str(c.identity->sub, kMaxNameBytes, "a token subject");
    w.Count(c.identity->topic_patterns.size(), kMaxPatterns, "topic patterns");
    for (const std::string& p : c.identity->topic_patterns) {
      w.Str(p, kMaxNameBytes, "a topic pattern");
    }
  }
  w.Double(c.rate.tokens);
  w.Int<int64_t>(c.rate.last_ms);
  w.Count(c.channels.size(), kMaxChannels, "channels");
  for (const Channel& ch : c.channels) {
    w.Str(ch.topic, kMaxNameBytes, "a channel topic");
    w.Bool(ch.join_ref.has_value());
    if (ch.join_ref) w.Str(*ch.join_ref, kMaxNameBytes, "a join_ref");
    w.Int<uint64_t>(ch.presence_seq);
    w.Str(ch.presence_key, kMaxNameBytes, "a presence key");
    w.Str(ch.presence_meta, kMaxJsonBytes, "a presence meta");
  }
  // Version 2.
  w.Bool(c.http.has_value());
  if (c.http) {
    w.Str(c.http->received, kMaxBlobBytes, "HTTP bytes received");
    w.Int<uint32_t>(c.http->requests);
    w.Bool(c.http->continued);
    w.Int<uint8_t>(static_cast<uint8_t>(c.http->end));
    w.Int<int64_t>(c.http->deadline_ms);
  }
}

// The smallest entries, for Reader::Count: a frame (kind, bytes); a channel
// (topic, join_ref flag, seq, key, meta).
constexpr size_t kMinFrame = 1 + kMinStr;
constexpr size_t kMinChannel = kMinStr + 1 + 8 + 2 * kMinStr;

// Reads what WriteConnection writes. A field added in a later version is
// read under `if (r.version() >= N)`, its default left otherwise.
Connection ReadConnection(Reader& r) {
  Connection c;
  c.id = r.Int<uint64_t>("a connection id");
  c.address = r.Str(16, "an address");
  c.last_rx_ms = r.Int<int64_t>("last_rx_ms");
  c.last_tx_ms = r.Int<int64_t>("last_tx_ms");
  c.message_since_ms = r.Int<int64_t>("message_since_ms");
  c.parser_tail = r.Str(kMaxBlobBytes, "a parser tail");
  c.parser_message = r.Str(kMaxBlobBytes, "a parser message");
  c.in_message = r.Bool("in_message");
  c.message_opcode = r.Int<uint8_t>("a message opcode");
  c.written = r.Int<uint64_t>("written bytes");
  const size_t frames = r.Count(kMaxFrames, kMinFrame, "outbound frames");
  for (size_t i = 0; i < frames && r.ok(); ++i) {
    OutboundFrame f;
    f.kind = r.Int<uint8_t>("an outbound frame's kind");
    f.bytes = r.Str(kMaxBlobBytes, "an outbound frame");
    c.outbound.push_back(std::move(f));
  }
  if (r.Bool("the identity flag")) {
    TokenIdentity id;
    id.sub = r.Str(kMaxNameBytes, "a token subject");
    const size_t patterns = r.Count(kMaxPatterns, kMinStr, "topic patterns");
    for (size_t i = 0; i < patterns && r.ok(); ++i) {
      id.topic_patterns.push_back(r.Str(kMaxNameBytes, "a topic pattern"));
    }
    c.identity = std::move(id);
  }
  c.rate.tokens = r.Double("rate tokens");
  c.rate.last_ms = r.Int<int64_t>("the rate's last_ms");
  const size_t channels = r.Count(kMaxChannels, kMinChannel, "channels");
  for (size_t i = 0; i < channels && r.ok(); ++i) {
    Channel ch;
    ch.topic = r.Str(kMaxNameBytes, "a channel topic");
    if (r.Bool("the join_ref flag")) ch.join_ref = r.Str(kMaxNameBytes, "a join_ref");
    ch.presence_seq = r.Int<uint64_t>("a presence seq");
    ch.presence_key = r.Str(kMaxNameBytes, "a presence key");
    ch.presence_meta = r.Str(kMaxJsonBytes, "a presence meta");
    c.channels.push_back(std::move(ch));
  }
  if (r.version() >= 2 && r.Bool("the HTTP flag")) {
    HttpPhase h;
    h.received = r.Str(kMaxBlobBytes, "HTTP bytes received");
    h.requests = r.Int<uint32_t>("the HTTP request count");
    h.continued = r.Bool("the HTTP continue flag");
    h.end = static_cast<HttpEnd>(r.Int<uint8_t>("the HTTP end"));
    h.deadline_ms = r.Int<int64_t>("the HTTP deadline");
    c.http = std::move(h);
  }
  if (r.ok()) {
    if (std::string problem = Problem(c); !problem.empty()) r.Fail(std::move(problem));
  }
  return c;
}

std::string EncodedConnection(const Connection& c, Status* status) {
  Writer w;
  WriteConnection(w, c);
  *status = w.status();
  return std::move(w.out());
}

// --- Session.

std::string Problem(const Session& s) {
  uint64_t last_seq = 0;
  for (const Publish& p : s.outbox) {
    if (p.seq <= last_seq || p.seq >= s.next_seq)
      return "outbox seqs not increasing below next_seq";
    last_seq = p.seq;
  }
  return {};
}

void WriteSession(Writer& w, const Session& s) {
  if (std::string problem = Problem(s); !problem.empty()) w.Fail(std::move(problem));
  w.Str(s.shard, kMaxNameBytes, "a shard name");
  w.Int<uint64_t>(s.instance);
  w.Str(s.token, kMaxNameBytes, "a session token");
  w.Int<uint64_t>(s.epoch);
  w.Int<uint64_t>(s.next_seq);
  w.Count(s.members.size(), kMaxListEntries, "members");
  for (const std::string& m : s.members) w.Str(m, kMaxNameBytes, "a member");
  w.Count(s.outbox.size(), kMaxListEntries, "outbox publishes");
  for (const Publish& p : s.outbox) {
    w.Int<uint64_t>(p.seq);
    w.Str(p.topic, kMaxNameBytes, "a publish topic");
    w.Str(p.message, kMaxBlobBytes, "a publish message");
    w.Int<uint8_t>(p.flags);
    w.Int<uint64_t>(p.stamp);
    w.Str(p.key, kMaxNameBytes, "a publish key");
  }
  w.Count(s.origins.size(), kMaxListEntries, "origins");
  for (const Origin& o : s.origins) {
    w.Int<uint64_t>(o.instance);
    w.Int<uint64_t>(o.seq);
    w.Int<int64_t>(o.last_ms);
  }
  w.Count(s.claims.size(), kMaxListEntries, "claims");
  for (const Claim& c : s.claims) {
    w.Str(c.key, kMaxNameBytes, "a claim key");
    w.Str(c.topic, kMaxNameBytes, "a claim topic");
    w.Int<uint64_t>(c.seq);
    w.Int<int64_t>(c.at_ms);
  }
  w.Str(s.presence_ref_prefix, kMaxNameBytes, "a presence ref prefix");
  w.Int<uint64_t>(s.next_presence_seq);
  w.Count(s.remote_presence.size(), kMaxListEntries, "remote presence topics");
  for (const RemoteTopic& t : s.remote_presence) {
    w.Str(t.topic, kMaxNameBytes, "a remote presence topic");
    w.Str(t.state_json, kMaxJsonBytes, "a remote presence state");
  }
  w.Count(s.streams.size(), kMaxListEntries, "history streams");
  for (const StreamPosition& p : s.streams) {
    w.Str(p.topic, kMaxNameBytes, "a stream topic");
    w.Int<uint64_t>(p.stream);
    w.Int<uint64_t>(p.offset);
  }
  w.Int<uint64_t>(s.connections);
  w.Int<uint64_t>(s.chunks);
}

// Reads what WriteSession writes; new fields as in ReadConnection.
Session ReadSession(Reader& r) {
  Session s;
  s.shard = r.Str(kMaxNameBytes, "a shard name");
  s.instance = r.Int<uint64_t>("the instance");
  s.token = r.Str(kMaxNameBytes, "a session token");
  s.epoch = r.Int<uint64_t>("the epoch");
  s.next_seq = r.Int<uint64_t>("next_seq");
  const size_t members = r.Count(kMaxListEntries, kMinStr, "members");
  for (size_t i = 0; i < members && r.ok(); ++i) {
    s.members.push_back(r.Str(kMaxNameBytes, "a member"));
  }
  const size_t outbox = r.Count(kMaxListEntries, 8 + 3 * kMinStr + 1 + 8, "outbox publishes");
  for (size_t i = 0; i < outbox && r.ok(); ++i) {
    Publish p;
    p.seq = r.Int<uint64_t>("a publish seq");
    p.topic = r.Str(kMaxNameBytes, "a publish topic");
    p.message = r.Str(kMaxBlobBytes, "a publish message");
    p.flags = r.Int<uint8_t>("a publish's flags");
    p.stamp = r.Int<uint64_t>("a publish's stamp");
    p.key = r.Str(kMaxNameBytes, "a publish key");
    s.outbox.push_back(std::move(p));
  }
  const size_t origins = r.Count(kMaxListEntries, 24, "origins");
  for (size_t i = 0; i < origins && r.ok(); ++i) {
    Origin o;
    o.instance = r.Int<uint64_t>("an origin instance");
    o.seq = r.Int<uint64_t>("an origin seq");
    o.last_ms = r.Int<int64_t>("an origin's last_ms");
    s.origins.push_back(o);
  }
  const size_t claims = r.Count(kMaxListEntries, 2 * kMinStr + 16, "claims");
  for (size_t i = 0; i < claims && r.ok(); ++i) {
    Claim c;
    c.key = r.Str(kMaxNameBytes, "a claim key");
    c.topic = r.Str(kMaxNameBytes, "a claim topic");
    c.seq = r.Int<uint64_t>("a claim seq");
    c.at_ms = r.Int<int64_t>("a claim's at_ms");
    s.claims.push_back(std::move(c));
  }
  s.presence_ref_prefix = r.Str(kMaxNameBytes, "a presence ref prefix");
  s.next_presence_seq = r.Int<uint64_t>("next_presence_seq");
  const size_t remote = r.Count(kMaxListEntries, 2 * kMinStr, "remote presence topics");
  for (size_t i = 0; i < remote && r.ok(); ++i) {
    RemoteTopic t;
    t.topic = r.Str(kMaxNameBytes, "a remote presence topic");
    t.state_json = r.Str(kMaxJsonBytes, "a remote presence state");
    s.remote_presence.push_back(std::move(t));
  }
  const size_t streams = r.Count(kMaxListEntries, kMinStr + 16, "history streams");
  for (size_t i = 0; i < streams && r.ok(); ++i) {
    StreamPosition p;
    p.topic = r.Str(kMaxNameBytes, "a stream topic");
    p.stream = r.Int<uint64_t>("a stream's epoch");
    p.offset = r.Int<uint64_t>("a stream's offset");
    s.streams.push_back(std::move(p));
  }
  s.connections = r.Int<uint64_t>("the connection count");
  s.chunks = r.Int<uint64_t>("the chunk count");
  if (r.ok()) {
    if (std::string problem = Problem(s); !problem.empty()) r.Fail(std::move(problem));
  }
  return s;
}

}  // namespace

Result<Header> DecodeHeader(std::string_view bytes) {
  if (bytes.size() < kHeaderBytes) {
    return Bad("a record of " + std::to_string(bytes.size()) + " bytes, shorter than its header");
  }
  if (std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) return Bad("no SBHO magic");
  Reader r(bytes.substr(sizeof(kMagic), kHeaderBytes - sizeof(kMagic)), 0);
  Header h;
  h.version = r.Int<uint16_t>("the version");
  const uint8_t kind = r.Int<uint8_t>("the kind");
  h.body_bytes = r.Int<uint32_t>("the body length");
  if (h.version < kOldestVersion || h.version > kVersion) return UnknownVersion(h.version);
  if (kind != static_cast<uint8_t>(RecordKind::kSession) &&
      kind != static_cast<uint8_t>(RecordKind::kConnections) &&
      (kind != static_cast<uint8_t>(RecordKind::kSockets) || h.version < 3)) {
    return Bad("unknown record kind " + std::to_string(kind));
  }
  h.kind = static_cast<RecordKind>(kind);
  if (h.body_bytes > kMaxRecordBytes) {
    return Bad("a body of " + std::to_string(h.body_bytes) + " bytes, at most " +
               std::to_string(kMaxRecordBytes));
  }
  return h;
}

Result<std::string> EncodeSession(const Session& session) {
  Writer w;
  WriteSession(w, session);
  return Seal(RecordKind::kSession, w);
}

Result<Session> DecodeSession(std::string_view record) {
  auto opened = Open(record, RecordKind::kSession);
  if (!opened.ok()) return opened.status();
  Reader r(opened->second, opened->first.version);
  Session s = ReadSession(r);
  if (Status st = r.Finish(); !st.ok()) return st;
  return s;
}

Result<std::string> EncodeChunk(std::span<const Connection> connections) {
  Writer w;
  w.RecordCount(connections.size(), "a chunk", "connections");
  for (const Connection& c : connections) WriteConnection(w, c);
  return Seal(RecordKind::kConnections, w);
}

Result<std::vector<Chunk>> EncodeChunks(std::span<const Connection> connections) {
  std::vector<Chunk> chunks;
  Writer body;
  size_t first = 0;
  // Seals connections first..i (their bytes in `body`) as a chunk.
  auto seal = [&](size_t end) -> Status {
    Writer w;
    w.Int<uint16_t>(static_cast<uint16_t>(end - first));
    w.out() += body.out();
    Result<std::string> record = Seal(RecordKind::kConnections, w);
    if (!record.ok()) return record.status();
    chunks.push_back(Chunk{.first = first, .count = end - first, .record = std::move(*record)});
    body.out().clear();
    first = end;
    return Status::Ok();
  };
  for (size_t i = 0; i < connections.size(); ++i) {
    Status s;
    const std::string one = EncodedConnection(connections[i], &s);
    if (!s.ok()) return s;
    const size_t count = i - first;
    if (count > 0 && (count == kMaxConnectionsPerChunk ||
                      kHeaderBytes + 2 + body.out().size() + one.size() > kMaxFdMessageBytes)) {
      if (Status sealed = seal(i); !sealed.ok()) return sealed;
    }
    body.out() += one;
  }
  if (first < connections.size()) {
    if (Status sealed = seal(connections.size()); !sealed.ok()) return sealed;
  }
  return chunks;
}

Result<std::vector<Connection>> DecodeChunk(std::string_view record, size_t fds) {
  auto opened = Open(record, RecordKind::kConnections);
  if (!opened.ok()) return opened.status();
  Reader r(opened->second, opened->first.version);
  const uint16_t count = r.Int<uint16_t>("the connection count");
  if (r.ok() && (count == 0 || count > kMaxConnectionsPerChunk)) {
    r.Fail("a chunk of " + std::to_string(count) + " connections, 1 to " +
           std::to_string(kMaxConnectionsPerChunk));
  }
  if (r.ok() && fds != kFdsSentBefore && count != fds) {
    r.Fail("a chunk of " + std::to_string(count) + " connections came with " + std::to_string(fds) +
           " fds");
  }
  std::vector<Connection> out;
  std::unordered_set<uint64_t> ids;
  if (r.ok()) {
    out.reserve(count);
    ids.reserve(count);
  }
  for (size_t i = 0; i < count && r.ok(); ++i) {
    out.push_back(ReadConnection(r));
    if (r.ok() && !ids.insert(out.back().id).second) {
      r.Fail("connection id " + std::to_string(out.back().id) + " twice");
    }
  }
  if (Status s = r.Finish(); !s.ok()) return s;
  return out;
}

Result<std::string> EncodeSockets(std::span<const uint64_t> ids) {
  Writer w;
  w.RecordCount(ids.size(), "a sockets record", "ids");
  for (uint64_t id : ids) {
    if (id == 0) w.Fail("a connection with id 0");
    w.Int<uint64_t>(id);
  }
  return Seal(RecordKind::kSockets, w);
}

Result<std::vector<uint64_t>> DecodeSockets(std::string_view record, size_t fds) {
  auto opened = Open(record, RecordKind::kSockets);
  if (!opened.ok()) return opened.status();
  Reader r(opened->second, opened->first.version);
  const uint16_t count = r.Int<uint16_t>("the id count");
  if (r.ok() && (count == 0 || count > kMaxConnectionsPerChunk || count != fds)) {
    r.Fail("a sockets record of " + std::to_string(count) + " ids came with " +
           std::to_string(fds) + " fds");
  }
  std::vector<uint64_t> ids;
  std::unordered_set<uint64_t> seen;
  for (size_t i = 0; i < count && r.ok(); ++i) {
    const uint64_t id = r.Int<uint64_t>("a connection id");
    if (r.ok() && (id == 0 || !seen.insert(id).second)) {
      r.Fail("connection id " + std::to_string(id) + (id == 0 ? "" : " twice"));
    }
    ids.push_back(id);
  }
  if (Status s = r.Finish(); !s.ok()) return s;
  return ids;
}

std::vector<std::string_view> SplitRecord(std::string_view record) {
  std::vector<std::string_view> parts;
  for (size_t at = 0; at < record.size(); at += kMaxFdMessageBytes) {
    parts.push_back(record.substr(at, kMaxFdMessageBytes));
  }
  return parts;
}

Status RecordAssembler::Add(std::string_view message) {
  if (!header_) {
    Result<Header> h = DecodeHeader(message);
    if (!h.ok()) return h.status();
    header_ = *h;
  }
  if (message.size() > header_->record_bytes() - record_.size()) {
    const size_t want = header_->record_bytes();
    header_.reset();
    record_.clear();
    return Bad("messages beyond the record's " + std::to_string(want) + " bytes");
  }
  record_ += message;
  return Status::Ok();
}

std::string RecordAssembler::Take() {
  header_.reset();
  return std::exchange(record_, {});
}

}  // namespace sb::worker::handoff
