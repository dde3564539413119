#include "worker/handoff_state.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "common/fd_passing.h"
#include "common/unique_fd.h"
#include "gtest/gtest.h"

namespace sb::worker::handoff {
namespace {

// A connection with every field set to something other than its default.
Connection FullConnection(uint64_t id) {
  Connection c;
  c.id = id;
  c.address = std::string(16, '\x7f');
  c.address[15] = static_cast<char>(id);
  c.last_rx_ms = 1000 + static_cast<int64_t>(id);
  c.last_tx_ms = -2;
  c.message_since_ms = 999;
  c.parser_tail = std::string("\x81\x85\x00\x01", 4);
  c.parser_message = "fragment";
  c.in_message = true;
  c.message_opcode = 2;
  c.written = 3;
  c.outbound = {{.kind = 0, .bytes = "\x81\x05hello"},
                {.kind = 1, .bytes = "\x8a\x00"},
                {.kind = 2, .bytes = "owed"},
                {.kind = 3, .bytes = "\x88\x02\x03\xe8"}};
  c.identity = TokenIdentity{.sub = "user-1", .topic_patterns = {"room:*", "user:1"}};
  c.rate = {.tokens = 12.5, .last_ms = 123456789};
  c.channels = {{.topic = "room:1",
                 .join_ref = "7",
                 .presence_seq = 42,
                 .presence_key = "alice",
                 .presence_meta = R"({"phx_ref":"s1-16","online_at":1})"},
                {.topic = "room:2", .join_ref = std::nullopt}};
  return c;
}

// An HTTP connection mid-request: every field it has set.
Connection FullHttpConnection(uint64_t id) {
  Connection c;
  c.id = id;
  c.address = std::string(16, '\x0a');
  c.last_rx_ms = 2000;
  c.last_tx_ms = 1999;
  c.written = 4;
  c.outbound = {{.kind = 3, .bytes = "HTTP/1.1 100 Continue\r\n\r\n"}};
  c.http = HttpPhase{.received = "POST /api/publish HTTP/1.1\r\nContent-Length: 9\r\n\r\n{\"to",
                     .requests = 7,
                     .continued = true,
                     .end = HttpEnd::kKeepAlive,
                     .deadline_ms = 12000};
  return c;
}

// A version 1 chunk of one connection, as a version 1 binary wrote it: the
// connection with id 1 and every other field at its default.
std::string VersionOneMinimalChunk() {
  std::string r("SBHO\x01\x00\x02\x51\x00\x00\x00", kHeaderBytes);
  r += std::string("\x01\x00", 2);                          // one connection
  r += std::string("\x01\x00\x00\x00\x00\x00\x00\x00", 8);  // id 1
  r += std::string(4 + 3 * 8 + 4 + 4 + 1,
                   '\0');  // address, times, parser tail and message, in_message
  r += '\x01';             // message opcode
  r += std::string(8 + 4 + 1 + 8 + 8 + 4, '\0');  // written, frames, identity, rate, channels
  return r;
}

Session FullSession() {
  Session s;
  s.shard = "w1";
  s.instance = 0x1234567890abcdefULL;
  s.token = "0123456789abcdef0123456789abcdef";
  s.epoch = 77;
  s.next_seq = 10;
  s.members = {"w1", "w2"};
  s.outbox = {{.seq = 8, .topic = "room:1", .message = "[1]", .flags = 2, .stamp = 5, .key = ""},
              {.seq = 9, .topic = "room:2", .message = "[2]", .flags = 4, .stamp = 0, .key = "k"}};
  s.origins = {{.instance = 3, .seq = 100, .last_ms = -1}, {.instance = 4, .seq = 1, .last_ms = 2}};
  s.claims = {{.key = "k", .topic = "room:2", .seq = 9, .at_ms = 50}};
  s.presence_ref_prefix = "s1-";
  s.next_presence_seq = 43;
  s.remote_presence = {{.topic = "room:1", .state_json = R"({"bob":{"metas":[]}})"}};
  s.streams = {{.topic = "feed:1", .stream = 0xabcdef, .offset = 321}};
  s.connections = 600;
  s.chunks = 3;
  return s;
}

std::string Rehead(std::string_view record, uint16_t version, size_t body_bytes) {
  std::string out(record);
  out[4] = static_cast<char>(version & 0xff);
  out[5] = static_cast<char>(version >> 8);
  for (int i = 0; i < 4; ++i) out[7 + i] = static_cast<char>((body_bytes >> (8 * i)) & 0xff);
  return out;
}

void ExpectRefused(const Status& s, std::string_view words) {
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Status::Code::kRefused) << s.message();
  EXPECT_EQ(s.message().rfind("handoff state: ", 0), 0u) << s.message();
  EXPECT_NE(s.message().find(words), std::string::npos) << s.message();
}

TEST(HandoffStateTest, ConnectionsRoundTripEveryField) {
  const std::vector<Connection> in = {FullConnection(1), Connection{.id = 2}, FullConnection(3)};
  Result<std::string> record = EncodeChunk(in);
  ASSERT_TRUE(record.ok()) << record.status().message();
  Result<std::vector<Connection>> out = DecodeChunk(*record, in.size());
  ASSERT_TRUE(out.ok()) << out.status().message();
  EXPECT_EQ(*out, in);
  // A field changed is a record changed: none is left out of the encoding.
  Connection other = FullConnection(1);
  other.channels[0].presence_meta = "{}";
  EXPECT_NE(EncodeChunk(std::vector<Connection>{other}).value(),
            EncodeChunk(std::vector<Connection>{FullConnection(1)}).value());
}

TEST(HandoffStateTest, HttpConnectionsRoundTripEveryField) {
  Connection closing{.id = 4, .written = 1, .outbound = {{.kind = 3, .bytes = "HTTP/1.1 200"}}};
  closing.http = HttpPhase{.end = HttpEnd::kCloseLinger, .deadline_ms = 5};
  Connection lingering{.id = 5};
  lingering.http = HttpPhase{.end = HttpEnd::kLingering, .deadline_ms = 6};
  const std::vector<Connection> in = {FullHttpConnection(1), FullConnection(2),
                                      Connection{.id = 3, .http = HttpPhase{}}, closing, lingering};
  Result<std::string> record = EncodeChunk(in);
  ASSERT_TRUE(record.ok()) << record.status().message();
  Result<std::vector<Connection>> out = DecodeChunk(*record, in.size());
  ASSERT_TRUE(out.ok()) << out.status().message();
  EXPECT_EQ(*out, in);
  for (auto change : std::vector<std::function<void(HttpPhase&)>>{
           [](HttpPhase& h) { h.received += "x"; }, [](HttpPhase& h) { ++h.requests; },
           [](HttpPhase& h) { h.continued = false; }, [](HttpPhase& h) { ++h.deadline_ms; }}) {
    Connection other = FullHttpConnection(1);
    change(*other.http);
    EXPECT_NE(EncodeChunk(std::vector<Connection>{other}).value(),
              EncodeChunk(std::vector<Connection>{FullHttpConnection(1)}).value());
  }
}

// A new binary takes the state of the one it replaces: records of version
// 1 (WebSockets only) decode, every connection a WebSocket.
TEST(HandoffStateTest, VersionOneRecordsStillDecode) {
  Result<std::vector<Connection>> minimal = DecodeChunk(VersionOneMinimalChunk(), 1);
  ASSERT_TRUE(minimal.ok()) << minimal.status().message();
  EXPECT_EQ(*minimal, std::vector<Connection>{Connection{.id = 1}});

  // Version 2 wrote one more byte per connection, its HTTP flag (0 for a
  // WebSocket), last: without it and with version 1 in the header, the
  // record is what version 1 wrote.
  Result<std::string> now = EncodeChunk(std::vector<Connection>{FullConnection(1)});
  ASSERT_TRUE(now.ok());
  ASSERT_EQ(now->back(), '\0');
  const std::string v1 = Rehead(now->substr(0, now->size() - 1), 1, now->size() - 1 - kHeaderBytes);
  Result<std::vector<Connection>> full = DecodeChunk(v1, 1);
  ASSERT_TRUE(full.ok()) << full.status().message();
  EXPECT_EQ(*full, std::vector<Connection>{FullConnection(1)});
  // Read as version 2, the same bytes lack the flag.
  ExpectRefused(DecodeChunk(Rehead(v1, 2, v1.size() - kHeaderBytes), 1).status(),
                "cut in the HTTP flag");

  Result<std::string> session = EncodeSession(FullSession());
  ASSERT_TRUE(session.ok());
  Result<Session> old_session = DecodeSession(Rehead(*session, 1, session->size() - kHeaderBytes));
  ASSERT_TRUE(old_session.ok()) << old_session.status().message();
  EXPECT_EQ(*old_session, FullSession());
}

TEST(HandoffStateTest, SessionRoundTripsEveryField) {
  const Session in = FullSession();
  Result<std::string> record = EncodeSession(in);
  ASSERT_TRUE(record.ok()) << record.status().message();
  Result<Session> out = DecodeSession(*record);
  ASSERT_TRUE(out.ok()) << out.status().message();
  EXPECT_EQ(*out, in);
  // A shard on its own: an empty session.
  Result<std::string> empty = EncodeSession(Session{});
  ASSERT_TRUE(empty.ok());
  Result<Session> back = DecodeSession(*empty);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(*back, Session{});
}

TEST(HandoffStateTest, HeaderSaysWhatTheRecordIs) {
  Result<std::string> record = EncodeSession(FullSession());
  ASSERT_TRUE(record.ok());
  EXPECT_EQ(record->substr(0, 4), "SBHO");
  Result<Header> h = DecodeHeader(*record);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->version, kVersion);
  EXPECT_EQ(h->kind, RecordKind::kSession);
  EXPECT_EQ(h->record_bytes(), record->size());
  // A session is not a chunk, nor a chunk a session.
  ExpectRefused(DecodeChunk(*record, 0).status(), "kind 1");
  Result<std::string> chunk = EncodeChunk(std::vector<Connection>{FullConnection(1)});
  ASSERT_TRUE(chunk.ok());
  ExpectRefused(DecodeSession(*chunk).status(), "kind 2");
}

TEST(HandoffStateTest, ASocketsRecordNamesItsFdsConnections) {
  const std::vector<uint64_t> ids = {(uint64_t{1} << 20) | 7, (uint64_t{2} << 20) | 9, 3};
  Result<std::string> record = EncodeSockets(ids);
  ASSERT_TRUE(record.ok()) << record.status().message();
  Result<Header> h = DecodeHeader(*record);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->version, 3);
  EXPECT_EQ(h->kind, RecordKind::kSockets);
  Result<std::vector<uint64_t>> back = DecodeSockets(*record, ids.size());
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(*back, ids);
  // With another number of fds, it is not the record they came with.
  ExpectRefused(DecodeSockets(*record, 2).status(), "3 ids came with 2 fds");
  // Not a session, nor a chunk.
  ExpectRefused(DecodeSession(*record).status(), "kind 3");
  ExpectRefused(DecodeChunk(*record, 3).status(), "kind 3");
  // Version 2 had no such record.
  ExpectRefused(DecodeHeader(Rehead(*record, 2, record->size() - kHeaderBytes)).status(),
                "unknown record kind 3");
}

TEST(HandoffStateTest, ASocketsRecordRefusesZeroRepeatedOrTooManyIds) {
  ExpectRefused(EncodeSockets(std::vector<uint64_t>{}).status(), "0 ids");
  ExpectRefused(EncodeSockets(std::vector<uint64_t>{1, 0}).status(), "id 0");
  ExpectRefused(EncodeSockets(std::vector<uint64_t>(kMaxConnectionsPerChunk + 1, 1)).status(),
                "254 ids");
  // The encoder does not check for repeats: the decoder does.
  Result<std::string> twice = EncodeSockets(std::vector<uint64_t>{5, 6, 5});
  ASSERT_TRUE(twice.ok());
  ExpectRefused(DecodeSockets(*twice, 3).status(), "connection id 5 twice");
}

TEST(HandoffStateTest, AChunkWhoseFdsCameBeforeDecodesWithoutThem) {
  const std::vector<Connection> conns = {FullConnection(1), FullConnection(2)};
  Result<std::string> record = EncodeChunk(conns);
  ASSERT_TRUE(record.ok());
  Result<std::vector<Connection>> back = DecodeChunk(*record, kFdsSentBefore);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(*back, conns);
  ExpectRefused(DecodeChunk(*record, 1).status(), "came with 1 fds");
}

TEST(HandoffStateTest, UnknownVersionIsRefusedAsARollback) {
  Result<std::string> record = EncodeSession(FullSession());
  ASSERT_TRUE(record.ok());
  const size_t body = record->size() - kHeaderBytes;
  for (uint16_t v : {uint16_t{0}, uint16_t{kVersion + 1}, uint16_t{0xffff}}) {
    const std::string other = Rehead(*record, v, body);
    Result<Session> s = DecodeSession(other);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), Status::Code::kNotFound);
    EXPECT_EQ(s.status().message(),
              "handoff state: unknown state version " + std::to_string(v) + ": roll back");
    EXPECT_EQ(DecodeChunk(other, 1).status().code(), Status::Code::kNotFound);
    RecordAssembler a;
    EXPECT_EQ(a.Add(other).code(), Status::Code::kNotFound);
  }
}

TEST(HandoffStateTest, EveryTruncationIsRefused) {
  Result<std::string> chunk = EncodeChunk(std::vector<Connection>{FullConnection(1)});
  Result<std::string> http = EncodeChunk(std::vector<Connection>{FullHttpConnection(1)});
  Result<std::string> session = EncodeSession(FullSession());
  ASSERT_TRUE(chunk.ok() && http.ok() && session.ok());
  for (const std::string* record : {&chunk.value(), &http.value(), &session.value()}) {
    const bool is_chunk = record != &session.value();
    const size_t body = record->size() - kHeaderBytes;
    for (size_t cut = 0; cut < record->size(); ++cut) {
      // The record cut as it is, and cut with a header that agrees: the
      // body itself ends early.
      const std::string as_is = record->substr(0, cut);
      Status a = is_chunk ? DecodeChunk(as_is, 1).status() : DecodeSession(as_is).status();
      EXPECT_FALSE(a.ok()) << cut;
      if (cut < kHeaderBytes) continue;
      const std::string agreed = Rehead(as_is, kVersion, cut - kHeaderBytes);
      Status b = is_chunk ? DecodeChunk(agreed, 1).status() : DecodeSession(agreed).status();
      ExpectRefused(b, cut - kHeaderBytes < 2 && is_chunk ? "cut in" : "");
      if (b.ok()) ADD_FAILURE() << "a body cut at " << cut - kHeaderBytes << " of " << body;
    }
    // A byte too many.
    const std::string longer = Rehead(*record + "x", kVersion, body + 1);
    Status extra = is_chunk ? DecodeChunk(longer, 1).status() : DecodeSession(longer).status();
    ExpectRefused(extra, "1 bytes after the last field");
  }
}

// The offset of the first occurrence of `needle` in `hay` (which must hold it).
size_t At(std::string_view hay, std::string_view needle) {
  const size_t at = hay.find(needle);
  EXPECT_NE(at, std::string::npos);
  return at;
}

void PutU32(std::string* s, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) (*s)[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

TEST(HandoffStateTest, BoundsAreRefusedNamingWhatIsWrong) {
  Connection c = FullConnection(1);
  c.channels.resize(1);
  Result<std::string> record = EncodeChunk(std::vector<Connection>{c});
  ASSERT_TRUE(record.ok());
  // The channel count sits just before the topic's length and bytes.
  const size_t topic_len_at = At(*record, "room:1") - 4;
  std::string hostile = *record;
  PutU32(&hostile, topic_len_at - 4, 0xffffffff);
  ExpectRefused(DecodeChunk(hostile, 1).status(), "4294967295 channels, at most 65536");
  hostile = *record;
  PutU32(&hostile, topic_len_at - 4, 1000);
  ExpectRefused(DecodeChunk(hostile, 1).status(), "1000 channels in");
  hostile = *record;
  PutU32(&hostile, topic_len_at, 5000);
  ExpectRefused(DecodeChunk(hostile, 1).status(), "a channel topic of 5000 bytes, at most 4096");
  hostile = *record;
  PutU32(&hostile, topic_len_at, 4000);
  ExpectRefused(DecodeChunk(hostile, 1).status(), "cut in a channel topic");

  // The chunk's count against its fds, and its own bounds.
  ExpectRefused(DecodeChunk(*record, 2).status(), "1 connections came with 2 fds");
  hostile = *record;
  hostile[kHeaderBytes] = 0;
  ExpectRefused(DecodeChunk(hostile, 0).status(), "a chunk of 0 connections");

  // Values the state cannot hold.
  hostile = *record;
  hostile[kHeaderBytes + 2] = 0;  // the id's low byte: 1 → 0
  ExpectRefused(DecodeChunk(hostile, 1).status(), "id 0");
  const size_t frame_at = At(*record, "\x81\x05hello") - 5;  // kind, then length
  hostile = *record;
  hostile[frame_at] = 9;
  ExpectRefused(DecodeChunk(hostile, 1).status(), "an outbound frame of kind 9");
  hostile = *record;
  hostile[frame_at - 12] = 100;  // `written`, past the first frame's 7 bytes
  ExpectRefused(DecodeChunk(hostile, 1).status(), "written bytes not within the first frame");

  // An HTTP connection's own bounds and invariants.
  Result<std::string> http = EncodeChunk(std::vector<Connection>{FullHttpConnection(1)});
  ASSERT_TRUE(http.ok());
  const size_t received_len_at = At(*http, "POST /api/") - 4;
  hostile = *http;
  hostile[received_len_at - 1] = 2;  // the HTTP flag
  ExpectRefused(DecodeChunk(hostile, 1).status(), "the HTTP flag is not 0 or 1");
  hostile = *http;
  PutU32(&hostile, received_len_at, 0xffffffff);
  ExpectRefused(DecodeChunk(hostile, 1).status(),
                "HTTP bytes received of 4294967295 bytes, at most 67108864");
  const size_t end_at = http->size() - 9;  // the end, then the deadline
  hostile = *http;
  hostile[end_at] = 4;
  ExpectRefused(DecodeChunk(hostile, 1).status(), "an HTTP end 4");
  hostile = *http;
  hostile[end_at] = static_cast<char>(HttpEnd::kClose);
  ExpectRefused(DecodeChunk(hostile, 1).status(), "a closing HTTP connection with a request");

  // Two connections with one id.
  Result<std::string> twice =
      EncodeChunk(std::vector<Connection>{FullConnection(5), FullConnection(5)});
  ASSERT_TRUE(twice.ok());
  ExpectRefused(DecodeChunk(*twice, 2).status(), "connection id 5 twice");

  // A body length over the bound is refused from the header alone.
  ExpectRefused(DecodeHeader(Rehead(*record, kVersion, kMaxRecordBytes + 1)).status(), "a body of");
  std::string magic = *record;
  magic[0] = 'X';
  ExpectRefused(DecodeHeader(magic).status(), "no SBHO magic");
}

TEST(HandoffStateTest, EncoderRefusesWhatTheDecoderWould) {
  Connection c = FullConnection(1);
  c.channels[0].topic = std::string(kMaxNameBytes + 1, 't');
  ExpectRefused(EncodeChunk(std::vector<Connection>{c}).status(), "a channel topic of 4097 bytes");
  c = FullConnection(1);
  c.rate.tokens = std::numeric_limits<double>::quiet_NaN();
  ExpectRefused(EncodeChunk(std::vector<Connection>{c}).status(), "rate tokens");
  c = FullConnection(1);
  c.channels[1].presence_key = "k";
  ExpectRefused(EncodeChunk(std::vector<Connection>{c}).status(), "without a presence");
  ExpectRefused(
      EncodeChunk(std::vector<Connection>(kMaxConnectionsPerChunk + 1, FullConnection(1))).status(),
      "a chunk of 254 connections");
  c = FullHttpConnection(1);
  c.channels.push_back({.topic = "room:1"});
  ExpectRefused(EncodeChunk(std::vector<Connection>{c}).status(),
                "an HTTP connection with WebSocket state");
  c = FullHttpConnection(1);
  c.parser_tail = "x";
  ExpectRefused(EncodeChunk(std::vector<Connection>{c}).status(),
                "an HTTP connection with WebSocket state");
  c = FullHttpConnection(1);
  c.http->end = HttpEnd::kLingering;
  ExpectRefused(EncodeChunk(std::vector<Connection>{c}).status(),
                "a closing HTTP connection with a request");
  Session s = FullSession();
  s.outbox[1].seq = 8;
  ExpectRefused(EncodeSession(s).status(), "outbox seqs");
}

TEST(HandoffStateTest, ChunksHoldAtMost253ConnectionsAndFitAMessage) {
  std::vector<Connection> many;
  for (uint64_t id = 1; id <= 600; ++id) many.push_back(Connection{.id = id});
  Result<std::vector<Chunk>> chunks = EncodeChunks(many);
  ASSERT_TRUE(chunks.ok()) << chunks.status().message();
  ASSERT_EQ(chunks->size(), 3u);
  size_t next = 0;
  for (const Chunk& chunk : *chunks) {
    EXPECT_EQ(chunk.first, next);
    EXPECT_LE(chunk.count, kMaxConnectionsPerChunk);
    EXPECT_LE(chunk.record.size(), kMaxFdMessageBytes);
    Result<std::vector<Connection>> back = DecodeChunk(chunk.record, chunk.count);
    ASSERT_TRUE(back.ok()) << back.status().message();
    for (size_t i = 0; i < chunk.count; ++i) EXPECT_EQ((*back)[i], many[chunk.first + i]);
    next += chunk.count;
  }
  EXPECT_EQ(next, many.size());
  EXPECT_EQ((*chunks)[0].count, 253u);

  // Connections with queues: fewer per chunk, each chunk still one message.
  std::vector<Connection> busy;
  for (uint64_t id = 1; id <= 10; ++id) {
    Connection c{.id = id};
    c.outbound.push_back({.kind = 0, .bytes = std::string(30000, 'q')});
    busy.push_back(c);
  }
  chunks = EncodeChunks(busy);
  ASSERT_TRUE(chunks.ok());
  EXPECT_EQ(chunks->size(), 3u);  // 4 of 30 KB fit in 128 KiB
  for (const Chunk& chunk : *chunks) EXPECT_LE(chunk.record.size(), kMaxFdMessageBytes);
}

TEST(HandoffStateTest, ALargeConnectionGoesAloneInSeveralMessages) {
  Connection big = FullConnection(2);
  big.outbound.push_back({.kind = 0, .bytes = std::string(1 << 20, 'b')});
  const std::vector<Connection> in = {FullConnection(1), big, FullConnection(3)};
  Result<std::vector<Chunk>> chunks = EncodeChunks(in);
  ASSERT_TRUE(chunks.ok());
  ASSERT_EQ(chunks->size(), 3u);
  const Chunk& alone = (*chunks)[1];
  EXPECT_EQ(alone.first, 1u);
  EXPECT_EQ(alone.count, 1u);
  const std::vector<std::string_view> parts = SplitRecord(alone.record);
  EXPECT_EQ(parts.size(), (alone.record.size() + kMaxFdMessageBytes - 1) / kMaxFdMessageBytes);
  RecordAssembler a;
  for (std::string_view part : parts) {
    EXPECT_LE(part.size(), kMaxFdMessageBytes);
    EXPECT_FALSE(a.complete());
    ASSERT_TRUE(a.Add(part).ok());
  }
  ASSERT_TRUE(a.complete());
  const std::string record = a.Take();
  EXPECT_FALSE(a.complete());
  Result<std::vector<Connection>> back = DecodeChunk(record, 1);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ((*back)[0], big);

  // A message past the record's stated length is refused.
  RecordAssembler b;
  ASSERT_TRUE(b.Add(parts[0]).ok());
  ExpectRefused(b.Add(std::string(alone.record.size(), 'x')), "beyond the record");
}

// The two pieces together: a chunk and its fds over a socketpair, as the
// old process sends them and the new one takes them.
TEST(HandoffStateTest, AChunkTravelsWithItsFds) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd old_end(sv[0]), new_end(sv[1]);
  std::vector<Connection> conns;
  std::vector<UniqueFd> clients, ours;
  for (uint64_t id = 1; id <= 3; ++id) {
    int pair[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    clients.emplace_back(pair[0]);
    ours.emplace_back(pair[1]);
    conns.push_back(FullConnection(id));
  }
  Result<std::vector<Chunk>> chunks = EncodeChunks(conns);
  ASSERT_TRUE(chunks.ok());
  ASSERT_EQ(chunks->size(), 1u);
  std::vector<int> fds;
  for (const UniqueFd& f : ours) fds.push_back(f.get());
  Result<SendResult> sent = SendFds(old_end.get(), (*chunks)[0].record, fds);
  ASSERT_TRUE(sent.ok()) << sent.status().message();
  ours.clear();  // the old process lets go

  Result<FdMessage> got = ReceiveFds(new_end.get());
  ASSERT_TRUE(got.ok()) << got.status().message();
  Result<std::vector<Connection>> back = DecodeChunk(got->bytes, got->fds.size());
  ASSERT_TRUE(back.ok()) << back.status().message();
  ASSERT_EQ(back->size(), 3u);
  for (size_t i = 0; i < back->size(); ++i) {
    EXPECT_EQ((*back)[i], conns[i]);
    // Connection i's fd is fd i: what the new process writes on it reaches
    // that client.
    const std::string hi = "to " + std::to_string((*back)[i].id);
    ASSERT_EQ(::write(got->fds[i].get(), hi.data(), hi.size()), static_cast<ssize_t>(hi.size()));
    char buf[16];
    const ssize_t n = ::read(clients[i].get(), buf, sizeof(buf));
    ASSERT_GT(n, 0);
    EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), hi);
  }
}

}  // namespace
}  // namespace sb::worker::handoff
