#include "protocol/phoenix.h"

#include <gtest/gtest.h>

#include <string>

namespace sb::phx {
namespace {

using namespace std::string_literals;

Message MustDecode(std::string_view text) {
  Message m;
  DecodeError e;
  EXPECT_TRUE(DecodeText(text, &m, &e)) << text << ": " << e.what;
  return m;
}

DecodeError MustFail(std::string_view text) {
  Message m;
  DecodeError e;
  EXPECT_FALSE(DecodeText(text, &m, &e)) << text;
  EXPECT_EQ(e.close_code, 1007) << text;
  EXPECT_FALSE(e.what.empty()) << text;
  return e;
}

DecodeError MustFailBinary(std::string_view bytes, uint16_t code) {
  Message m;
  DecodeError e;
  EXPECT_FALSE(DecodeBinary(bytes, &m, &e));
  EXPECT_EQ(e.close_code, code) << e.what;
  return e;
}

// Nested arrays `depth` deep, e.g. 2 → [[]].
std::string Nested(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

// --- DecodeText --------------------------------------------------------------

TEST(PhoenixText, JoinFromPhoenixJs) {
  Message m = MustDecode(R"(["6","6","room:1","phx_join",{"p":1}])");
  EXPECT_EQ(m.join_ref, "6");
  EXPECT_EQ(m.ref, "6");
  EXPECT_EQ(m.topic, "room:1");
  EXPECT_EQ(m.event, "phx_join");
  EXPECT_EQ(m.payload, R"({"p":1})");
  EXPECT_FALSE(m.binary);
}

TEST(PhoenixText, HeartbeatHasNullJoinRef) {
  Message m = MustDecode(R"([null,"16","phoenix","heartbeat",{}])");
  EXPECT_EQ(m.join_ref, std::nullopt);
  EXPECT_EQ(m.ref, "16");
  EXPECT_EQ(m.topic, "phoenix");
  EXPECT_EQ(m.event, "heartbeat");
  EXPECT_EQ(m.payload, "{}");
}

TEST(PhoenixText, NullRef) {
  Message m = MustDecode(R"(["6",null,"room:1","ping",{"x":1}])");
  EXPECT_EQ(m.join_ref, "6");
  EXPECT_EQ(m.ref, std::nullopt);
}

TEST(PhoenixText, PayloadBytesAreKeptExactly) {
  Message m = MustDecode(
      "[\"1\",\"2\",\"t\",\"e\",  {\"n\": 1.000000000000000000001,\n"
      "  \"big\": 123456789012345678901234567890} \t]");
  EXPECT_EQ(m.payload,
            "{\"n\": 1.000000000000000000001,\n  \"big\": 123456789012345678901234567890}");
}

TEST(PhoenixText, PayloadMayBeAnyJsonValue) {
  EXPECT_EQ(MustDecode(R"(["1","2","t","e","s"])").payload, R"("s")");
  EXPECT_EQ(MustDecode(R"(["1","2","t","e",-1.5e3])").payload, "-1.5e3");
  EXPECT_EQ(MustDecode(R"(["1","2","t","e",null])").payload, "null");
  EXPECT_EQ(MustDecode(R"(["1","2","t","e",true ])").payload, "true");
  EXPECT_EQ(MustDecode(R"(["1","2","t","e",[1,[2,{}]]])").payload, "[1,[2,{}]]");
  EXPECT_EQ(MustDecode("[\"1\",\"2\",\"t\",\"e\",0\n]").payload, "0");
}

TEST(PhoenixText, PayloadWithBracketsAndQuotesInsideStrings) {
  const std::string payload = R"({"a":"]}\"[{","b":["\\",{"c":"\""}],"d":"\\\""})";
  EXPECT_EQ(MustDecode(R"(["1","2","t","e",)" + payload + "]").payload, payload);
}

TEST(PhoenixText, ElementsBeforeThePayloadMayHoldTrickyStrings) {
  Message m = MustDecode(R"(["a,\"]","b\\",  "t]" , "e[" ,{"k":1}])");
  EXPECT_EQ(m.join_ref, "a,\"]");
  EXPECT_EQ(m.ref, "b\\");
  EXPECT_EQ(m.topic, "t]");
  EXPECT_EQ(m.event, "e[");
  EXPECT_EQ(m.payload, R"({"k":1})");
}

TEST(PhoenixText, MoreThanFiveElementsAreRefused) {
  EXPECT_NE(MustFail(R"(["1","2","t","e",{},"extra"])").what.find("6 elements, not 5"),
            std::string::npos);
  MustFail(R"(["1","2","t","e",{},null])");
  MustFail(R"(["1","2","t","e",{},"extra",[1,2],{"x":null}])");
  const std::string payload = R"({"a":"]}\"[{","b":["\\",{"c":"\""}]})";
  MustFail(R"(["1","2","t","e",)" + payload + R"(,"x"])");
}

TEST(PhoenixText, WhitespaceAroundTheArray) {
  Message m = MustDecode(" \n\t[ \"1\" , \"2\" , \"t\" , \"e\" , { } ] \r\n");
  EXPECT_EQ(m.topic, "t");
  EXPECT_EQ(m.payload, "{ }");
}

TEST(PhoenixText, StringEscapesAreDecoded) {
  Message m = MustDecode(R"(["\u0031","a\nb\t\/","caf\u00e9","\ud83d\ude00",{}])");
  EXPECT_EQ(m.join_ref, "1");
  EXPECT_EQ(m.ref, "a\nb\t/");
  EXPECT_EQ(m.topic, "caf\xc3\xa9");
  EXPECT_EQ(m.event, "\xf0\x9f\x98\x80");
}

TEST(PhoenixText, LongStringsAreDecodedWhole) {
  std::string topic;
  for (int i = 0; i < 2000; ++i) topic += (i % 7 == 0) ? "\\u00e9" : "x";
  Message m = MustDecode(R"(["1","2",")" + topic + R"(","e",{}])");
  std::string want;
  for (int i = 0; i < 2000; ++i) want += (i % 7 == 0) ? "\xc3\xa9" : "x";
  EXPECT_EQ(m.topic, want);
}

TEST(PhoenixText, RawUtf8InStringsPassesThrough) {
  Message m = MustDecode("[\"1\",\"2\",\"r\xc3\xa9sum\xc3\xa9\",\"e\",{\"k\":\"\xe2\x82\xac\"}]");
  EXPECT_EQ(m.topic, "r\xc3\xa9sum\xc3\xa9");
  EXPECT_EQ(m.payload, "{\"k\":\"\xe2\x82\xac\"}");
}

TEST(PhoenixText, NotAnArray) {
  EXPECT_NE(MustFail(R"({"a":1})").what.find("array"), std::string::npos);
  MustFail(R"("x")");
  MustFail("5");
  MustFail("null");
}

TEST(PhoenixText, FewerThanFiveElementsAreRefused) {
  MustFail("[]");
  MustFail(R"(["1","2","t","e"])");
  EXPECT_NE(MustFail(R"(["1",["2","t","e",{}]])").what.find("2 elements"), std::string::npos);
}

TEST(PhoenixText, WrongElementTypes) {
  EXPECT_NE(MustFail(R"([1,"2","t","e",{}])").what.find("element 1 (join_ref)"), std::string::npos);
  EXPECT_NE(MustFail(R"(["1",{},"t","e",{}])").what.find("element 2 (ref)"), std::string::npos);
  EXPECT_NE(MustFail(R"(["1","2",null,"e",{}])").what.find("element 3 (topic) is not a string"),
            std::string::npos);
  EXPECT_NE(MustFail(R"(["1","2","t",7,{}])").what.find("element 4 (event)"), std::string::npos);
  MustFail(R"([["1"],"2","t","e",{}])");
  MustFail(R"([true,"2","t","e",{}])");
  MustFail(R"(["1","2",["t"],"e",{}])");
}

TEST(PhoenixText, InvalidJson) {
  MustFail("");
  MustFail("   ");
  MustFail(R"(["1","2","t","e",{})");
  MustFail(R"(["1","2","t","e",{},])");  // trailing comma
  MustFail(R"(["1","2","t","e",{"a":}])");
  MustFail(R"(["1","2","t","e",{'a':1}])");
  MustFail(R"(["1","2","t","e",/*c*/{}])");  // comments
  MustFail(R"(["1","2","t","e",NaN])");
  MustFail(R"(["1","2","t","e",01])");
  MustFail("[\"1\",\"2\",\"t\x01\",\"e\",{}]");  // raw control character in a string
  MustFail(R"(["1","2","t\x","e",{}])");         // bad escape
}

TEST(PhoenixText, InvalidUtf8InsideStrings) {
  MustFail("[\"1\",\"2\",\"t\xff\",\"e\",{}]");
  MustFail("[\"1\",\"2\",\"t\",\"e\",{\"k\":\"\xc0\xaf\"}]");
  MustFail("[\"1\",\"2\",\"t\",\"e\",{\"k\":\"\xed\xa0\x80\"}]");  // encoded surrogate
}

TEST(PhoenixText, LoneSurrogateEscapes) {
  // Decoded strings are always valid UTF-8: an unpaired \uD800 is refused.
  MustFail(R"(["1","2","\ud800","e",{}])");
  MustFail(R"(["1","2","\udc00x","e",{}])");
  MustFail(R"(["1","2","\ud800\u0041","e",{}])");
}

TEST(PhoenixText, TrailingDataAfterTheArray) {
  EXPECT_NE(MustFail(R"(["1","2","t","e",{}] x)").what.find("trailing"), std::string::npos);
  MustFail(R"(["1","2","t","e",{}][])");
  MustFail(R"(["1","2","t","e",{}],)");
}

TEST(PhoenixText, NestingLimit) {
  // The root array is level 1, so the payload may nest kMaxJsonDepth - 1 deep.
  const std::string ok = R"(["1","2","t","e",)" + Nested(kMaxJsonDepth - 1) + "]";
  EXPECT_EQ(MustDecode(ok).payload, Nested(kMaxJsonDepth - 1));
  MustFail(R"(["1","2","t","e",)" + Nested(kMaxJsonDepth) + "]");
  MustFail(Nested(10000));
  std::string objects = R"(["1","2","t","e",)";
  for (int i = 0; i < kMaxJsonDepth; ++i) objects += R"({"a":)";
  objects += "1" + std::string(kMaxJsonDepth, '}') + "]";
  MustFail(objects);
}

TEST(PhoenixText, NullErrorPointerIsAllowed) {
  Message m;
  DecodeError e;
  EXPECT_FALSE(DecodeText(R"(["1","2","t","e"])", &m, &e));
  EXPECT_TRUE(DecodeText(R"(["1","2","t","e",{}])", &m, nullptr));
  EXPECT_FALSE(DecodeText("x", &m, nullptr));  // a null error pointer is allowed
}

// --- DecodeBinary ------------------------------------------------------------

TEST(PhoenixBinary, PushFromPhoenixJs) {
  // push("bin", Uint8Array[1,2,3]) with join_ref "6", ref "15".
  const std::string bytes =
      "\x00\x01\x02\x06\x03"s + "6" + "15" + "room:1" + "bin" + "\x01\x02\x03";
  Message m;
  DecodeError e;
  ASSERT_TRUE(DecodeBinary(bytes, &m, &e)) << e.what;
  EXPECT_EQ(m.join_ref, "6");
  EXPECT_EQ(m.ref, "15");
  EXPECT_EQ(m.topic, "room:1");
  EXPECT_EQ(m.event, "bin");
  EXPECT_EQ(m.payload, "\x01\x02\x03");
  EXPECT_TRUE(m.binary);
}

TEST(PhoenixBinary, EmptyRefsAreNullAndPayloadMayBeEmpty) {
  const std::string bytes = "\x00\x00\x00\x01\x01"s + "t" + "e";
  Message m;
  ASSERT_TRUE(DecodeBinary(bytes, &m, nullptr));
  EXPECT_EQ(m.join_ref, std::nullopt);
  EXPECT_EQ(m.ref, std::nullopt);
  EXPECT_EQ(m.topic, "t");
  EXPECT_EQ(m.event, "e");
  EXPECT_EQ(m.payload, "");
}

TEST(PhoenixBinary, PayloadIsRawBytes) {
  const std::string payload = "\xff\x00\xfe{not json"s;
  const std::string bytes = "\x00\x01\x01\x01\x01"s + "jrte" + payload;
  Message m;
  ASSERT_TRUE(DecodeBinary(bytes, &m, nullptr));
  EXPECT_EQ(m.payload, payload);
}

TEST(PhoenixBinary, ServerKindsFromAClientAreUnsupported) {
  MustFailBinary("\x01\x00\x00\x01\x01te"s, 1003);
  MustFailBinary("\x02\x01\x01te"s, 1003);
  MustFailBinary("\x07"s, 1003);
  MustFailBinary("\xff\x00\x00\x00\x00"s, 1003);
}

TEST(PhoenixBinary, ShortOrInconsistentFrames) {
  MustFailBinary("", 1003);
  MustFailBinary("\x00"s, 1003);
  MustFailBinary("\x00\x01\x02\x06"s, 1003);
  MustFailBinary("\x00\x01\x02\x06\x03"s + "6" + "15" + "room:1" + "bi", 1003);
  MustFailBinary("\x00\xff\xff\xff\xff"s + std::string(1000, 'x'), 1003);
  // Exactly the names and nothing else is fine.
  Message m;
  EXPECT_TRUE(DecodeBinary("\x00\x01\x02\x06\x03"s + "6" + "15" + "room:1" + "bin", &m, nullptr));
}

TEST(PhoenixBinary, NamesMustBeUtf8) {
  EXPECT_NE(MustFailBinary("\x00\x01\x00\x01\x01"s + "\xff" + "te", 1007).what.find("join_ref"),
            std::string::npos);
  MustFailBinary("\x00\x00\x01\x01\x01"s + "\xc3" + "te", 1007);
  EXPECT_NE(MustFailBinary("\x00\x00\x00\x01\x01"s + "\x80" + "e", 1007).what.find("topic"),
            std::string::npos);
  MustFailBinary("\x00\x00\x00\x01\x02"s + "t" + "\xed\xa0", 1007);
  Message m;
  EXPECT_TRUE(DecodeBinary("\x00\x00\x00\x05\x01"s + "caf\xc3\xa9" + "e", &m, nullptr));
  EXPECT_EQ(m.topic, "caf\xc3\xa9");
}

// --- Encoding ----------------------------------------------------------------

TEST(PhoenixEncode, Replies) {
  EXPECT_EQ(EncodeReply("6", "13", "room:1", "ok", R"({"x":1})"),
            R"(["6","13","room:1","phx_reply",{"status":"ok","response":{"x":1}}])");
  EXPECT_EQ(EncodeReply(std::nullopt, "16", "phoenix", "ok", "{}"),
            R"([null,"16","phoenix","phx_reply",{"status":"ok","response":{}}])");
  EXPECT_EQ(
      EncodeReply("6", "6", "room:1", "error", R"({"reason":"unauthorized"})"),
      R"(["6","6","room:1","phx_reply",{"status":"error","response":{"reason":"unauthorized"}}])");
  EXPECT_EQ(EncodeReply(std::nullopt, std::nullopt, "t", "ok", "{}"),
            R"([null,null,"t","phx_reply",{"status":"ok","response":{}}])");
}

TEST(PhoenixEncode, PushBroadcastAndChannelEvents) {
  EXPECT_EQ(EncodePush("12", "pres:1", "presence_state", R"({"u1":{"metas":[]}})"),
            R"(["12",null,"pres:1","presence_state",{"u1":{"metas":[]}}])");
  EXPECT_EQ(EncodePush(std::nullopt, "t", "e", "{}"), R"([null,null,"t","e",{}])");
  EXPECT_EQ(EncodeBroadcast("room:1", "shout", R"({"m":"hi"})"),
            R"([null,null,"room:1","shout",{"m":"hi"}])");
  EXPECT_EQ(EncodeChannelEvent("6", "room:1", "phx_close"), R"(["6","6","room:1","phx_close",{}])");
  EXPECT_EQ(EncodeChannelEvent("6", "room:1", "phx_error", R"({"reason":"channel_crash"})"),
            R"(["6","6","room:1","phx_error",{"reason":"channel_crash"}])");
}

TEST(PhoenixEncode, NamesAreEscaped) {
  EXPECT_EQ(EncodeBroadcast("a\"b", "c\\d", "1"), R"([null,null,"a\"b","c\\d",1])");
}

TEST(PhoenixEncode, EncodedTextDecodesBack) {
  const std::string payload = "{\"n\": 1.000000000000000000001, \"s\": \"\\u00e9\"}";
  Message m = MustDecode(EncodeBroadcast("room:\n1", "caf\xc3\xa9", payload));
  EXPECT_EQ(m.join_ref, std::nullopt);
  EXPECT_EQ(m.ref, std::nullopt);
  EXPECT_EQ(m.topic, "room:\n1");
  EXPECT_EQ(m.event, "caf\xc3\xa9");
  EXPECT_EQ(m.payload, payload);
  m = MustDecode(EncodeReply("6", "7", "t", "ok", "{}"));
  EXPECT_EQ(m.join_ref, "6");
  EXPECT_EQ(m.ref, "7");
  EXPECT_EQ(m.event, "phx_reply");
  EXPECT_EQ(m.payload, R"({"status":"ok","response":{}})");
}

TEST(PhoenixEncode, BinaryPushHasNoRef) {
  EXPECT_EQ(EncodeBinaryPush("6", "room:1", "bin", "\x01\x02\x03"),
            "\x00\x01\x06\x03"s + "6" + "room:1" + "bin" + "\x01\x02\x03");
  EXPECT_EQ(EncodeBinaryPush(std::nullopt, "t", "e", ""), "\x00\x00\x01\x01te"s);
}

TEST(PhoenixEncode, BinaryReply) {
  EXPECT_EQ(EncodeBinaryReply("6", "15", "room:1", "ok", "\xff"s),
            "\x01\x01\x02\x06\x02"s + "6" + "15" + "room:1" + "ok" + "\xff");
  EXPECT_EQ(EncodeBinaryReply(std::nullopt, std::nullopt, "t", "error", ""),
            "\x01\x00\x00\x01\x05"s + "t" + "error");
}

TEST(PhoenixEncode, BinaryBroadcast) {
  EXPECT_EQ(EncodeBinaryBroadcast("room:1", "shout", "\x00\x01"s),
            "\x02\x06\x05"s + "room:1" + "shout" + "\x00\x01"s);
}

TEST(PhoenixEncode, BinaryNamesOver255BytesGiveEmpty) {
  const std::string n255(255, 'n');
  const std::string n256(256, 'n');
  EXPECT_EQ(EncodeBinaryBroadcast(n255, "e", "").size(), 3u + 255u + 1u);
  EXPECT_EQ(EncodeBinaryBroadcast(n256, "e", ""), "");
  EXPECT_EQ(EncodeBinaryBroadcast("t", n256, ""), "");
  EXPECT_EQ(EncodeBinaryPush(n256, "t", "e", ""), "");
  EXPECT_EQ(EncodeBinaryPush("j", "t", n256, ""), "");
  EXPECT_EQ(EncodeBinaryReply("j", n256, "t", "ok", ""), "");
  EXPECT_EQ(EncodeBinaryReply("j", "r", "t", n256, ""), "");
}

TEST(PhoenixEncode, JsonStringEscaping) {
  auto quote = [](std::string_view s) {
    std::string out = "prefix:";
    AppendJsonString(out, s);
    return out;
  };
  EXPECT_EQ(quote(""), R"(prefix:"")");
  EXPECT_EQ(quote("plain"), R"(prefix:"plain")");
  EXPECT_EQ(quote("a\"b\\c/d"), R"(prefix:"a\"b\\c/d")");
  EXPECT_EQ(quote("\b\f\n\r\t"), R"(prefix:"\b\f\n\r\t")");
  EXPECT_EQ(quote("\x01\x1f"s + '\0'), R"(prefix:"\u0001\u001f\u0000")");
  EXPECT_EQ(quote("\x7f caf\xc3\xa9 \xf0\x9f\x98\x80"),
            "prefix:\"\x7f caf\xc3\xa9 \xf0\x9f\x98\x80\"");
}

TEST(PhoenixEncode, EveryAsciiCharacterRoundTrips) {
  std::string all;
  for (int c = 0; c < 128; ++c) all.push_back(static_cast<char>(c));
  Message m = MustDecode(EncodeBroadcast(all, all + all, "{}"));
  EXPECT_EQ(m.topic, all);
  EXPECT_EQ(m.event, all + all);
}

}  // namespace
}  // namespace sb::phx

namespace sb::phx {
namespace {

TEST(PhoenixHistory, TheOffsetGoesInTheRefSlotAndNothingElseChanges) {
  const std::string b = EncodeBroadcast("room:1", "shout", R"({"a":[1,2]})");
  EXPECT_EQ(WithOffsetRef(b, 17), R"([null,"17","room:1","shout",{"a":[1,2]}])");
  EXPECT_EQ(WithOffsetRef(b, 18446744073709551615u),
            R"([null,"18446744073709551615","room:1","shout",{"a":[1,2]}])");
  Message m;
  DecodeError err;
  ASSERT_TRUE(DecodeText(WithOffsetRef(b, 5), &m, &err)) << err.what;
  EXPECT_EQ(m.ref, "5");
  EXPECT_EQ(m.payload, R"({"a":[1,2]})");
  // A binary broadcast has no ref slot.
  const std::string bin = EncodeBinaryBroadcast("room:1", "shout", "\x01\x02");
  EXPECT_EQ(WithOffsetRef(bin, 5), bin);
}

}  // namespace
}  // namespace sb::phx
