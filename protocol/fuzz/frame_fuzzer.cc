// libFuzzer target for the client → server path of a shard: WebSocket frames
// into a server-role MessageParser, every data message into the Phoenix
// decoders.
//
// Input layout (protocol/fuzz/corpus/ follows it):
//   byte 0      low 3 bits: N, how many chunk sizes follow;
//               high 5 bits: S, the message limit (0: 1 MiB, else S * 32 bytes)
//   bytes 1..N  chunk sizes (each byte + 1), used in turn to cut the stream
//   the rest    the byte stream a client sent
//
// Besides "no crash, no sanitizer report" it checks properties: the stream fed
// whole and fed in chunks gives the same events and the same close code;
// every event survives being framed again; every decoded message survives
// being encoded again.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "common/testing/fuzz_check.h"
#include "protocol/phoenix.h"
#include "protocol/websocket.h"

namespace {

using sb::ws::Event;
using sb::ws::MessageParser;
using sb::ws::Opcode;
using sb::ws::Role;

struct Ev {
  Event::Kind kind;
  std::string payload;
  uint16_t code;
  bool operator==(const Ev&) const = default;
};

struct Run {
  std::vector<Ev> events;
  uint16_t code = 0;
};

// Feeds `stream` to a fresh parser in chunks of `sizes` (cycled; empty: one
// chunk), stopping at the first violation as the gateway does.
Run Parse(std::string_view stream, const std::vector<size_t>& sizes, size_t max, Role role) {
  MessageParser parser(role, max);
  std::string buf(stream);  // Feed unmasks in place
  Run run;
  auto collect = [&run](const Event& ev) {
    run.events.push_back(Ev{ev.kind, std::string(ev.payload), ev.close_code});
  };
  size_t at = 0;
  size_t turn = 0;
  do {
    size_t n =
        sizes.empty() ? buf.size() - at : std::min(sizes[turn++ % sizes.size()], buf.size() - at);
    run.code = parser.Feed(buf.data() + at, n, collect);
    at += n;
  } while (run.code == 0 && at < buf.size());
  return run;
}

Opcode OpcodeOf(Event::Kind kind) {
  switch (kind) {
    case Event::Kind::kText:
      return Opcode::kText;
    case Event::Kind::kBinary:
      return Opcode::kBinary;
    case Event::Kind::kPing:
      return Opcode::kPing;
    case Event::Kind::kPong:
      return Opcode::kPong;
    case Event::Kind::kClose:
      return Opcode::kClose;
  }
  std::abort();
}

// An event framed again, by a client and by a server, parses back to itself.
void CheckReframe(const Ev& ev, size_t max) {
  const std::string payload =
      ev.kind == Event::Kind::kClose
          ? (ev.code == sb::ws::close_code::kNoStatus ? std::string()
                                                      : sb::ws::ClosePayload(ev.code, ev.payload))
          : ev.payload;
  std::string client;
  sb::ws::AppendClientFrame(client, OpcodeOf(ev.kind), payload, 0x5a17c0de);
  Run back = Parse(client, {}, max, Role::kServer);
  FUZZ_CHECK(back.code == 0);
  FUZZ_CHECK(back.events.size() == 1 && back.events[0] == ev);
  back = Parse(sb::ws::ServerFrame(OpcodeOf(ev.kind), payload), {}, max, Role::kClient);
  FUZZ_CHECK(back.code == 0);
  FUZZ_CHECK(back.events.size() == 1 && back.events[0] == ev);
}

bool Decodes(std::string_view text, sb::phx::Message* m) {
  sb::phx::DecodeError error;
  return sb::phx::DecodeText(text, m, &error);
}

void CheckText(const std::string& text) {
  sb::phx::Message m;
  sb::phx::DecodeError error;
  if (!sb::phx::DecodeText(text, &m, &error)) {
    FUZZ_CHECK(error.close_code == sb::ws::close_code::kInvalidPayload);
    FUZZ_CHECK(!error.what.empty());
    return;
  }
  FUZZ_CHECK(!m.binary);
  FUZZ_CHECK(sb::ws::IsValidUtf8(m.topic) && sb::ws::IsValidUtf8(m.event));
  FUZZ_CHECK(!m.join_ref || sb::ws::IsValidUtf8(*m.join_ref));
  FUZZ_CHECK(!m.ref || sb::ws::IsValidUtf8(*m.ref));
  FUZZ_CHECK(!m.payload.empty() && text.find(m.payload) != std::string::npos);

  sb::phx::Message again;
  FUZZ_CHECK(Decodes(sb::phx::EncodeBroadcast(m.topic, m.event, m.payload), &again));
  FUZZ_CHECK(!again.join_ref && !again.ref);
  FUZZ_CHECK(again.topic == m.topic && again.event == m.event && again.payload == m.payload);

  FUZZ_CHECK(Decodes(sb::phx::EncodePush(m.join_ref, m.topic, m.event, m.payload), &again));
  FUZZ_CHECK(again.join_ref == m.join_ref && !again.ref && again.payload == m.payload);

  FUZZ_CHECK(Decodes(sb::phx::EncodeReply(m.join_ref, m.ref, m.topic, "ok", m.payload), &again));
  FUZZ_CHECK(again.join_ref == m.join_ref && again.ref == m.ref && again.topic == m.topic);
  FUZZ_CHECK(again.event == "phx_reply");
  FUZZ_CHECK(again.payload == "{\"status\":\"ok\",\"response\":" + m.payload + "}");
}

void AppendU8(std::string& out, size_t n) { out.push_back(static_cast<char>(n)); }

void CheckBinary(const std::string& bytes) {
  sb::phx::Message m;
  sb::phx::DecodeError error;
  if (!sb::phx::DecodeBinary(bytes, &m, &error)) {
    FUZZ_CHECK(error.close_code == sb::ws::close_code::kUnsupportedData ||
               error.close_code == sb::ws::close_code::kInvalidPayload);
    return;
  }
  FUZZ_CHECK(m.binary);
  const std::string jr = m.join_ref.value_or("");
  const std::string ref = m.ref.value_or("");
  FUZZ_CHECK(!m.join_ref || !jr.empty());
  FUZZ_CHECK(!m.ref || !ref.empty());

  // The same push built again, byte for byte.
  std::string push;
  push.push_back(0);
  AppendU8(push, jr.size());
  AppendU8(push, ref.size());
  AppendU8(push, m.topic.size());
  AppendU8(push, m.event.size());
  push += jr + ref + m.topic + m.event + m.payload;
  FUZZ_CHECK(push == bytes);

  // Server encodings of names that came from a binary message always fit.
  FUZZ_CHECK(sb::phx::EncodeBinaryPush(m.join_ref, m.topic, m.event, m.payload).size() ==
             4 + jr.size() + m.topic.size() + m.event.size() + m.payload.size());
  FUZZ_CHECK(sb::phx::EncodeBinaryReply(m.join_ref, m.ref, m.topic, m.event, m.payload).size() ==
             bytes.size());
  FUZZ_CHECK(sb::phx::EncodeBinaryBroadcast(m.topic, m.event, m.payload).size() ==
             3 + m.topic.size() + m.event.size() + m.payload.size());

  // Any UTF-8 name survives JSON escaping.
  sb::phx::Message text;
  FUZZ_CHECK(Decodes(sb::phx::EncodeBroadcast(m.topic, m.event, "{}"), &text));
  FUZZ_CHECK(text.topic == m.topic && text.event == m.event && text.payload == "{}");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t n_sizes = data[0] & 7;
  const size_t limit_sel = data[0] >> 3;
  const size_t max = limit_sel == 0 ? size_t{1} << 20 : limit_sel * 32;
  if (size < 1 + n_sizes) return 0;
  std::vector<size_t> sizes;
  for (size_t i = 0; i < n_sizes; ++i) sizes.push_back(size_t{data[1 + i]} + 1);
  const std::string_view stream(reinterpret_cast<const char*>(data) + 1 + n_sizes,
                                size - 1 - n_sizes);

  const Run whole = Parse(stream, {}, max, Role::kServer);
  const Run chunked =
      Parse(stream, sizes.empty() ? std::vector<size_t>{1} : sizes, max, Role::kServer);
  FUZZ_CHECK(whole.code == chunked.code);
  FUZZ_CHECK(whole.events == chunked.events);

  for (const Ev& ev : whole.events) {
    if (ev.kind == Event::Kind::kText) FUZZ_CHECK(sb::ws::IsValidUtf8(ev.payload));
    if (ev.kind == Event::Kind::kClose) FUZZ_CHECK(sb::ws::IsValidUtf8(ev.payload));
    if (ev.kind != Event::Kind::kText && ev.kind != Event::Kind::kBinary) {
      FUZZ_CHECK(ev.payload.size() <= 125);
    } else {
      FUZZ_CHECK(ev.payload.size() <= max);
    }
    CheckReframe(ev, max);
    // The gateway hands each kind to its decoder; both decoders see every
    // payload here, since neither may trust the frame's kind.
    if (ev.kind == Event::Kind::kText || ev.kind == Event::Kind::kBinary) {
      CheckText(ev.payload);
      CheckBinary(ev.payload);
    }
  }
  return 0;
}
