// WebSocket framing (RFC 6455) for the gateway and for the load client.
//
// Owns: parsing client and server frames incrementally (masking, fragmented
// messages, control frames interleaved, size limits, UTF-8 validation of text
// messages and close reasons, close-code validation), building frames, and
// the handshake's Sec-WebSocket-Accept value. Does not: read or write
// sockets, parse HTTP, or know about Phoenix.
//
// Why not Boost.Beast's websocket::stream: a Beast stream keeps its own read
// buffer and write buffer per connection (kilobytes each, for its whole
// life), while a shard's idle connection must cost well under 4 KiB; and
// encode-once fan-out needs one server frame (header + payload) built once
// and written to many sockets, which Beast's per-stream write path cannot
// share. The gateway still uses Beast for HTTP (the upgrade request). The
// framing here is small, has no I/O, and is unit-tested and fuzzed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "common/status.h"

namespace sb::ws {

enum class Opcode : uint8_t {
  kContinuation = 0x0,
  kText = 0x1,
  kBinary = 0x2,
  kClose = 0x8,
  kPing = 0x9,
  kPong = 0xA,
};

// Close codes used by Switchboard (RFC 6455 §7.4.1 and the IANA registry).
namespace close_code {
inline constexpr uint16_t kNormal = 1000;
inline constexpr uint16_t kGoingAway = 1001;
inline constexpr uint16_t kProtocolError = 1002;
inline constexpr uint16_t kUnsupportedData = 1003;
inline constexpr uint16_t kNoStatus = 1005;  // never sent: "the close frame had no code"
inline constexpr uint16_t kInvalidPayload = 1007;
inline constexpr uint16_t kPolicyViolation = 1008;
inline constexpr uint16_t kMessageTooBig = 1009;
inline constexpr uint16_t kInternalError = 1011;
inline constexpr uint16_t kServiceRestart = 1012;
inline constexpr uint16_t kTryAgainLater = 1013;
}  // namespace close_code

// Which side of the connection the parser is on. A server requires every
// frame to be masked (RFC 6455 §5.1) and a client requires none to be.
enum class Role { kServer, kClient };

// One complete message (text/binary, fragments already joined) or one
// control frame. `payload` points into the parser's or the caller's buffer
// and is valid only during the callback.
struct Event {
  enum class Kind { kText, kBinary, kPing, kPong, kClose };
  Kind kind;
  std::string_view payload;  // kClose: the reason text (after the 2-byte code)
  uint16_t close_code = 0;   // kClose only: the code, or kNoStatus if the frame had none
};

// Incremental frame parser. Between calls it keeps only what it must: the
// unparsed tail of an incomplete frame and the fragments of an unfinished
// message. An idle parser holds no heap memory.
class MessageParser {
 public:
  // `max_message_bytes` bounds one message (all its fragments together).
  MessageParser(Role role, size_t max_message_bytes);

  // Parses `data` (which it may modify in place: unmasking) together with any
  // tail kept from the previous call, calling `on_event(const Event&)` for
  // every complete message or control frame, in order. Returns 0 when all of
  // `data` was consumed or kept, or the close code the peer has earned by a
  // violation (1002 protocol error, 1007 invalid UTF-8, 1009 too big); after a
  // non-zero return the parser must not be fed again. A callback may not feed
  // the same parser.
  template <typename F>
  uint16_t Feed(char* data, size_t size, F&& on_event);

  // Heap bytes held between calls (the tail and unfinished fragments). A
  // string's inline (small-string) buffer is not heap and counts as 0.
  // Never more than 2 × (max_message_bytes + 14): the unfinished fragments
  // are under the limit, the tail is one frame that fits in what is left of
  // it (plus a header of at most 14 bytes), and a string's capacity is
  // under twice its size (it doubles as it grows).
  size_t buffered() const { return HeapBytes(tail_) + HeapBytes(message_); }
  // True while a data message has begun and is not complete: fragments
  // without the final one, or part of a data frame. (A control frame cut
  // between two reads is not a message.) The gateway bounds how long this
  // may last.
  bool message_in_progress() const;

  // What the parser keeps between calls, for a hand-off of the connection to
  // a new process (docs/UPGRADE.md): the next Feed of a parser that restored
  // them goes on as this one's would.
  struct Leftovers {
    std::string tail;     // bytes of an incomplete frame
    std::string message;  // fragments of an unfinished data message
    bool in_message = false;
    Opcode opcode = Opcode::kText;  // of the unfinished message
  };
  Leftovers leftovers() const { return {tail_, message_, in_message_, message_opcode_}; }
  // Refused, changing nothing, when they could not have been left by a
  // parser of this one's limit: fragments over it, or without a message
  // begun; a tail longer than a frame cut within the limit; an opcode other
  // than text or binary.
  Status Restore(Leftovers leftovers);

 private:
  struct FrameHeader;
  // Type-erased callback so the parsing code stays in websocket.cc.
  using Callback = void (*)(void* ctx, const Event& ev);
  uint16_t FeedImpl(char* data, size_t size, Callback cb, void* ctx);
  // Parses one frame at `p` (of `avail` bytes). Returns bytes consumed, 0 if
  // incomplete, or sets *error.
  size_t ParseFrame(char* p, size_t avail, Callback cb, void* ctx, uint16_t* error);
  // Reads a header; returns its length, or 0 while it is incomplete.
  static size_t ReadHeader(const char* p, size_t avail, FrameHeader* h);
  // The close code a header earns given the parser's state, or 0.
  uint16_t CheckHeader(const FrameHeader& h) const;
  // Unmasks a complete frame's payload in place and acts on it.
  uint16_t HandleFrame(const FrameHeader& h, char* payload, Callback cb, void* ctx);
  // Validates (text) and delivers one complete data message.
  static uint16_t Deliver(Opcode op, std::string_view body, Callback cb, void* ctx);
  static size_t HeapBytes(const std::string& s);

  Role role_;
  size_t max_message_bytes_;
  std::string tail_;     // bytes of an incomplete frame
  std::string message_;  // fragments of an unfinished data message
  bool in_message_ = false;
  Opcode message_opcode_ = Opcode::kText;
};

template <typename F>
uint16_t MessageParser::Feed(char* data, size_t size, F&& on_event) {
  using Fn = std::remove_reference_t<F>;
  auto trampoline = [](void* ctx, const Event& ev) { (*static_cast<Fn*>(ctx))(ev); };
  return FeedImpl(data, size, trampoline,
                  const_cast<void*>(static_cast<const volatile void*>(&on_event)));
}

// Appends a frame header for a payload of `payload_size` bytes. A client
// frame passes its 4-byte `mask`; a server frame passes nullptr.
void AppendFrameHeader(std::string& out, Opcode op, uint64_t payload_size, bool fin = true,
                       const uint8_t* mask = nullptr);

// A complete unmasked (server → client) frame.
std::string ServerFrame(Opcode op, std::string_view payload);

// A complete masked (client → server) frame appended to `out`.
void AppendClientFrame(std::string& out, Opcode op, std::string_view payload, uint32_t mask_key,
                       bool fin = true);

// The payload of a close frame: the 2-byte code then the reason (truncated to
// keep the payload within the 125 bytes a control frame allows).
std::string ClosePayload(uint16_t code, std::string_view reason);

// True if `s` is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
bool IsValidUtf8(std::string_view s);

// Sec-WebSocket-Accept for a client's Sec-WebSocket-Key (RFC 6455 §4.2.2).
std::string AcceptKey(std::string_view client_key);

}  // namespace sb::ws
