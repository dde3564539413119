#include "protocol/websocket.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace sb::ws {
namespace {

constexpr uint32_t kKey = 0x37fa213d;  // RFC 6455 §5.7's example mask
constexpr size_t kMax = 1 << 20;

struct Ev {
  Event::Kind kind;
  std::string payload;
  uint16_t code;
  bool operator==(const Ev& o) const {
    return kind == o.kind && payload == o.payload && code == o.code;
  }
};

std::ostream& operator<<(std::ostream& os, const Ev& e) {
  return os << "{kind " << static_cast<int>(e.kind) << ", " << e.payload.size() << " bytes, code "
            << e.code << "}";
}

// Feeds a copy of `bytes` (Feed unmasks in place) and collects the events.
uint16_t FeedCopy(MessageParser& p, std::string_view bytes, std::vector<Ev>* out) {
  std::string copy(bytes);
  return p.Feed(copy.data(), copy.size(), [out](const Event& ev) {
    out->push_back(Ev{ev.kind, std::string(ev.payload), ev.close_code});
  });
}

struct Parsed {
  uint16_t code = 0;
  std::vector<Ev> events;
};

Parsed ParseAll(std::string_view bytes, Role role = Role::kServer, size_t max = kMax) {
  MessageParser p(role, max);
  Parsed r;
  r.code = FeedCopy(p, bytes, &r.events);
  return r;
}

std::string Masked(Opcode op, std::string_view payload, bool fin = true, uint32_t key = kKey) {
  std::string out;
  AppendClientFrame(out, op, payload, key, fin);
  return out;
}

// A masked frame with an arbitrary first byte (RSV bits, reserved opcodes).
std::string RawMasked(uint8_t byte0, std::string_view payload) {
  std::string out = Masked(Opcode::kBinary, payload);
  out[0] = static_cast<char>(byte0);
  return out;
}

std::string Close(uint16_t code, std::string_view reason) {
  return Masked(Opcode::kClose, ClosePayload(code, reason));
}

Ev Text(std::string s) { return Ev{Event::Kind::kText, std::move(s), 0}; }
Ev Binary(std::string s) { return Ev{Event::Kind::kBinary, std::move(s), 0}; }
Ev Ping(std::string s) { return Ev{Event::Kind::kPing, std::move(s), 0}; }
Ev Pong(std::string s) { return Ev{Event::Kind::kPong, std::move(s), 0}; }
Ev CloseEv(uint16_t code, std::string reason) {
  return Ev{Event::Kind::kClose, std::move(reason), code};
}

// --- Handshake and frame building -------------------------------------------

TEST(WebsocketHandshake, AcceptKeyMatchesRfcExample) {
  // RFC 6455 §1.3 and §4.2.2.
  EXPECT_EQ(AcceptKey("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  EXPECT_EQ(AcceptKey("x3JJHMbDL1EzLkh9GBhXDw=="), "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
}

TEST(WebsocketFrames, RfcSingleFrameExamples) {
  // RFC 6455 §5.7: unmasked and masked "Hello".
  EXPECT_EQ(ServerFrame(Opcode::kText, "Hello"), "\x81\x05Hello");
  EXPECT_EQ(Masked(Opcode::kText, "Hello"),
            std::string("\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", 11));
  // Unmasked ping with "Hello".
  EXPECT_EQ(ServerFrame(Opcode::kPing, "Hello"), "\x89\x05Hello");
}

TEST(WebsocketFrames, LengthEncodings) {
  std::string h;
  AppendFrameHeader(h, Opcode::kBinary, 125);
  EXPECT_EQ(h, "\x82\x7d");
  h.clear();
  AppendFrameHeader(h, Opcode::kBinary, 126);
  EXPECT_EQ(h, std::string("\x82\x7e\x00\x7e", 4));
  h.clear();
  AppendFrameHeader(h, Opcode::kBinary, 256);  // RFC 6455 §5.7's 256-byte example
  EXPECT_EQ(h, std::string("\x82\x7e\x01\x00", 4));
  h.clear();
  AppendFrameHeader(h, Opcode::kBinary, 65535);
  EXPECT_EQ(h, std::string("\x82\x7e\xff\xff", 4));
  h.clear();
  AppendFrameHeader(h, Opcode::kBinary, 65536);  // and its 64 KiB example
  EXPECT_EQ(h, std::string("\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10));
  h.clear();
  AppendFrameHeader(h, Opcode::kBinary, 0x0102030405060708ULL);
  EXPECT_EQ(h, std::string("\x82\x7f\x01\x02\x03\x04\x05\x06\x07\x08", 10));
}

TEST(WebsocketFrames, HeaderWithoutFinAndWithMask) {
  std::string h;
  const uint8_t mask[4] = {1, 2, 3, 4};
  AppendFrameHeader(h, Opcode::kText, 3, /*fin=*/false, mask);
  EXPECT_EQ(h, std::string("\x01\x83\x01\x02\x03\x04", 6));
}

TEST(WebsocketFrames, ClientFrameMasksWithKeyInNetworkOrder) {
  const std::string f = Masked(Opcode::kBinary, std::string(20, '\0'), true, 0x01020304);
  ASSERT_EQ(f.size(), 2u + 4u + 20u);
  EXPECT_EQ(f.substr(2, 4), "\x01\x02\x03\x04");
  for (size_t i = 0; i < 20; ++i) EXPECT_EQ(f[6 + i], static_cast<char>(1 + i % 4)) << i;
}

TEST(WebsocketFrames, ClosePayloadKeepsShortReason) {
  EXPECT_EQ(ClosePayload(1001, "bye"),
            "\x03\xe9"
            "bye");
  EXPECT_EQ(ClosePayload(1000, ""), std::string("\x03\xe8", 2));
}

TEST(WebsocketFrames, ClosePayloadTruncatesAtCodePointBoundary) {
  EXPECT_EQ(ClosePayload(1000, std::string(200, 'a')).size(), 125u);
  // 2-byte characters: 123 bytes would end inside the 62nd, so 61 are kept.
  std::string e_acute;
  for (int i = 0; i < 100; ++i) e_acute += "\xc3\xa9";
  std::string p = ClosePayload(1000, e_acute);
  EXPECT_EQ(p.size(), 2u + 122u);
  EXPECT_TRUE(IsValidUtf8(p.substr(2)));
  // 4-byte characters: 30 fit in 123 bytes (120).
  std::string emoji;
  for (int i = 0; i < 40; ++i) emoji += "\xf0\x9f\x98\x80";
  p = ClosePayload(4000, emoji);
  EXPECT_EQ(p.size(), 2u + 120u);
  EXPECT_TRUE(IsValidUtf8(p.substr(2)));
  // The truncated payload is accepted by a parser.
  Parsed r = ParseAll(Masked(Opcode::kClose, p));
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.events, std::vector<Ev>{CloseEv(4000, p.substr(2))});
}

// --- Parsing: valid input ----------------------------------------------------

TEST(WebsocketParser, MaskedTextIsUnmaskedInPlaceWithoutCopy) {
  std::string buf = Masked(Opcode::kText, "Hello");
  MessageParser p(Role::kServer, kMax);
  int n = 0;
  uint16_t code = p.Feed(buf.data(), buf.size(), [&](const Event& ev) {
    ++n;
    EXPECT_EQ(ev.kind, Event::Kind::kText);
    EXPECT_EQ(ev.payload, "Hello");
    EXPECT_EQ(ev.payload.data(), buf.data() + 6);  // points into the caller's buffer
  });
  EXPECT_EQ(code, 0);
  EXPECT_EQ(n, 1);
  EXPECT_EQ(p.buffered(), 0u);
}

TEST(WebsocketParser, ClientRoleReadsRfcUnmaskedFrames) {
  // RFC 6455 §5.7: a fragmented unmasked text message, then a pong.
  std::string bytes("\x01\x03Hel\x80\x02lo\x8a\x05Hello", 16);
  Parsed r = ParseAll(bytes, Role::kClient);
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.events, (std::vector<Ev>{Text("Hello"), Pong("Hello")}));
}

TEST(WebsocketParser, SixteenAndSixtyFourBitLengths) {
  for (size_t len : {125u, 126u, 1000u, 65535u, 65536u, 70000u}) {
    std::string payload(len, '\0');
    for (size_t i = 0; i < len; ++i) payload[i] = static_cast<char>(i * 7);
    Parsed r = ParseAll(Masked(Opcode::kBinary, payload));
    EXPECT_EQ(r.code, 0) << len;
    EXPECT_EQ(r.events, std::vector<Ev>{Binary(payload)}) << len;
  }
}

TEST(WebsocketParser, ServerFramesParseInClientRole) {
  std::string big(70000, 'x');
  Parsed r =
      ParseAll(ServerFrame(Opcode::kText, big) + ServerFrame(Opcode::kPing, "p"), Role::kClient);
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.events, (std::vector<Ev>{Text(big), Ping("p")}));
}

TEST(WebsocketParser, EmptyMessagesAndControlFrames) {
  Parsed r =
      ParseAll(Masked(Opcode::kText, "") + Masked(Opcode::kBinary, "") + Masked(Opcode::kPing, "") +
               Masked(Opcode::kPong, "") + Masked(Opcode::kClose, ""));
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.events, (std::vector<Ev>{Text(""), Binary(""), Ping(""), Pong(""),
                                       CloseEv(close_code::kNoStatus, "")}));
}

TEST(WebsocketParser, FragmentedMessageWithInterleavedControlFrames) {
  std::string bytes = Masked(Opcode::kText, "Hel", false) + Masked(Opcode::kPing, "p1") +
                      Masked(Opcode::kContinuation, "lo, ", false) + Masked(Opcode::kPong, "p2") +
                      Masked(Opcode::kContinuation, "world") + Masked(Opcode::kBinary, "next");
  Parsed r = ParseAll(bytes);
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.events,
            (std::vector<Ev>{Ping("p1"), Pong("p2"), Text("Hello, world"), Binary("next")}));
}

// A hand-off (docs/UPGRADE.md): cut anywhere, the leftovers restored in a
// new parser make it go on as the old one would have.
TEST(WebsocketParser, RestoredLeftoversGoOnWhereTheOldParserStopped) {
  const std::string bytes = Masked(Opcode::kBinary, "He", false) + Masked(Opcode::kPing, "p1") +
                            Masked(Opcode::kContinuation, std::string(300, 'l'), false) +
                            Masked(Opcode::kContinuation, "o") + Masked(Opcode::kText, "next");
  const Parsed whole = ParseAll(bytes);
  ASSERT_EQ(whole.code, 0);
  for (size_t cut = 0; cut <= bytes.size(); ++cut) {
    MessageParser old(Role::kServer, kMax);
    std::vector<Ev> events;
    ASSERT_EQ(FeedCopy(old, bytes.substr(0, cut), &events), 0) << cut;
    MessageParser::Leftovers left = old.leftovers();
    MessageParser fresh(Role::kServer, kMax);
    ASSERT_TRUE(fresh.Restore(left).ok()) << cut;
    EXPECT_EQ(fresh.message_in_progress(), old.message_in_progress()) << cut;
    const MessageParser::Leftovers again = fresh.leftovers();
    EXPECT_EQ(again.tail, left.tail);
    EXPECT_EQ(again.message, left.message);
    EXPECT_EQ(again.in_message, left.in_message);
    EXPECT_EQ(again.opcode, left.opcode);
    ASSERT_EQ(FeedCopy(fresh, bytes.substr(cut), &events), 0) << cut;
    EXPECT_EQ(events, whole.events) << cut;
  }
}

TEST(WebsocketParser, LeftoversNoParserCouldHaveLeftAreRefused) {
  MessageParser p(Role::kServer, 100);
  using L = MessageParser::Leftovers;
  EXPECT_FALSE(p.Restore(L{.in_message = true, .opcode = Opcode::kPing}).ok());
  EXPECT_FALSE(p.Restore(L{.message = "ab"}).ok()) << "fragments without a message";
  EXPECT_FALSE(p.Restore(L{.message = std::string(101, 'x'), .in_message = true}).ok());
  EXPECT_FALSE(p.Restore(L{.tail = std::string(14 + 126, 'x')}).ok());
  EXPECT_FALSE(p.message_in_progress()) << "a refusal changes nothing";
  EXPECT_TRUE(p.Restore(L{.message = "ab", .in_message = true, .opcode = Opcode::kBinary}).ok());
  EXPECT_TRUE(p.message_in_progress());
}

TEST(WebsocketParser, CloseInTheMiddleOfAFragmentedMessageIsDelivered) {
  Parsed r = ParseAll(Masked(Opcode::kBinary, "a", false) + Close(1001, "going"));
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.events, std::vector<Ev>{CloseEv(1001, "going")});
}

TEST(WebsocketParser, FragmentedBinaryAndEmptyFragments) {
  Parsed r = ParseAll(Masked(Opcode::kBinary, "", false) +
                      Masked(Opcode::kContinuation, std::string("\xff\x00", 2), false) +
                      Masked(Opcode::kContinuation, ""));
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.events, std::vector<Ev>{Binary(std::string("\xff\x00", 2))});
}

TEST(WebsocketParser, TextCharacterSplitAcrossFragmentsIsValid) {
  // UTF-8 is validated on the whole message, not per fragment.
  Parsed r =
      ParseAll(Masked(Opcode::kText, "caf\xc3", false) + Masked(Opcode::kContinuation, "\xa9"));
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.events, std::vector<Ev>{Text("caf\xc3\xa9")});
}

TEST(WebsocketParser, CloseFrames) {
  EXPECT_EQ(ParseAll(Close(1000, "")).events, std::vector<Ev>{CloseEv(1000, "")});
  EXPECT_EQ(ParseAll(Close(1001, "caf\xc3\xa9")).events,
            std::vector<Ev>{CloseEv(1001, "caf\xc3\xa9")});
  EXPECT_EQ(ParseAll(Masked(Opcode::kClose, "")).events,
            std::vector<Ev>{CloseEv(close_code::kNoStatus, "")});
}

TEST(WebsocketParser, CloseCodesAPeerMaySend) {
  for (uint16_t code : {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
                        3000, 3999, 4000, 4999}) {
    Parsed r = ParseAll(Close(code, "r"));
    EXPECT_EQ(r.code, 0) << code;
    EXPECT_EQ(r.events, std::vector<Ev>{CloseEv(code, "r")}) << code;
  }
  for (uint16_t code : {0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535}) {
    Parsed r = ParseAll(Close(code, ""));
    EXPECT_EQ(r.code, close_code::kProtocolError) << code;
    EXPECT_TRUE(r.events.empty()) << code;
  }
}

// --- Parsing: violations -----------------------------------------------------

TEST(WebsocketParser, ServerRequiresMaskedFrames) {
  EXPECT_EQ(ParseAll(ServerFrame(Opcode::kText, "hi")).code, close_code::kProtocolError);
  EXPECT_EQ(ParseAll(ServerFrame(Opcode::kPing, "")).code, close_code::kProtocolError);
}

TEST(WebsocketParser, ClientRejectsMaskedFrames) {
  EXPECT_EQ(ParseAll(Masked(Opcode::kText, "hi"), Role::kClient).code, close_code::kProtocolError);
}

TEST(WebsocketParser, ReservedBitsAreAProtocolError) {
  for (uint8_t rsv : {0x40, 0x20, 0x10, 0x70}) {
    EXPECT_EQ(ParseAll(RawMasked(0x81 | rsv, "hi")).code, close_code::kProtocolError) << +rsv;
  }
}

TEST(WebsocketParser, UnknownOpcodesAreAProtocolError) {
  for (uint8_t op : {0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF}) {
    EXPECT_EQ(ParseAll(RawMasked(0x80 | op, "")).code, close_code::kProtocolError) << +op;
  }
}

TEST(WebsocketParser, ControlFramesMustBeFinalAndShort) {
  EXPECT_EQ(ParseAll(Masked(Opcode::kPing, "x", /*fin=*/false)).code, close_code::kProtocolError);
  EXPECT_EQ(ParseAll(Masked(Opcode::kClose, "", /*fin=*/false)).code, close_code::kProtocolError);
  EXPECT_EQ(ParseAll(Masked(Opcode::kPing, std::string(125, 'x'))).code, 0);
  EXPECT_EQ(ParseAll(Masked(Opcode::kPong, std::string(126, 'x'))).code,
            close_code::kProtocolError);
}

TEST(WebsocketParser, ContinuationWithoutAStartedMessage) {
  EXPECT_EQ(ParseAll(Masked(Opcode::kContinuation, "x")).code, close_code::kProtocolError);
  // A finished message does not leave one open.
  EXPECT_EQ(ParseAll(Masked(Opcode::kText, "a") + Masked(Opcode::kContinuation, "x")).code,
            close_code::kProtocolError);
}

TEST(WebsocketParser, NewDataFrameInsideAFragmentedMessage) {
  Parsed r = ParseAll(Masked(Opcode::kText, "a", false) + Masked(Opcode::kText, "b"));
  EXPECT_EQ(r.code, close_code::kProtocolError);
  EXPECT_EQ(ParseAll(Masked(Opcode::kText, "a", false) + Masked(Opcode::kBinary, "b")).code,
            close_code::kProtocolError);
}

TEST(WebsocketParser, SixtyFourBitLengthWithTopBitSet) {
  std::string f(
      "\x82\xff\x80\x00\x00\x00\x00\x00\x00\x01"
      "abcd",
      14);
  EXPECT_EQ(ParseAll(f, Role::kServer, SIZE_MAX).code, close_code::kProtocolError);
}

TEST(WebsocketParser, MessageOverTheLimitIsRefusedFromItsHeader) {
  EXPECT_EQ(ParseAll(Masked(Opcode::kBinary, std::string(100, 'x')), Role::kServer, 100).code, 0);
  // Only the header is fed: the parser answers 1009 without buffering.
  std::string header;
  const uint8_t mask[4] = {1, 2, 3, 4};
  AppendFrameHeader(header, Opcode::kBinary, 101, true, mask);
  MessageParser p(Role::kServer, 100);
  std::vector<Ev> events;
  EXPECT_EQ(FeedCopy(p, header, &events), close_code::kMessageTooBig);
  EXPECT_EQ(p.buffered(), 0u);
  // A huge length is refused the same way.
  header.clear();
  AppendFrameHeader(header, Opcode::kText, uint64_t{1} << 62, true, mask);
  EXPECT_EQ(ParseAll(header, Role::kServer, 100).code, close_code::kMessageTooBig);
}

TEST(WebsocketParser, FragmentsTogetherOverTheLimit) {
  std::string ok = Masked(Opcode::kText, std::string(60, 'x'), false) +
                   Masked(Opcode::kContinuation, std::string(40, 'y'));
  EXPECT_EQ(ParseAll(ok, Role::kServer, 100).code, 0);
  std::string big = Masked(Opcode::kText, std::string(60, 'x'), false) +
                    Masked(Opcode::kContinuation, std::string(40, 'y'), false) +
                    Masked(Opcode::kContinuation, "z");
  EXPECT_EQ(ParseAll(big, Role::kServer, 100).code, close_code::kMessageTooBig);
  // Control frames do not count towards the message.
  std::string with_ping = Masked(Opcode::kText, std::string(60, 'x'), false) +
                          Masked(Opcode::kPing, std::string(100, 'p')) +
                          Masked(Opcode::kContinuation, std::string(40, 'y'));
  EXPECT_EQ(ParseAll(with_ping, Role::kServer, 100).code, 0);
}

TEST(WebsocketParser, InvalidUtf8TextIsRefused) {
  EXPECT_EQ(ParseAll(Masked(Opcode::kText, "ab\xff")).code, close_code::kInvalidPayload);
  EXPECT_EQ(
      ParseAll(Masked(Opcode::kText, "caf\xc3", false) + Masked(Opcode::kContinuation, "e")).code,
      close_code::kInvalidPayload);
  // Binary messages are not text.
  EXPECT_EQ(ParseAll(Masked(Opcode::kBinary, "ab\xff")).code, 0);
}

TEST(WebsocketParser, BadClosePayloads) {
  EXPECT_EQ(ParseAll(Masked(Opcode::kClose, "\x03")).code, close_code::kProtocolError);
  EXPECT_EQ(ParseAll(Masked(Opcode::kClose, "\x03\xe8\xc0\xaf")).code, close_code::kInvalidPayload);
}

TEST(WebsocketParser, EventsBeforeAViolationAreDelivered) {
  Parsed r = ParseAll(Masked(Opcode::kText, "first") + Masked(Opcode::kContinuation, "x"));
  EXPECT_EQ(r.code, close_code::kProtocolError);
  EXPECT_EQ(r.events, std::vector<Ev>{Text("first")});
}

// --- Incremental parsing -----------------------------------------------------

std::string MixedStream() {
  return Masked(Opcode::kText, "[\"6\",\"6\",\"room:1\",\"phx_join\",{}]") +
         Masked(Opcode::kBinary, "frag-", false, 0x11223344) + Masked(Opcode::kPing, "ping") +
         Masked(Opcode::kContinuation, std::string(300, 'm'), false, 0xdeadbeef) +
         Masked(Opcode::kContinuation, "end", true, 0) +
         Masked(Opcode::kText, std::string(70000, 'z'), true, 0xa5a5a5a5) +
         Masked(Opcode::kPong, "") + Close(1000, "done");
}

std::vector<Ev> MixedEvents() {
  return {Text("[\"6\",\"6\",\"room:1\",\"phx_join\",{}]"),
          Ping("ping"),
          Binary("frag-" + std::string(300, 'm') + "end"),
          Text(std::string(70000, 'z')),
          Pong(""),
          CloseEv(1000, "done")};
}

TEST(WebsocketParser, SplitAtEveryByteGivesTheSameEvents) {
  // The 70000-byte message makes every split cost a copy; the small prefix
  // is where the boundaries that matter are (headers, 16-bit lengths, masks).
  const std::string stream = MixedStream();
  const std::vector<Ev> want = MixedEvents();
  ASSERT_EQ(ParseAll(stream).events, want);
  std::vector<size_t> splits;
  for (size_t i = 0; i <= 400; ++i) splits.push_back(i);
  for (size_t i = 400; i < stream.size(); i += 997) splits.push_back(i);
  for (size_t i = stream.size() - 40; i <= stream.size(); ++i) splits.push_back(i);
  for (size_t i : splits) {
    MessageParser p(Role::kServer, kMax);
    std::vector<Ev> got;
    ASSERT_EQ(FeedCopy(p, std::string_view(stream).substr(0, i), &got), 0) << i;
    ASSERT_EQ(FeedCopy(p, std::string_view(stream).substr(i), &got), 0) << i;
    ASSERT_EQ(got, want) << "split at " << i;
    EXPECT_EQ(p.buffered(), 0u) << i;
  }
}

TEST(WebsocketParser, SmallMessagesSplitAtEveryByte) {
  // Every boundary of a stream of short frames, exhaustively.
  const std::string stream = Masked(Opcode::kText, "Hel", false) + Masked(Opcode::kPing, "") +
                             Masked(Opcode::kContinuation, "lo") +
                             Masked(Opcode::kBinary, std::string(126, 'b')) + Close(1001, "x");
  const std::vector<Ev> want = {Ping(""), Text("Hello"), Binary(std::string(126, 'b')),
                                CloseEv(1001, "x")};
  for (size_t i = 0; i <= stream.size(); ++i) {
    MessageParser p(Role::kServer, kMax);
    std::vector<Ev> got;
    ASSERT_EQ(FeedCopy(p, std::string_view(stream).substr(0, i), &got), 0) << i;
    ASSERT_EQ(FeedCopy(p, std::string_view(stream).substr(i), &got), 0) << i;
    EXPECT_EQ(got, want) << "split at " << i;
  }
}

TEST(WebsocketParser, OneByteAtATime) {
  const std::string stream = MixedStream();
  MessageParser p(Role::kServer, kMax);
  std::vector<Ev> got;
  for (char c : stream) ASSERT_EQ(FeedCopy(p, std::string_view(&c, 1), &got), 0);
  EXPECT_EQ(got, MixedEvents());
  EXPECT_EQ(p.buffered(), 0u);
}

TEST(WebsocketParser, ViolationFoundWhereverTheStreamIsSplit) {
  const std::string stream = Masked(Opcode::kText, "ok") + Masked(Opcode::kText, "a", false) +
                             Masked(Opcode::kText, std::string(200, 'b'));
  for (size_t i = 0; i <= stream.size(); ++i) {
    MessageParser p(Role::kServer, kMax);
    std::vector<Ev> got;
    uint16_t code = FeedCopy(p, std::string_view(stream).substr(0, i), &got);
    if (code == 0) code = FeedCopy(p, std::string_view(stream).substr(i), &got);
    EXPECT_EQ(code, close_code::kProtocolError) << i;
    EXPECT_EQ(got, std::vector<Ev>{Text("ok")}) << i;
  }
}

TEST(WebsocketParser, BufferedReturnsToZeroAfterALargeMessage) {
  MessageParser p(Role::kServer, kMax);
  EXPECT_EQ(p.buffered(), 0u);
  const std::string big(200000, 'q');
  const std::string frame = Masked(Opcode::kBinary, big);
  std::vector<Ev> got;
  size_t peak = 0;
  for (size_t at = 0; at < frame.size(); at += 4096) {
    ASSERT_EQ(FeedCopy(p, std::string_view(frame).substr(at, 4096), &got), 0);
    peak = std::max(peak, p.buffered());
  }
  EXPECT_EQ(got, std::vector<Ev>{Binary(big)});
  EXPECT_GT(peak, big.size() / 2);
  EXPECT_EQ(p.buffered(), 0u);

  // The same for a fragmented message whose fragments arrive whole.
  got.clear();
  ASSERT_EQ(FeedCopy(p, Masked(Opcode::kText, big, false), &got), 0);
  EXPECT_GE(p.buffered(), big.size());
  ASSERT_EQ(FeedCopy(p, Masked(Opcode::kContinuation, "!"), &got), 0);
  EXPECT_EQ(got, std::vector<Ev>{Text(big + "!")});
  EXPECT_EQ(p.buffered(), 0u);
}

TEST(WebsocketParser, SmallFragmentedMessageLeavesNoHeapEither) {
  MessageParser p(Role::kServer, kMax);
  std::vector<Ev> got;
  ASSERT_EQ(FeedCopy(p, Masked(Opcode::kText, std::string(100, 'a'), false), &got), 0);
  ASSERT_EQ(FeedCopy(p, Masked(Opcode::kContinuation, "b"), &got), 0);
  EXPECT_EQ(got.size(), 1u);
  EXPECT_EQ(p.buffered(), 0u);
}

TEST(WebsocketParser, MessageInProgressFromTheFirstByteOfADataFrameToTheLastFragment) {
  MessageParser p(Role::kServer, kMax);
  std::vector<Ev> got;
  EXPECT_FALSE(p.message_in_progress());
  const std::string whole = Masked(Opcode::kText, "hello");
  ASSERT_EQ(FeedCopy(p, whole.substr(0, 1), &got), 0);
  EXPECT_TRUE(p.message_in_progress()) << "part of a header";
  ASSERT_EQ(FeedCopy(p, whole.substr(1, 8), &got), 0);
  EXPECT_TRUE(p.message_in_progress()) << "part of a payload";
  ASSERT_EQ(FeedCopy(p, whole.substr(9), &got), 0);
  EXPECT_FALSE(p.message_in_progress());

  ASSERT_EQ(FeedCopy(p, Masked(Opcode::kText, "a", false), &got), 0);
  EXPECT_TRUE(p.message_in_progress()) << "a fragment without the final one";
  ASSERT_EQ(FeedCopy(p, Masked(Opcode::kPing, "p"), &got), 0);
  EXPECT_TRUE(p.message_in_progress()) << "a ping between fragments changes nothing";
  ASSERT_EQ(FeedCopy(p, Masked(Opcode::kContinuation, "b"), &got), 0);
  EXPECT_FALSE(p.message_in_progress());

  const std::string ping = Masked(Opcode::kPing, "abc");
  ASSERT_EQ(FeedCopy(p, ping.substr(0, 3), &got), 0);
  EXPECT_FALSE(p.message_in_progress()) << "part of a control frame is not a message";
  ASSERT_EQ(FeedCopy(p, ping.substr(3), &got), 0);
  EXPECT_EQ(got, (std::vector<Ev>{Text("hello"), Ping("p"), Text("ab"), Ping("abc")}));
}

// What a peer can make the parser hold between reads, whatever it sends
// and however its bytes are cut: under 2 × (limit + 14).
TEST(WebsocketParser, BufferedStaysWithinTwiceTheLimit) {
  constexpr size_t kLimit = 100000;
  const size_t bound = 2 * (kLimit + 14);
  for (size_t first : {size_t{1}, size_t{1000}, size_t{49999}, kLimit - 1}) {
    for (size_t cut : {size_t{7}, size_t{4096}, size_t{65536}}) {
      SCOPED_TRACE(testing::Message() << "first fragment " << first << ", reads of " << cut);
      MessageParser p(Role::kServer, kLimit);
      std::string stream = Masked(Opcode::kBinary, std::string(first, 'a'), false);
      // Fragments up to the limit, with pings between them, then the end.
      size_t sent = first;
      for (size_t n = 1; sent + n < kLimit; n *= 3) {
        stream += Masked(Opcode::kPing, "k");
        stream += Masked(Opcode::kContinuation, std::string(n, 'b'), false);
        sent += n;
      }
      stream += Masked(Opcode::kContinuation, std::string(kLimit - sent, 'c'));
      std::vector<Ev> got;
      size_t peak = 0;
      for (size_t at = 0; at < stream.size(); at += cut) {
        ASSERT_EQ(FeedCopy(p, std::string_view(stream).substr(at, cut), &got), 0);
        peak = std::max(peak, p.buffered());
      }
      EXPECT_LE(peak, bound);
      ASSERT_FALSE(got.empty());
      EXPECT_EQ(got.back().payload.size(), kLimit);
      EXPECT_EQ(p.buffered(), 0u);
    }
  }
}

// --- UTF-8 -------------------------------------------------------------------

TEST(WebsocketUtf8, WellFormed) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ASCII text longer than eight bytes"));
  EXPECT_TRUE(IsValidUtf8(std::string("nul \0 inside", 12)));
  EXPECT_TRUE(IsValidUtf8("\xc2\x80"));          // U+0080
  EXPECT_TRUE(IsValidUtf8("\xdf\xbf"));          // U+07FF
  EXPECT_TRUE(IsValidUtf8("\xe0\xa0\x80"));      // U+0800
  EXPECT_TRUE(IsValidUtf8("\xed\x9f\xbf"));      // U+D7FF
  EXPECT_TRUE(IsValidUtf8("\xee\x80\x80"));      // U+E000
  EXPECT_TRUE(IsValidUtf8("\xef\xbf\xbf"));      // U+FFFF
  EXPECT_TRUE(IsValidUtf8("\xf0\x90\x80\x80"));  // U+10000
  EXPECT_TRUE(IsValidUtf8("\xf4\x8f\xbf\xbf"));  // U+10FFFF, the maximum
  EXPECT_TRUE(IsValidUtf8("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"));  // κόσμε
}

TEST(WebsocketUtf8, IllFormed) {
  EXPECT_FALSE(IsValidUtf8("\x80"));  // lone continuation
  EXPECT_FALSE(IsValidUtf8("\xbf"));
  EXPECT_FALSE(IsValidUtf8("\xc0\x80"));                  // overlong NUL
  EXPECT_FALSE(IsValidUtf8("\xc1\xbf"));                  // overlong
  EXPECT_FALSE(IsValidUtf8("\xe0\x80\x80"));              // overlong
  EXPECT_FALSE(IsValidUtf8("\xe0\x9f\xbf"));              // overlong U+07FF
  EXPECT_FALSE(IsValidUtf8("\xf0\x8f\xbf\xbf"));          // overlong U+FFFF
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));              // U+D800, a surrogate
  EXPECT_FALSE(IsValidUtf8("\xed\xbf\xbf"));              // U+DFFF
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\xbd\xed\xb8\x80"));  // a surrogate pair, CESU-8 style
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));          // U+110000
  EXPECT_FALSE(IsValidUtf8("\xf5\x80\x80\x80"));
  EXPECT_FALSE(IsValidUtf8("\xf8\x88\x80\x80\x80"));  // 5-byte form
  EXPECT_FALSE(IsValidUtf8("\xfe"));
  EXPECT_FALSE(IsValidUtf8("\xff"));
  EXPECT_FALSE(IsValidUtf8("\xc3"));  // truncated
  EXPECT_FALSE(IsValidUtf8("\xe2\x82"));
  EXPECT_FALSE(IsValidUtf8("\xf0\x9f\x98"));
  EXPECT_FALSE(IsValidUtf8("\xc3\x28"));  // bad continuation
  EXPECT_FALSE(IsValidUtf8("\xe2\x28\xa1"));
  EXPECT_FALSE(IsValidUtf8("\xf0\x9f\x28\x80"));
}

TEST(WebsocketUtf8, BadByteAtEveryOffsetOfTheAsciiFastPath) {
  for (size_t len = 1; len <= 24; ++len) {
    for (size_t at = 0; at < len; ++at) {
      std::string s(len, 'a');
      s[at] = '\xff';
      EXPECT_FALSE(IsValidUtf8(s)) << len << " " << at;
      s[at] = '\xc3';
      EXPECT_EQ(IsValidUtf8(s), false) << "truncated or bad continuation " << len << " " << at;
      s.insert(at + 1, 1, '\xa9');
      EXPECT_TRUE(IsValidUtf8(s)) << len << " " << at;
    }
  }
}

}  // namespace
}  // namespace sb::ws
