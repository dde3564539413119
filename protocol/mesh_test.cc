#include "protocol/mesh.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "protocol/mesh_testing.h"

namespace sb::mesh {
namespace {

using namespace std::string_literals;
using namespace std::string_view_literals;
using mesh_testing::EncodeFrames;

std::vector<std::string_view> Views(const std::vector<std::string>& frames) {
  return {frames.begin(), frames.end()};
}

Message MustDecode(const std::vector<std::string>& frames) {
  const std::vector<std::string_view> views = Views(frames);
  Message m;
  const Status s = Decode(views, &m);
  EXPECT_TRUE(s.ok()) << s.message();
  return m;
}

// Decoding `frames` is refused with a message containing `what`.
void ExpectRefused(const std::vector<std::string>& frames, const std::string& what) {
  const std::vector<std::string_view> views = Views(frames);
  Message m;
  m.seq = 77;
  const Status s = Decode(views, &m);
  ASSERT_FALSE(s.ok()) << "accepted; want: " << what;
  EXPECT_EQ(s.code(), Status::Code::kRefused);
  EXPECT_NE(s.message().find(what), std::string::npos) << s.message();
  EXPECT_EQ(s.message().rfind("mesh: ", 0), 0u) << s.message();
  EXPECT_EQ(m.seq, 77u) << "a refused decode wrote its output";
}

std::string Describe(const Message& m) {
  return "type=" + std::to_string(static_cast<int>(m.type)) + " epoch=" + std::to_string(m.epoch) +
         " seq=" + std::to_string(m.seq) + " origin=" + std::to_string(m.origin) +
         " n=" + std::to_string(m.n) + " flags=" + std::to_string(m.flags) +
         " stamp=" + std::to_string(m.stamp) + " topic=[" + std::string(m.topic) + "] body=[" +
         std::string(m.body) + "] key=[" + std::string(m.key) +
         "] offset=" + std::to_string(m.offset) + " stream=" + std::to_string(m.stream) +
         " id=" + std::to_string(m.id) + " top=" + std::to_string(m.top) +
         " first=" + std::to_string(m.first) + " echo=" + std::to_string(m.echo);
}

std::string Describe(const PresenceEntry& e) {
  return "{" + e.key + "|" + e.phx_ref + "|" + e.meta_json + "}";
}

std::string Describe(const std::vector<PresenceEntry>& entries) {
  std::string out = "[";
  for (const PresenceEntry& e : entries) out += Describe(e);
  return out + "]";
}

std::string Describe(const Hello& h) {
  std::string out = h.shard + " " + std::to_string(h.instance) + " " + std::to_string(h.window) +
                    " token:" + h.token + " outbox:" + std::to_string(h.outbox) +
                    " acked:" + (h.acked ? std::to_string(*h.acked) : "-") +
                    " heartbeat:" + std::to_string(h.heartbeat_ms);
  for (const std::string& m : h.members) out += " m:" + m;
  for (const std::string& t : h.topics) out += " t:" + t;
  for (const TopicState& s : h.presence) out += " p:" + s.topic + Describe(s.metas);
  for (const StreamPosition& p : h.history) {
    out += " h:" + p.topic + "@" + std::to_string(p.stream) + ":" + std::to_string(p.top);
  }
  out += " restate:" + std::to_string(h.restate);
  return out;
}

std::string Describe(const PresenceChange& c) {
  return "joins" + Describe(c.joins) + " leaves" + Describe(c.leaves);
}

// One message of every type, every field it has set to a recognisable value.
std::vector<Message> Samples() {
  std::vector<Message> all;
  auto add = [&all](Type type) -> Message& {
    all.push_back(Message{});
    all.back().type = type;
    return all.back();
  };
  add(Type::kHello).body = R"({"shard":"2"})";
  add(Type::kWelcome).epoch = 0x0102030405060708;
  add(Type::kReset);
  add(Type::kHeartbeat).epoch = 0xfedcba9876543210;
  add(Type::kSubscribe).topic = "room:a";
  add(Type::kUnsubscribe).topic = "room:b";
  Message& pub = add(Type::kPublish);
  pub.seq = 42;
  pub.flags = kFlagBinary;
  pub.topic = "room:c";
  pub.body = R"([null,null,"room:c","shout",{"m":1}])";
  add(Type::kAck).seq = 0xffffffffffffffff;
  add(Type::kCredit).n = 0xdeadbeef;
  Message& presence = add(Type::kPresence);
  presence.topic = "room:d";
  presence.body = R"({"joins":[],"leaves":[]})";
  Message& deliver = add(Type::kDeliver);
  deliver.origin = 0x1122334455667788;
  deliver.seq = 7;
  deliver.topic = "room:e";
  static const std::string kBinary = "\x02\x06\x05room:ebytes\x00\xff"s;
  deliver.body = kBinary;
  Message& diff = add(Type::kDiff);
  diff.topic = "room:f";
  diff.body = R"({"joins":{},"leaves":{}})";
  Message& snapshot = add(Type::kSnapshot);
  snapshot.topic = "room:g";
  snapshot.body = R"({"alice":{"metas":[{"phx_ref":"x"}]}})";
  add(Type::kMembers).body = R"({"members":["0","1"]})";
  // The stamped forms (kFlagStamped: 8 more header bytes), last so that the
  // indexes above stay put.
  Message& stamped_pub = add(Type::kPublish);
  stamped_pub.seq = 43;
  stamped_pub.flags = kFlagStamped;
  stamped_pub.stamp = 0x1a2b3c4d5e6f7081;
  stamped_pub.topic = "room:c";
  stamped_pub.body = R"([null,null,"room:c","shout",{"m":2}])";
  Message& stamped_deliver = add(Type::kDeliver);
  stamped_deliver.origin = 9;
  stamped_deliver.seq = 8;
  stamped_deliver.flags = kFlagStamped | kFlagBinary;
  stamped_deliver.stamp = 1'800'000'000'123'456'789;
  stamped_deliver.topic = "room:e";
  stamped_deliver.body = kBinary;
  // History (kFlagSequenced: offset and stream after the stamp, if any).
  Message& sequenced_pub = add(Type::kPublish);
  sequenced_pub.seq = 44;
  sequenced_pub.flags = kFlagSequenced | kFlagStamped;
  sequenced_pub.stamp = 5;
  sequenced_pub.topic = "room:h";
  sequenced_pub.body = R"([null,null,"room:h","shout",{}])";
  Message& sequenced = add(Type::kDeliver);
  sequenced.origin = 3;
  sequenced.seq = 44;
  sequenced.flags = kFlagSequenced | kFlagStamped;
  sequenced.stamp = 5;
  sequenced.offset = 0x0102030405060708;
  sequenced.stream = 0xf1f2f3f4f5f6f7f8;
  sequenced.topic = "room:h";
  sequenced.body = R"([null,null,"room:h","shout",{}])";
  Message& unstamped = add(Type::kDeliver);
  unstamped.origin = 3;
  unstamped.seq = 45;
  unstamped.flags = kFlagSequenced;
  unstamped.offset = 2;
  unstamped.stream = 9;
  unstamped.topic = "room:h";
  unstamped.body = R"([null,null,"room:h","shout",{}])";
  Message& restate = add(Type::kRestate);
  restate = sequenced;
  restate.type = Type::kRestate;
  Message& fetch = add(Type::kFetch);
  fetch.id = 77;
  fetch.offset = 12;
  fetch.n = 300;
  fetch.topic = "room:h";
  Message& history = add(Type::kHistory);
  history.id = 77;
  history.stream = 9;
  history.top = 15;
  history.first = 1;
  history.topic = "room:h";
  history.body = "\x05\x00\x00\x00hello"sv;
  Message& empty_history = add(Type::kHistory);
  empty_history.id = 78;
  empty_history.stream = 9;
  empty_history.top = 0;
  empty_history.first = 1;
  empty_history.topic = "room:h";
  add(Type::kPeerHello).body = R"({"node":"b","cluster":"prod","incarnation":"static"})";
  add(Type::kPeerWelcome).body = R"({"node":"a","incarnation":"3f9c"})";
  Message& beat = add(Type::kPeerHeartbeat);
  beat.stamp = 0x0102030405060708;
  beat.echo = 0xf1f2f3f4f5f6f7f8;
  Message& data = add(Type::kPeerData);
  data.seq = 0x1122334455667788;
  data.body = "\x04\x00\x00\x00SB\x01\x04"sv;
  add(Type::kPeerAck).seq = 42;
  add(Type::kPeerInterest).body = R"({"topics":["room:a","room:b"]})";
  Message& peer_presence = add(Type::kPeerPresence);
  peer_presence.topic = "room:a";
  peer_presence.body = R"({"joins":[],"leaves":[]})";
  Message& sequence = add(Type::kPeerSequence);
  sequence.origin = 0x0a0b0c0d0e0f1011;
  sequence.seq = 7;
  sequence.flags = kFlagSequenced | kFlagStamped;
  sequence.stamp = 99;
  sequence.topic = "room:a";
  sequence.body = R"([null,null,"room:a","new_msg",{}])";
  return all;
}

size_t FramesOf(Type type) {
  switch (type) {
    case Type::kWelcome:
    case Type::kReset:
    case Type::kHeartbeat:
    case Type::kAck:
    case Type::kCredit:
    case Type::kPeerHeartbeat:
    case Type::kPeerAck:
      return 1;
    case Type::kPeerData:
    case Type::kPeerInterest:
    case Type::kHello:
    case Type::kSubscribe:
    case Type::kUnsubscribe:
    case Type::kMembers:
    case Type::kFetch:
    case Type::kPeerHello:
    case Type::kPeerWelcome:
      return 2;
    default:
      return 3;
  }
}

size_t HeaderOf(const Message& m) {
  if ((m.type == Type::kDeliver || m.type == Type::kRestate) && (m.flags & kFlagSequenced) != 0) {
    Message plain = m;
    plain.flags &= ~kFlagSequenced;
    return HeaderOf(plain) + 16;
  }
  if ((m.type == Type::kPublish || m.type == Type::kDeliver || m.type == Type::kRestate ||
       m.type == Type::kPeerSequence) &&
      (m.flags & kFlagStamped) != 0) {
    Message plain = m;
    plain.flags &= ~kFlagStamped;
    return HeaderOf(plain) + 8;
  }
  switch (m.type) {
    case Type::kWelcome:
    case Type::kHeartbeat:
    case Type::kAck:
    case Type::kPeerData:
    case Type::kPeerAck:
      return 12;
    case Type::kPublish:
      return 13;
    case Type::kCredit:
      return 8;
    case Type::kDeliver:
    case Type::kRestate:
    case Type::kPeerSequence:
      return 21;
    case Type::kFetch:
      return 24;
    case Type::kHistory:
      return 36;
    case Type::kPeerHeartbeat:
      return 20;
    default:
      return 4;
  }
}

// --- Encode / Decode ---------------------------------------------------------

TEST(MeshCodec, EveryTypeRoundTrips) {
  for (const Message& m : Samples()) {
    SCOPED_TRACE(Describe(m));
    const std::vector<std::string> frames = EncodeFrames(m);
    ASSERT_EQ(frames.size(), FramesOf(m.type));
    EXPECT_EQ(frames[0].size(), HeaderOf(m));
    EXPECT_EQ(frames[0].substr(0, 4), "SB\x01"s + static_cast<char>(m.type));
    const Message back = MustDecode(frames);
    EXPECT_EQ(Describe(back), Describe(m));
  }
}

TEST(MeshCodec, FramesCopyNothingButTheHeader) {
  for (const Message& m : Samples()) {
    SCOPED_TRACE(Describe(m));
    const Frames frames(m);
    const std::span<const std::string_view> v = frames.views();
    ASSERT_EQ(v.size(), FramesOf(m.type));
    if (m.type == Type::kHello || m.type == Type::kMembers || m.type == Type::kPeerHello ||
        m.type == Type::kPeerWelcome || m.type == Type::kPeerData ||
        m.type == Type::kPeerInterest) {
      EXPECT_EQ(v[1].data(), m.body.data());
    } else if (v.size() > 1) {
      EXPECT_EQ(v[1].data(), m.topic.data());
    }
    if (v.size() > 2) {
      EXPECT_EQ(v[2].data(), m.body.data());
    }
  }
}

TEST(MeshCodec, DecodedViewsPointIntoTheFrames) {
  const std::vector<std::string> frames = EncodeFrames(Samples()[6]);  // kPublish
  const std::vector<std::string_view> views = Views(frames);
  Message m;
  ASSERT_TRUE(Decode(views, &m).ok());
  EXPECT_EQ(m.topic.data(), frames[1].data());
  EXPECT_EQ(m.body.data(), frames[2].data());
}

TEST(MeshCodec, HeaderBytesAreLittleEndian) {
  Message m;
  m.type = Type::kDeliver;
  m.origin = 0x0102030405060708;
  m.seq = 0x1112131415161718;
  m.flags = kFlagBinary;
  m.topic = "t";
  m.body = "b";
  EXPECT_EQ(EncodeFrames(m)[0],
            "SB\x01\x0b\x08\x07\x06\x05\x04\x03\x02\x01\x18\x17\x16\x15\x14\x13\x12\x11\x01"s);

  Message credit;
  credit.type = Type::kCredit;
  credit.n = 0x0a0b0c0d;
  EXPECT_EQ(EncodeFrames(credit), std::vector<std::string>{"SB\x01\x09\x0d\x0c\x0b\x0a"s});

  Message publish;
  publish.type = Type::kPublish;
  publish.seq = 1;
  publish.topic = "room:1";
  publish.body = "[]";
  EXPECT_EQ(EncodeFrames(publish),
            (std::vector<std::string>{"SB\x01\x07\x01\0\0\0\0\0\0\0\0"s, "room:1", "[]"}));
}

TEST(MeshCodec, FieldsATypeDoesNotHaveAreNotEncoded) {
  Message m;
  m.type = Type::kReset;
  m.epoch = 5;
  m.seq = 6;
  m.topic = "ignored";
  m.body = "ignored";
  EXPECT_EQ(EncodeFrames(m), std::vector<std::string>{"SB\x01\x03"});
  const Message back = MustDecode(EncodeFrames(m));
  EXPECT_EQ(back.epoch, 0u);
  EXPECT_EQ(back.seq, 0u);
  EXPECT_TRUE(back.topic.empty());
  EXPECT_TRUE(back.body.empty());
}

TEST(MeshCodec, UnknownTypeEncodesToNothing) {
  Message m;
  m.type = static_cast<Type>(0);
  EXPECT_TRUE(Frames(m).views().empty());
  EXPECT_TRUE(Pack(m).empty());
  m.type = static_cast<Type>(27);
  EXPECT_TRUE(Frames(m).views().empty());
}

TEST(MeshCodec, HeaderMalformations) {
  ExpectRefused({}, "no frames");
  ExpectRefused({""}, "header is 0 bytes, want at least 4");
  ExpectRefused({"SB\x01"}, "header is 3 bytes, want at least 4");
  ExpectRefused({"SC\x01\x03"}, "bad magic");
  ExpectRefused({"sb\x01\x03"}, "bad magic");
  ExpectRefused({"SB\x02\x03"}, "version 2, want 1");
  ExpectRefused({"SB\x00\x03"s}, "version 0, want 1");
  ExpectRefused({"SB\x01\x00"s}, "unknown type 0");
  ExpectRefused({"SB\x01\x1b"}, "unknown type 27");
  ExpectRefused({"SB\x01\xff"}, "unknown type 255");
}

TEST(MeshCodec, HeaderOfTheWrongLengthForItsType) {
  for (const Message& m : Samples()) {
    SCOPED_TRACE(Describe(m));
    std::vector<std::string> frames = EncodeFrames(m);
    const std::string header = frames[0];
    const size_t want = header.size();
    if (want > 4) {
      frames[0].pop_back();
      ExpectRefused(frames,
                    "is " + std::to_string(want - 1) + " bytes, want " + std::to_string(want));
    }
    frames[0] = header + "x";
    ExpectRefused(frames,
                  "is " + std::to_string(want + 1) + " bytes, want " + std::to_string(want));
  }
  std::vector<std::string> publish = EncodeFrames(Samples()[6]);
  publish[0].pop_back();
  ExpectRefused(publish, "mesh: header of kPublish is 12 bytes, want 13");
}

TEST(MeshCodec, WrongFrameCount) {
  for (const Message& m : Samples()) {
    SCOPED_TRACE(Describe(m));
    std::vector<std::string> frames = EncodeFrames(m);
    frames.push_back("extra");
    ExpectRefused(frames, std::to_string(frames.size()) + " frames, want " +
                              std::to_string(frames.size() - 1));
    frames.pop_back();
    if (frames.size() > 1) {
      frames.pop_back();
      ExpectRefused(frames, "frames, want");
    }
  }
}

TEST(MeshCodec, TopicBounds) {
  for (Type type : {Type::kSubscribe, Type::kUnsubscribe, Type::kPublish, Type::kPresence,
                    Type::kDeliver, Type::kDiff, Type::kSnapshot}) {
    SCOPED_TRACE(static_cast<int>(type));
    Message m;
    m.type = type;
    m.body = "{}";
    m.topic = "";
    ExpectRefused(EncodeFrames(m), "empty topic");
    const std::string longest(kMaxTopicBytes, 't');
    m.topic = longest;
    EXPECT_EQ(MustDecode(EncodeFrames(m)).topic, longest);
    const std::string too_long(kMaxTopicBytes + 1, 't');
    m.topic = too_long;
    ExpectRefused(EncodeFrames(m), "topic is 1025 bytes, over 1024");
  }
}

TEST(MeshCodec, EmptyBodiesAreRefused) {
  for (Type type :
       {Type::kHello, Type::kPublish, Type::kPresence, Type::kDeliver, Type::kDiff, Type::kSnapshot,
        Type::kMembers, Type::kPeerHello, Type::kPeerWelcome, Type::kPeerData, Type::kPeerInterest,
        Type::kPeerPresence, Type::kPeerSequence}) {
    SCOPED_TRACE(static_cast<int>(type));
    Message m;
    m.type = type;
    m.topic = "room:1";
    ExpectRefused(EncodeFrames(m), "empty body");
  }
}

TEST(MeshCodec, BodyBounds) {
  const std::string largest(kMaxBodyBytes, 'b');
  const std::string too_large(kMaxBodyBytes + 1, 'b');
  for (Type type : {Type::kPublish, Type::kPresence, Type::kDeliver, Type::kDiff, Type::kSnapshot,
                    Type::kMembers}) {
    SCOPED_TRACE(static_cast<int>(type));
    Message m{.type = type, .topic = type == Type::kMembers ? "" : "room:1", .body = largest};
    EXPECT_EQ(MustDecode(EncodeFrames(m)).body.size(), kMaxBodyBytes);
    m.body = too_large;
    ExpectRefused(EncodeFrames(m), "body is " + std::to_string(kMaxBodyBytes + 1) + " bytes, over");
  }
  // A hello or a batch is one frame of its own, bounded as a frame.
  const std::string frame(kMaxFrameBytes, 'b');
  const std::string over(kMaxFrameBytes + 1, 'b');
  for (Type type : {Type::kHello, Type::kBatch}) {
    SCOPED_TRACE(static_cast<int>(type));
    EXPECT_EQ(MustDecode(EncodeFrames({.type = type, .body = frame})).body.size(), kMaxFrameBytes);
    ExpectRefused(EncodeFrames({.type = type, .body = over}), "over");
  }
}

TEST(MeshBatch, AFullBatchWithTheLargestMessageStaysWithinAFrame) {
  // Writers cut a batch once it is full: the message that fills it may be
  // the largest there is.
  BatchWriter almost;
  const std::string small = Pack({.type = Type::kCredit, .n = 1});
  while (almost.bytes() + 4 + small.size() < kBatchBytes) almost.Add(small);
  const std::string body(kMaxBodyBytes, 'b');
  const std::string topic(kMaxTopicBytes, 't');
  const std::string largest = Pack({.type = Type::kDeliver, .topic = topic, .body = body});
  EXPECT_LE(largest.size(), kMaxPackedBytes);
  almost.Add(largest);
  std::vector<std::string_view> frames;
  ASSERT_TRUE(Unpack(almost.Finish(), &frames).ok());
  EXPECT_LE(frames[1].size(), kMaxFrameBytes);
  Message m;
  EXPECT_TRUE(Decode(frames, &m).ok());
}

TEST(MeshCodec, UnknownFlagBitsAreRefused) {
  for (Type type : {Type::kPublish, Type::kDeliver}) {
    Message m;
    m.type = type;
    m.topic = "room:1";
    m.body = "[]";
    m.flags = 0;
    EXPECT_EQ(MustDecode(EncodeFrames(m)).flags, 0);
    for (int bit = 4; bit < 8; ++bit) {
      m.flags = static_cast<uint8_t>(1 << bit | kFlagBinary);
      ExpectRefused(EncodeFrames(m), "unknown flags");
    }
  }
}

TEST(MeshCodec, AStampFollowsTheFlagsOnlyWhenTheFlagSaysSo) {
  Message m;
  m.type = Type::kPublish;
  m.seq = 1;
  m.flags = kFlagStamped;
  m.stamp = 0x0102030405060708;
  m.topic = "room:1";
  m.body = "[]";
  EXPECT_EQ(EncodeFrames(m)[0],
            "SB\x01\x07\x01\0\0\0\0\0\0\0\x02\x08\x07\x06\x05\x04\x03\x02\x01"s);
  EXPECT_EQ(MustDecode(EncodeFrames(m)).stamp, 0x0102030405060708u);
  // The stamp is not written without the flag, and not read without it.
  m.flags = 0;
  EXPECT_EQ(EncodeFrames(m)[0].size(), 13u);
  EXPECT_EQ(MustDecode(EncodeFrames(m)).stamp, 0u);
  // The flag promises 8 more bytes: a header without them is refused, and a
  // stamp without the flag is a header of the wrong length.
  std::vector<std::string> frames = EncodeFrames(m);
  frames[0][12] = kFlagStamped;
  ExpectRefused(frames, "header of kPublish is 13 bytes, want 21");
  m.flags = kFlagStamped;
  frames = EncodeFrames(m);
  frames[0][12] = 0;
  ExpectRefused(frames, "header of kPublish is 21 bytes, want 13");
  // Types without flags never have a stamp.
  Message ack;
  ack.type = Type::kAck;
  ack.stamp = 5;
  EXPECT_EQ(EncodeFrames(ack)[0].size(), 12u);
}

TEST(MeshCodec, AKeyedPublishCarriesItsKeyAsAFourthFrame) {
  Message m;
  m.type = Type::kPublish;
  m.seq = 3;
  m.flags = kFlagKeyed | kFlagStamped;
  m.stamp = 9;
  m.topic = "room:1";
  m.body = "[]";
  m.key = "order-17";
  std::vector<std::string> frames = EncodeFrames(m);
  ASSERT_EQ(frames.size(), 4u);
  EXPECT_EQ(frames[0].size(), 21u);  // the key is a frame, not a header field
  EXPECT_EQ(frames[3], "order-17");
  Message back = MustDecode(frames);
  EXPECT_EQ(back.key, "order-17");
  EXPECT_EQ(back.stamp, 9u);
  EXPECT_EQ(back.flags, kFlagKeyed | kFlagStamped);
  // Packed and unpacked, the same.
  std::vector<std::string_view> unpacked;
  const std::string packed = Pack(m);
  ASSERT_TRUE(Unpack(packed, &unpacked).ok());
  EXPECT_EQ(MustDecode(std::vector<std::string>(unpacked.begin(), unpacked.end())).key, "order-17");
  // Without the flag no key is written, nor read.
  m.flags = 0;
  EXPECT_EQ(EncodeFrames(m).size(), 3u);
  EXPECT_TRUE(MustDecode(EncodeFrames(m)).key.empty());
  // The flag promises the frame: 3 frames are refused, and so are 4 without it.
  frames = EncodeFrames(m);
  frames[0][12] = kFlagKeyed;
  ExpectRefused(frames, "3 frames, want 4");
  m.flags = kFlagKeyed;
  frames = EncodeFrames(m);
  frames[0][12] = 0;
  ExpectRefused(frames, "4 frames, want 3");
  // The key's bounds: 1..kMaxKeyBytes.
  // Message::key is a view: the strings it sees must outlive it.
  const std::string longest(kMaxKeyBytes, 'k');
  const std::string too_long(kMaxKeyBytes + 1, 'k');
  m.key = longest;
  EXPECT_EQ(MustDecode(EncodeFrames(m)).key.size(), kMaxKeyBytes);
  m.key = too_long;
  ExpectRefused(EncodeFrames(m), "key is 201 bytes, want 1 to 200");
  m.key = "";
  ExpectRefused(EncodeFrames(m), "key is 0 bytes, want 1 to 200");
  // Only a publish is keyed: a broker never sends a key on.
  Message deliver;
  deliver.type = Type::kDeliver;
  deliver.flags = kFlagKeyed;
  deliver.topic = "room:1";
  deliver.body = "[]";
  frames = EncodeFrames(deliver);
  EXPECT_EQ(frames.size(), 3u);
  ExpectRefused(frames, "keyed, and not a publish");
  frames.push_back("k");
  ExpectRefused(frames, "keyed, and not a publish");
}

TEST(MeshCodec, HistoryFieldsAreCheckedAndOnlyASequencedDeliverHasAPosition) {
  Message m;
  m.type = Type::kDeliver;
  m.origin = 1;
  m.seq = 2;
  m.flags = kFlagSequenced;
  m.offset = 3;
  m.stream = 4;
  m.topic = "room:1";
  m.body = "[]";
  std::vector<std::string> frames = EncodeFrames(m);
  EXPECT_EQ(frames[0].size(), 37u);
  // Without the flag the header is 16 bytes too long; with it and a short header, too short.
  frames[0][20] = 0;
  ExpectRefused(frames, "want 21");
  m.offset = 0;
  ExpectRefused(EncodeFrames(m), "offset and stream must be nonzero");
  m.offset = 3;
  m.stream = 0;
  ExpectRefused(EncodeFrames(m), "offset and stream must be nonzero");
  // A restate is always sequenced.
  m.stream = 4;
  m.type = Type::kRestate;
  EXPECT_EQ(MustDecode(EncodeFrames(m)).offset, 3u);
  m.flags = 0;
  ExpectRefused(EncodeFrames(m), "not sequenced");
  // A sequenced publish has no position: the broker gives it one.
  m.type = Type::kPublish;
  m.flags = kFlagSequenced;
  EXPECT_EQ(EncodeFrames(m)[0].size(), 13u);
  EXPECT_EQ(MustDecode(EncodeFrames(m)).offset, 0u);
  // A history answer names its stream.
  Message h;
  h.type = Type::kHistory;
  h.id = 1;
  h.topic = "room:1";
  ExpectRefused(EncodeFrames(h), "stream is 0");
  h.stream = 1;
  EXPECT_TRUE(MustDecode(EncodeFrames(h)).body.empty());
}

TEST(MeshCodec, CreditOfZeroIsRefused) {
  Message m;
  m.type = Type::kCredit;
  m.n = 0;
  ExpectRefused(EncodeFrames(m), "kCredit: n is 0");
  m.n = 1;
  EXPECT_EQ(MustDecode(EncodeFrames(m)).n, 1u);
}

// --- Pack / Unpack -----------------------------------------------------------

TEST(MeshPack, Layout) {
  Message m;
  m.type = Type::kSubscribe;
  m.topic = "ab";
  EXPECT_EQ(Pack(m), "\x04\0\0\0SB\x01\x05\x02\0\0\0ab"s);
}

TEST(MeshPack, EveryTypeRoundTrips) {
  for (const Message& m : Samples()) {
    SCOPED_TRACE(Describe(m));
    const std::string packed = Pack(m);
    std::vector<std::string_view> frames;
    ASSERT_TRUE(Unpack(packed, &frames).ok());
    const std::vector<std::string> encoded = EncodeFrames(m);
    ASSERT_EQ(frames.size(), encoded.size());
    for (size_t i = 0; i < frames.size(); ++i) EXPECT_EQ(frames[i], encoded[i]);
    Message back;
    ASSERT_TRUE(Decode(frames, &back).ok());
    EXPECT_EQ(Describe(back), Describe(m));
  }
}

TEST(MeshPack, EveryTruncationIsRefused) {
  for (const Message& m : Samples()) {
    SCOPED_TRACE(Describe(m));
    const std::string packed = Pack(m);
    const size_t frame_count = EncodeFrames(m).size();
    for (size_t n = 0; n < packed.size(); ++n) {
      std::vector<std::string_view> frames;
      const Status s = Unpack(std::string_view(packed).substr(0, n), &frames);
      // Cutting exactly at a frame boundary leaves fewer, whole frames: those
      // unpack, and Decode refuses the count.
      if (s.ok()) {
        ASSERT_LT(frames.size(), frame_count) << n;
        Message back;
        EXPECT_FALSE(Decode(frames, &back).ok()) << n;
      } else {
        EXPECT_EQ(s.code(), Status::Code::kRefused);
      }
    }
  }
}

TEST(MeshPack, UnpackRefusals) {
  std::vector<std::string_view> frames{"stale"};
  Status s = Unpack("", &frames);
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(frames.empty());
  s = Unpack("\x04\0\0"s, &frames);
  EXPECT_NE(s.message().find("length is truncated"), std::string::npos) << s.message();
  s = Unpack("\x05\0\0\0SB\x01\x03"s, &frames);
  EXPECT_NE(s.message().find("is 5 bytes, only 4 left"), std::string::npos) << s.message();
  s = Unpack("\x04\0\0\0SB\x01\x03\x01"s, &frames);
  EXPECT_NE(s.message().find("frame 1: length is truncated"), std::string::npos) << s.message();
  s = Unpack("\xff\xff\xff\xffSB"s, &frames);
  EXPECT_EQ(s.code(), Status::Code::kRefused);
}

TEST(MeshPack, EmptyFramesUnpack) {
  std::vector<std::string_view> frames;
  ASSERT_TRUE(Unpack("\0\0\0\0\0\0\0\0"s, &frames).ok());
  EXPECT_EQ(frames, (std::vector<std::string_view>{"", ""}));
  Message m;
  EXPECT_FALSE(Decode(frames, &m).ok());
}

// --- Hello -------------------------------------------------------------------

Hello SampleHello() {
  Hello h;
  h.shard = "2";
  h.instance = 0x00ab0000ffff0001;
  h.window = 1000;
  h.token = "0123456789abcdef0123456789abcdef";
  h.outbox = 32768;
  h.acked = 0xfffffffffffffffe;
  h.heartbeat_ms = 1000;
  h.members = {"0", "1", "2", "sh\"ard"};
  h.topics = {"room:a", "room:\"quoted\"", "caf\xc3\xa9"};
  h.presence = {
      {"room:a",
       {{"alice", "F1", R"({"phx_ref":"F1","online_at":"1","n":[1,{"x":null}]})"},
        {"bob", "F2", R"({})"}}},
      {"room:b", {}},
  };
  h.history = {{"room:a", 0xfffffffffffffff0, 17}, {"room:h", 1, 0}};
  h.restate = 17;
  return h;
}

TEST(MeshHello, Encoding) {
  Hello h;
  h.shard = "2";
  h.instance = 0x0123456789abcdef;
  h.window = 7;
  h.topics = {"room:a"};
  h.presence = {{"room:a", {{"alice", "r1", R"({"phx_ref":"r1"})"}}}};
  EXPECT_EQ(EncodeHello(h),
            R"({"shard":"2","instance":"0123456789abcdef","window":7,"topics":["room:a"],)"
            R"("presence":[{"topic":"room:a","metas":[{"key":"alice","phx_ref":"r1",)"
            R"("meta":{"phx_ref":"r1"}}]}]})");
}

TEST(MeshHello, RoundTrips) {
  const Hello h = SampleHello();
  Result<Hello> back = DecodeHello(EncodeHello(h));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(Describe(*back), Describe(h));

  Hello empty;
  empty.instance = 1;
  empty.window = 0xffffffff;
  back = DecodeHello(EncodeHello(empty));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(Describe(*back), Describe(empty));
}

TEST(MeshHello, MetaIsNormalisedAndEmptyMetaIsAnObject) {
  Hello h = SampleHello();
  h.presence[0].metas[0].meta_json = " { \"a\" : [ 1 , 2 ] } ";
  h.presence[0].metas[1].meta_json = "";
  Result<Hello> back = DecodeHello(EncodeHello(h));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->presence[0].metas[0].meta_json, R"({"a":[1,2]})");
  EXPECT_EQ(back->presence[0].metas[1].meta_json, "{}");
}

uint64_t Dropped(const Hello& h, HelloDrop why) { return h.dropped[static_cast<size_t>(why)]; }

TEST(MeshHello, AMetaThatIsNotAnObjectIsLeftOutByTheReceiver) {
  for (const char* meta : {"[1]", "\"s\"", "{", "{} {}", "{\"a\":1,}"}) {
    SCOPED_TRACE(meta);
    Hello h = SampleHello();
    h.presence[0].metas[0].meta_json = meta;
    const std::string json = EncodeHello(h);
    Result<Hello> back = DecodeHello(json);
    ASSERT_TRUE(back.ok()) << back.status().message();
    EXPECT_EQ(Dropped(*back, HelloDrop::kMeta), 1u);
    ASSERT_EQ(back->presence[0].metas.size(), 1u);
    EXPECT_EQ(back->presence[0].metas[0].key, "bob");
  }
}

TEST(MeshHello, AHistoryEntryThatIsNotValidIsLeftOut) {
  for (const char* entry :
       {R"({"topic":"room:a","stream":0,"top":1})", R"({"topic":"","stream":1,"top":1})",
        R"({"topic":"room:a","stream":-1,"top":1})", R"({"topic":"room:a","stream":1})",
        R"({"stream":1,"top":1})", R"([])", R"({"topic":"room:a","stream":"1","top":1})"}) {
    SCOPED_TRACE(entry);
    const std::string json = R"({"shard":"2","instance":"0000000000000001","window":7,)"
                             R"("topics":[],"presence":[],"history":[)" +
                             std::string(entry) + R"(,{"topic":"room:b","stream":5,"top":9}]})";
    Result<Hello> back = DecodeHello(json);
    ASSERT_TRUE(back.ok()) << back.status().message();
    EXPECT_EQ(Dropped(*back, HelloDrop::kStream), 1u);
    ASSERT_EQ(back->history.size(), 1u);
    EXPECT_EQ(back->history[0], (StreamPosition{"room:b", 5, 9}));
  }
}

TEST(MeshHello, UnknownFieldsAreIgnored) {
  Result<Hello> h = DecodeHello(
      R"({"v2":{"x":[1]},"shard":"s","instance":"00000000000000ff","window":3,"topics":[],)"
      R"("presence":[{"topic":"t","later":1,"metas":[{"key":"k","phx_ref":"r","meta":{},"z":0}]}]})");
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_EQ(h->instance, 255u);
  EXPECT_EQ(h->window, 3u);
  ASSERT_EQ(h->presence.size(), 1u);
  EXPECT_EQ(Describe(h->presence[0].metas), "[{k|r|{}}]");
}

// A valid hello (of the oldest shape) with one field replaced by
// `field_json`, or added if the base has no such field, or dropped when
// `field_json` is null.
std::string HelloWith(const std::string& name, const char* field_json) {
  const std::pair<std::string, std::string> fields[] = {
      {"shard", R"("2")"},
      {"instance", R"("00000000000000a1")"},
      {"window", "10"},
      {"topics", R"(["room:a"])"},
      {"presence", R"([{"topic":"room:a","metas":[{"key":"k","phx_ref":"r","meta":{}}]}])"},
  };
  std::string out = "{";
  bool found = false;
  for (const auto& [key, value] : fields) {
    const bool replaced = key == name;
    found = found || replaced;
    if (replaced && !field_json) continue;
    if (out.size() > 1) out += ",";
    out += "\"" + key + "\":" + (replaced ? std::string(field_json) : value);
  }
  if (!found && field_json) out += ",\"" + name + "\":" + field_json;
  return out + "}";
}

void ExpectHelloRefused(const std::string& json, const std::string& what) {
  Result<Hello> h = DecodeHello(json);
  ASSERT_FALSE(h.ok()) << json;
  EXPECT_EQ(h.status().code(), Status::Code::kRefused);
  EXPECT_NE(h.status().message().find(what), std::string::npos)
      << json << " -> " << h.status().message();
}

TEST(MeshHello, TheBaseOfTheRefusalCasesIsValid) {
  EXPECT_TRUE(DecodeHello(HelloWith("", nullptr)).ok());
}

TEST(MeshHello, Refusals) {
  ExpectHelloRefused("", "invalid JSON");
  ExpectHelloRefused("{", "invalid JSON");
  ExpectHelloRefused(HelloWith("", nullptr) + " x", "invalid JSON");
  ExpectHelloRefused("[]", "hello: not an object");
  ExpectHelloRefused("{\"shard\":\"\xff\"}", "invalid JSON");
  for (const char* name : {"shard", "instance", "window", "topics", "presence"}) {
    ExpectHelloRefused(HelloWith(name, nullptr), std::string(name) + " is missing");
  }
  ExpectHelloRefused(HelloWith("shard", "2"), "shard is not a string");
  ExpectHelloRefused(HelloWith("instance", "161"), "instance is not a string");
  ExpectHelloRefused(HelloWith("instance", R"("0000000000000000")"), "instance is zero");
  ExpectHelloRefused(HelloWith("instance", R"("00000000000000A1")"), "instance is not 16");
  ExpectHelloRefused(HelloWith("instance", R"("0000000000000a1")"), "instance is not 16");
  ExpectHelloRefused(HelloWith("instance", R"("000000000000000a1")"), "instance is not 16");
  ExpectHelloRefused(HelloWith("instance", R"("000000000000000g")"), "instance is not 16");
  ExpectHelloRefused(HelloWith("window", "0"), "window is not within");
  ExpectHelloRefused(HelloWith("window", "-1"), "window is not within");
  ExpectHelloRefused(HelloWith("window", "4294967296"), "window is not within");
  ExpectHelloRefused(HelloWith("window", "18446744073709551615"), "window is not within");
  ExpectHelloRefused(HelloWith("window", "1.5"), "window is not an integer");
  ExpectHelloRefused(HelloWith("window", R"("10")"), "window is not an integer");
  ExpectHelloRefused(HelloWith("topics", "{}"), "topics is not an array");
  ExpectHelloRefused(HelloWith("presence", "null"), "presence is not an array");
  ExpectHelloRefused(HelloWith("token", "7"), "token is not a string");
  ExpectHelloRefused(HelloWith("token", R"("0123456789abcdef0123456789abcde")"),
                     "token is not 32 lowercase hex digits");
  ExpectHelloRefused(HelloWith("token", R"("0123456789ABCDEF0123456789abcdef")"),
                     "token is not 32 lowercase hex digits");
  ExpectHelloRefused(HelloWith("token", R"("")"), "token is not 32 lowercase hex digits");
  ExpectHelloRefused(HelloWith("outbox", "0"), "outbox is not within 1..4294967295");
  ExpectHelloRefused(HelloWith("outbox", "4294967296"), "outbox is not within");
  ExpectHelloRefused(HelloWith("outbox", "-3"), "outbox is not within");
  ExpectHelloRefused(HelloWith("outbox", "\"9\""), "outbox is not an integer");
  ExpectHelloRefused(HelloWith("acked", "-1"), "acked is not within 0..18446744073709551615");
  ExpectHelloRefused(HelloWith("acked", "1.0"), "acked is not an integer");
  ExpectHelloRefused(HelloWith("heartbeat_ms", "0"), "heartbeat_ms is not within 1..4294967295");
  ExpectHelloRefused(HelloWith("heartbeat_ms", "null"), "heartbeat_ms is not an integer");
}

TEST(MeshHello, TheFieldsAddedWithinVersion1AreOptional) {
  // An older shard's hello: no token, outbox, acked or heartbeat_ms.
  Result<Hello> h = DecodeHello(HelloWith("", nullptr));
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_TRUE(h->token.empty());
  EXPECT_EQ(h->outbox, 0u);
  EXPECT_FALSE(h->acked.has_value());
  EXPECT_EQ(h->heartbeat_ms, 0u);
  h = DecodeHello(HelloWith("acked", "0"));
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_EQ(h->acked, 0u);
  h = DecodeHello(HelloWith("acked", "18446744073709551615"));
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_EQ(h->acked, 18446744073709551615u);
  h = DecodeHello(HelloWith("outbox", "4294967295"));
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_EQ(h->outbox, 4294967295u);
  h = DecodeHello(HelloWith("token", R"("00000000000000000000000000000abc")"));
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_EQ(h->token, "00000000000000000000000000000abc");
}

TEST(MeshHello, IdempotencyKeysRoundTripAndBadOnesAreLeftOut) {
  Hello hello;
  hello.shard = "1";
  hello.instance = 5;
  hello.window = 10;
  hello.idempotency = {{"k1", "room:a", 17, 1200}, {"k\"2", "room:b", 18, 0}};
  const std::string json = EncodeHello(hello);
  EXPECT_NE(json.find(R"("idempotency":[{"key":"k1","topic":"room:a","seq":17,"age_ms":1200},)"),
            std::string::npos)
      << json;
  Result<Hello> back = DecodeHello(json);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->idempotency, hello.idempotency);
  // Absent: none (an older shard).
  hello.idempotency.clear();
  EXPECT_EQ(EncodeHello(hello).find("idempotency"), std::string::npos);
  EXPECT_TRUE(DecodeHello(EncodeHello(hello))->idempotency.empty());

  const std::string good = R"({"key":"ok","topic":"t","seq":1,"age_ms":0})";
  const std::string long_key(kMaxKeyBytes + 1, 'k');
  for (const std::string& bad : std::vector<std::string>{
           "1", R"({"topic":"t","seq":1,"age_ms":0})",
           R"({"key":"","topic":"t","seq":1,"age_ms":0})",
           "{\"key\":\"" + long_key + R"(","topic":"t","seq":1,"age_ms":0})",
           R"({"key":"k","topic":"","seq":1,"age_ms":0})", R"({"key":"k","seq":1,"age_ms":0})",
           R"({"key":"k","topic":"t","seq":0,"age_ms":0})", R"({"key":"k","topic":"t","age_ms":0})",
           R"({"key":"k","topic":"t","seq":1,"age_ms":-1})",
           R"({"key":"k","topic":"t","seq":1,"age_ms":4294967296})",
           R"({"key":"k","topic":"t","seq":1})"}) {
    SCOPED_TRACE(bad.substr(0, 100));
    Result<Hello> h = DecodeHello(HelloWith("idempotency", ("[" + bad + "," + good + "]").c_str()));
    ASSERT_TRUE(h.ok()) << h.status().message();
    EXPECT_EQ(h->dropped[static_cast<size_t>(HelloDrop::kKey)], 1u);
    ASSERT_EQ(h->idempotency.size(), 1u);
    EXPECT_EQ(h->idempotency[0].key, "ok");
  }
  // Not an array: the hello is refused, as for members.
  EXPECT_FALSE(DecodeHello(HelloWith("idempotency", "{}")).ok());
  // Bounded.
  std::string many = "[";
  for (size_t i = 0; i < kMaxHelloKeys + 1; ++i) many += (i ? "," : "") + good;
  many += "]";
  Result<Hello> h = DecodeHello(HelloWith("idempotency", many.c_str()));
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_EQ(h->idempotency.size(), kMaxHelloKeys);
  EXPECT_EQ(h->dropped[static_cast<size_t>(HelloDrop::kOverLimit)], 1u);
}

// A hello whose `name` is `value` decodes, leaving out `dropped` entries for `why`.
void ExpectDropped(const std::string& name, const std::string& value, HelloDrop why,
                   uint64_t dropped = 1) {
  SCOPED_TRACE(value.substr(0, 200));
  Result<Hello> h = DecodeHello(HelloWith(name, value.c_str()));
  ASSERT_TRUE(h.ok()) << h.status().message();
  for (size_t i = 0; i < static_cast<size_t>(HelloDrop::kCount); ++i) {
    EXPECT_EQ(h->dropped[i], i == static_cast<size_t>(why) ? dropped : 0u) << "reason " << i;
  }
}

TEST(MeshHello, ABadEntryIsLeftOutAndCountedNeverTheWholeHello) {
  const std::string long_topic(kMaxTopicBytes + 1, 't');
  for (const std::string& topics : std::vector<std::string>{
           R"(["a",1])", R"(["a",""])", "[\"a\",\"" + long_topic + "\"]", R"(["a",null])"}) {
    ExpectDropped("topics", topics, HelloDrop::kTopic);
    EXPECT_EQ(DecodeHello(HelloWith("topics", topics.c_str()))->topics,
              std::vector<std::string>{"a"});
  }
  const std::string good = R"({"topic":"ok","metas":[{"key":"k","phx_ref":"r","meta":{}}]})";
  for (const std::string& state :
       {std::string("1"), std::string(R"({"metas":[]})"), std::string(R"({"topic":"","metas":[]})"),
        "{\"topic\":\"" + long_topic + "\",\"metas\":[]}", std::string(R"({"topic":"t"})"),
        std::string(R"({"topic":"t","metas":{}})")}) {
    ExpectDropped("presence", "[" + state + "," + good + "]", HelloDrop::kTopic);
    Result<Hello> h = DecodeHello(HelloWith("presence", ("[" + state + "," + good + "]").c_str()));
    ASSERT_EQ(h->presence.size(), 1u);
    EXPECT_EQ(h->presence[0].topic, "ok");
  }
  for (const char* meta :
       {R"([])", R"({"phx_ref":"r","meta":{}})", R"({"key":"","phx_ref":"r","meta":{}})",
        R"({"key":"k","phx_ref":"","meta":{}})", R"({"key":"k","phx_ref":7,"meta":{}})",
        R"({"key":"k","phx_ref":"r"})", R"({"key":"k","phx_ref":"r","meta":[]})"}) {
    const std::string presence = std::string(R"([{"topic":"t","metas":[)") + meta +
                                 R"(,{"key":"k2","phx_ref":"r2","meta":{}}]}])";
    ExpectDropped("presence", presence, HelloDrop::kMeta);
    Result<Hello> h = DecodeHello(HelloWith("presence", presence.c_str()));
    ASSERT_EQ(h->presence[0].metas.size(), 1u);
    EXPECT_EQ(h->presence[0].metas[0].key, "k2");
  }
}

TEST(MeshHello, ListsAreBounded) {
  std::string topics = "[";
  for (size_t i = 0; i < kMaxHelloTopics + 2; ++i) topics += i ? ",\"t\"" : "\"t\"";
  topics += "]";
  ExpectDropped("topics", topics, HelloDrop::kOverLimit, 2);
  EXPECT_EQ(DecodeHello(HelloWith("topics", topics.c_str()))->topics.size(), kMaxHelloTopics);

  // Metas are bounded in all, across topics.
  const std::string meta = R"({"key":"k","phx_ref":"r","meta":{}})";
  std::string metas;
  for (size_t i = 0; i < kMaxHelloMetas / 2 + 1; ++i) metas += (i ? "," : "") + meta;
  const std::string state = R"({"topic":"t","metas":[)" + metas + "]}";
  ExpectDropped("presence", "[" + state + "," + state + "]", HelloDrop::kOverLimit, 2);
}

TEST(MeshHello, DepthIsBounded) {
  auto with_meta_depth = [](int depth) {
    const std::string meta = "{\"d\":" + std::string(depth, '[') + std::string(depth, ']') + "}";
    const std::string presence =
        R"([{"topic":"t","metas":[{"key":"k","phx_ref":"r","meta":)" + meta + "}]}]";
    return HelloWith("presence", presence.c_str());
  };
  // {"d":[..]} nests one level more than its array.
  Result<Hello> h = DecodeHello(with_meta_depth(kMaxMetaDepth - 1));
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_EQ(h->presence[0].metas.size(), 1u);
  h = DecodeHello(with_meta_depth(kMaxMetaDepth));
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_TRUE(h->presence[0].metas.empty());
  EXPECT_EQ(Dropped(*h, HelloDrop::kMeta), 1u);
  // The sender keeps a meta as deep as the receiver takes, and no deeper.
  Hello deepest = SampleHello();
  deepest.presence[0].metas[0].meta_json =
      "{\"d\":" + std::string(kMaxMetaDepth - 1, '[') + std::string(kMaxMetaDepth - 1, ']') + "}";
  h = DecodeHello(EncodeHello(deepest));
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_EQ(Describe(*h), Describe(deepest));
  // Deeper than the parser's bound: no shard sends that (its own decoder
  // bounds what clients send at phx::kMaxJsonDepth).
  ExpectHelloRefused(with_meta_depth(200), "invalid JSON");
  ExpectHelloRefused(std::string(100000, '['), "invalid JSON");
}

TEST(MeshHello, MembersAreOptionalAndBadEntriesAreLeftOut) {
  Result<Hello> h = DecodeHello(HelloWith("members", R"(["0","1"])"));
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_EQ(h->members, (std::vector<std::string>{"0", "1"}));
  EXPECT_TRUE(DecodeHello(HelloWith("", nullptr))->members.empty());
  // An empty list is not written: absent and empty mean the same.
  Hello none = SampleHello();
  none.members.clear();
  EXPECT_EQ(EncodeHello(none).find("members"), std::string::npos);
  const std::string long_name(kMaxShardNameBytes + 1, 'n');
  for (const std::string& members :
       {std::string(R"(["0",1])"), std::string(R"(["0",""])"), "[\"0\",\"" + long_name + "\"]",
        std::string(R"(["0",null])")}) {
    ExpectDropped("members", members, HelloDrop::kMember);
    EXPECT_EQ(DecodeHello(HelloWith("members", members.c_str()))->members,
              std::vector<std::string>{"0"});
  }
  std::string many = "[";
  for (size_t i = 0; i < kMaxMembers + 2; ++i)
    many += (i ? ",\"" : "\"") + std::to_string(i) + "\"";
  many += "]";
  ExpectDropped("members", many, HelloDrop::kOverLimit, 2);
  ExpectHelloRefused(HelloWith("members", R"({"0":1})"), "members is not an array");
}

// --- Members -----------------------------------------------------------------

TEST(MeshMembers, Encoding) {
  EXPECT_EQ(EncodeMembers({"0", "1", "a\"b"}), R"({"members":["0","1","a\"b"]})");
  EXPECT_EQ(EncodeMembers({}), R"({"members":[]})");
}

TEST(MeshMembers, RoundTrips) {
  const std::vector<std::string> names = {"0", "1", "caf\xc3\xa9",
                                          std::string(kMaxShardNameBytes, 'x')};
  Result<std::vector<std::string>> back = DecodeMembers(EncodeMembers(names));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(*back, names);
  std::vector<std::string> most;
  for (size_t i = 0; i < kMaxMembers; ++i) most.push_back(std::to_string(i));
  back = DecodeMembers(EncodeMembers(most));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->size(), kMaxMembers);
}

TEST(MeshMembers, Refusals) {
  auto refused = [](const std::string& json, const std::string& what) {
    Result<std::vector<std::string>> r = DecodeMembers(json);
    ASSERT_FALSE(r.ok()) << json;
    EXPECT_NE(r.status().message().find(what), std::string::npos) << r.status().message();
  };
  refused("", "invalid JSON");
  refused("[]", "not an object");
  refused("{}", "members is missing");
  refused(R"({"members":{}})", "members is not an array");
  refused(R"({"members":["0",1]})", "members[1] is not a name");
  refused(R"({"members":[""]})", "members[0] is not a name");
  refused("{\"members\":[\"" + std::string(kMaxShardNameBytes + 1, 'x') + "\"]}",
          "members[0] is not a name");
  std::vector<std::string> too_many;
  for (size_t i = 0; i <= kMaxMembers; ++i) too_many.push_back("s");
  refused(EncodeMembers(too_many), "more than 1024 names");
}

// --- PeerIntro ---------------------------------------------------------------

TEST(MeshPeerIntro, EncodingAndRoundTrip) {
  const PeerIntro hello{.node = "b", .cluster = "prod", .incarnation = "3f9c"};
  EXPECT_EQ(EncodePeerIntro(hello), R"({"node":"b","cluster":"prod","incarnation":"3f9c"})");
  Result<PeerIntro> back = DecodePeerIntro(EncodePeerIntro(hello));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(*back, hello);
  // A welcome has no cluster.
  const PeerIntro welcome{.node = "a", .cluster = "", .incarnation = "static"};
  EXPECT_EQ(EncodePeerIntro(welcome), R"({"node":"a","incarnation":"static"})");
  back = DecodePeerIntro(EncodePeerIntro(welcome));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(*back, welcome);
  back = DecodePeerIntro(R"({"node":"a","incarnation":"1","later":[1]})");
  ASSERT_TRUE(back.ok()) << "unknown fields are ignored";
}

TEST(MeshPeerIntro, AWelcomeSaysWhetherItsSocketReadsBatches) {
  const PeerIntro welcome{.node = "a", .incarnation = "static", .expected = 7, .batches = true};
  EXPECT_EQ(EncodePeerIntro(welcome),
            R"({"node":"a","incarnation":"static","expected":7,"batches":true})");
  Result<PeerIntro> back = DecodePeerIntro(EncodePeerIntro(welcome));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(*back, welcome);
  // An older broker's welcome has no "batches"; anything but true is no.
  for (const char* json :
       {R"({"node":"a","incarnation":"1"})", R"({"node":"a","incarnation":"1","batches":false})",
        R"({"node":"a","incarnation":"1","batches":1})"}) {
    back = DecodePeerIntro(json);
    ASSERT_TRUE(back.ok()) << json;
    EXPECT_FALSE(back->batches) << json;
  }
}

TEST(MeshPeerIntro, Refusals) {
  auto refused = [](const std::string& json, const std::string& what) {
    Result<PeerIntro> r = DecodePeerIntro(json);
    ASSERT_FALSE(r.ok()) << json;
    EXPECT_NE(r.status().message().find(what), std::string::npos) << r.status().message();
  };
  refused("", "invalid JSON");
  refused("[]", "not an object");
  refused(R"({"incarnation":"1"})", "node is missing");
  refused(R"({"node":"a"})", "incarnation is missing");
  refused(R"({"node":"","incarnation":"1"})", "node is empty");
  refused(R"({"node":1,"incarnation":"1"})", "node is not a string");
  refused(R"({"node":"a","incarnation":"1","cluster":""})", "cluster is empty");
  refused("{\"node\":\"" + std::string(65, 'x') + "\",\"incarnation\":\"1\"}", "node is too long");
  refused(R"({"node":"a","incarnation":"1","stream":0})", "stream is not within");
  refused(R"({"node":"a","incarnation":"1","stream":"7"})", "stream is not an integer");
  refused(R"({"node":"a","incarnation":"1","expected":-1})", "expected is not within");
}

TEST(MeshPeerIntro, StreamAndExpected) {
  // A hello names its stream; a welcome the seq it takes next on it.
  const PeerIntro hello{
      .node = "b", .cluster = "prod", .incarnation = "3f9c", .stream = 18446744073709551615u};
  EXPECT_EQ(EncodePeerIntro(hello),
            R"({"node":"b","cluster":"prod","incarnation":"3f9c","stream":18446744073709551615})");
  Result<PeerIntro> back = DecodePeerIntro(EncodePeerIntro(hello));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(*back, hello);
  const PeerIntro welcome{.node = "a", .cluster = "", .incarnation = "static", .expected = 17};
  EXPECT_EQ(EncodePeerIntro(welcome), R"({"node":"a","incarnation":"static","expected":17})");
  back = DecodePeerIntro(EncodePeerIntro(welcome));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(*back, welcome);
  // An older broker's intro has neither: 0.
  back = DecodePeerIntro(R"({"node":"a","incarnation":"1"})");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->stream, 0u);
  EXPECT_EQ(back->expected, 0u);
}

// --- PeerInterest --------------------------------------------------------------

TEST(MeshPeerInterest, RoundTripAndRefusals) {
  EXPECT_EQ(EncodePeerInterest({"room:a", "room:\"b"}), R"({"topics":["room:a","room:\"b"]})");
  Result<std::vector<std::string>> back = DecodePeerInterest(EncodePeerInterest({"a", "b"}));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(*back, (std::vector<std::string>{"a", "b"}));
  back = DecodePeerInterest(EncodePeerInterest({}));
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->empty());
  auto refused = [](const std::string& json, const std::string& what) {
    Result<std::vector<std::string>> r = DecodePeerInterest(json);
    ASSERT_FALSE(r.ok()) << json;
    EXPECT_NE(r.status().message().find(what), std::string::npos) << r.status().message();
  };
  refused("x", "invalid JSON");
  refused(R"({})", "topics is missing");
  refused(R"({"topics":{}})", "topics is not an array");
  refused(R"({"topics":[""]})", "topics[0] is not a topic");
  refused(R"({"topics":["a",1]})", "topics[1] is not a topic");
  refused("{\"topics\":[\"" + std::string(kMaxTopicBytes + 1, 't') + "\"]}",
          "topics[0] is not a topic");
}

// --- PresenceChange ----------------------------------------------------------

TEST(MeshPresence, Encoding) {
  PresenceChange c;
  c.joins = {{"alice", "r1", R"({"phx_ref":"r1","s":"on"})"}};
  c.leaves = {{"bob", "r0", R"({"ignored":true})"}};
  EXPECT_EQ(EncodePresenceChange(c),
            R"({"joins":[{"key":"alice","phx_ref":"r1","meta":{"phx_ref":"r1","s":"on"}}],)"
            R"("leaves":[{"key":"bob","phx_ref":"r0"}]})");
}

TEST(MeshPresence, RoundTrips) {
  PresenceChange c;
  c.joins = {{"alice", "r1", R"({"phx_ref":"r1","n":-1.5E0})"}, {"k\n\"", "r\\", "{}"}};
  c.leaves = {{"bob", "r0", ""}, {"carol", "r9", ""}};
  Result<PresenceChange> back = DecodePresenceChange(EncodePresenceChange(c));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(Describe(*back), Describe(c));

  back = DecodePresenceChange(EncodePresenceChange({}));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_TRUE(back->joins.empty() && back->leaves.empty());
}

TEST(MeshPresence, ALeaveMayCarryAMetaWhichIsIgnored) {
  Result<PresenceChange> c = DecodePresenceChange(
      R"({"joins":[],"leaves":[{"key":"k","phx_ref":"r","meta":5}],"more":1})");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(Describe(c->leaves), "[{k|r|}]");
}

TEST(MeshPresence, Refusals) {
  auto refused = [](const std::string& json, const std::string& what) {
    Result<PresenceChange> c = DecodePresenceChange(json);
    ASSERT_FALSE(c.ok()) << json;
    EXPECT_EQ(c.status().code(), Status::Code::kRefused);
    EXPECT_NE(c.status().message().find(what), std::string::npos)
        << json << " -> " << c.status().message();
  };
  refused("", "presence: invalid JSON");
  refused("7", "presence: not an object");
  refused(R"({"leaves":[]})", "joins is missing");
  refused(R"({"joins":[]})", "leaves is missing");
  refused(R"({"joins":{},"leaves":[]})", "joins is not an array");
  refused(R"({"joins":[],"leaves":[1]})", "leaves[0] is not an object");
  refused(R"({"joins":[{"key":"k","phx_ref":"r"}],"leaves":[]})", "joins[0].meta is missing");
  refused(R"({"joins":[{"key":"k","phx_ref":"r","meta":null}],"leaves":[]})",
          "joins[0].meta is not an object");
  refused(R"({"joins":[],"leaves":[{"key":"k"}]})", "leaves[0].phx_ref is missing");
  refused(R"({"joins":[],"leaves":[{"key":"","phx_ref":"r"}]})", "leaves[0].key is empty");
  EXPECT_TRUE(DecodePresenceChange(R"({"joins":[{"key":"k","phx_ref":"r","meta":{"a":)" +
                                   std::string(kMaxMetaDepth - 1, '[') +
                                   std::string(kMaxMetaDepth - 1, ']') + R"(}}],"leaves":[]})")
                  .ok());
  refused(R"({"joins":[{"key":"k","phx_ref":"r","meta":{"a":)" + std::string(kMaxMetaDepth, '[') +
              std::string(kMaxMetaDepth, ']') + R"(}}],"leaves":[]})",
          "joins[0].meta is nested deeper than 60");
}

TEST(MeshBatch, MessagesGoInOneFrameAndComeOutInOrder) {
  BatchWriter w;
  Message a{.type = Type::kDeliver, .seq = 1, .origin = 9, .topic = "t", .body = "one"};
  Message b{.type = Type::kCredit, .n = 3};
  w.Add(Pack(a));
  w.Add(Pack(b));
  EXPECT_EQ(w.count(), 2u);
  std::string packed(w.Finish());
  EXPECT_EQ(w.count(), 0u) << "the writer starts over";
  std::vector<std::string_view> frames;
  ASSERT_TRUE(Unpack(packed, &frames).ok());
  Message batch;
  ASSERT_TRUE(Decode(frames, &batch).ok());
  ASSERT_EQ(batch.type, Type::kBatch);
  std::vector<Message> inner;
  std::vector<std::string> keep;  // the inner views die with each call
  ASSERT_TRUE(ForEachInBatch(batch.body, [&](std::span<const std::string_view> f) {
                Message m;
                ASSERT_TRUE(Decode(f, &m).ok());
                keep.emplace_back(m.body);
                inner.push_back(m);
              }).ok());
  ASSERT_EQ(inner.size(), 2u);
  EXPECT_EQ(inner[0].type, Type::kDeliver);
  EXPECT_EQ(inner[0].seq, 1u);
  EXPECT_EQ(keep[0], "one");
  EXPECT_EQ(inner[1].type, Type::kCredit);
  EXPECT_EQ(inner[1].n, 3u);
}

TEST(MeshBatch, AMessageAddedWholeIsTheSameBytesAsItsPackAdded) {
  const Message a{.type = Type::kPeerData, .seq = 7, .body = "packed deliver"};
  const Message b{.type = Type::kDeliver, .seq = 1, .origin = 9, .topic = "t", .body = "one"};
  BatchWriter packed, whole;
  for (const Message* m : {&a, &b}) {
    packed.Add(Pack(*m));
    whole.Add(*m);
  }
  EXPECT_EQ(whole.count(), 2u);
  EXPECT_EQ(std::string(whole.Finish()), std::string(packed.Finish()));
}

TEST(MeshBatch, ATruncatedBatchIsRefusedAfterWhatCameWhole) {
  BatchWriter w;
  w.Add(Pack(Message{.type = Type::kCredit, .n = 1}));
  w.Add(Pack(Message{.type = Type::kCredit, .n = 2}));
  std::string packed(w.Finish());
  std::vector<std::string_view> frames;
  ASSERT_TRUE(Unpack(packed, &frames).ok());
  std::string_view body = frames[1];
  int seen = 0;
  Status s = ForEachInBatch(body.substr(0, body.size() - 1),
                            [&](std::span<const std::string_view>) { ++seen; });
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(seen, 1);
}

}  // namespace
}  // namespace sb::mesh
