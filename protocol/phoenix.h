// Phoenix Channels v2 serializer: client messages in, server messages out.
//
// Owns: decoding a client's WebSocket message (a JSON text array
// [join_ref, ref, topic, event, payload] or a v2 binary push) into a
// `Message`, and encoding the server's replies, pushes and broadcasts in
// both forms (as phoenix.js 1.8's serializer.js reads and writes them).
// Does not: decide anything about channels, topics or presence (worker/hub),
// or frame WebSocket messages (protocol/websocket).
//
// Payloads are relayed byte for byte: a decoded text message keeps the exact
// source bytes of its payload element (validated as JSON, never
// re-serialized), so numbers keep every digit and a broadcast costs one copy.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sb::phx {

// A client → server message.
struct Message {
  std::optional<std::string> join_ref;  // JSON null → nullopt
  std::optional<std::string> ref;
  std::string topic;
  std::string event;
  // Text messages: the raw JSON text of the payload element, exactly as the
  // client sent it (whitespace inside it included, none around it).
  // Binary messages: the raw payload bytes.
  std::string payload;
  bool binary = false;
};

// Why a message could not be decoded, and the WebSocket close code the
// socket gets for it: 1007 for text that is not a well-formed Phoenix
// message (not JSON, not an array of exactly 5, wrong element types, nesting
// deeper than kMaxJsonDepth), 1003 for a binary message of a kind a client
// may not send or with inconsistent lengths.
struct DecodeError {
  uint16_t close_code = 0;
  std::string what;  // for the log, e.g. "element 3 (topic) is not a string"
};

inline constexpr int kMaxJsonDepth = 64;

// Decodes a text message: an array of exactly five elements. Phoenix's own
// decoder ignores elements after the fifth; here they are refused, so what
// a shard relays is what the protocol defines and nothing rides along
// unchecked. join_ref and ref must be strings or null; topic and event
// strings; the payload any JSON value.
bool DecodeText(std::string_view text, Message* out, DecodeError* error);

// Decodes a binary message; only kind 0 (push) may come from a client.
bool DecodeBinary(std::string_view bytes, Message* out, DecodeError* error);

// --- Encoding (server → client). `*_json` arguments are JSON texts inserted
// as they are. Strings are escaped as JSON requires.

// [join_ref, ref, topic, "phx_reply", {"status": status, "response": response_json}]
std::string EncodeReply(const std::optional<std::string>& join_ref,
                        const std::optional<std::string>& ref, std::string_view topic,
                        std::string_view status, std::string_view response_json);

// [join_ref, null, topic, event, payload_json]: a push to one socket.
std::string EncodePush(const std::optional<std::string>& join_ref, std::string_view topic,
                       std::string_view event, std::string_view payload_json);

// [join_ref, join_ref, topic, event, {}]: phx_close / phx_error for a channel.
std::string EncodeChannelEvent(const std::string& join_ref, std::string_view topic,
                               std::string_view event, std::string_view payload_json = "{}");

// [null, null, topic, event, payload_json]: one broadcast, the same bytes for
// every recipient.
std::string EncodeBroadcast(std::string_view topic, std::string_view event,
                            std::string_view payload_json);

// A history topic's delivery: `broadcast` (EncodeBroadcast's bytes) with
// "<offset>" in its ref slot, [null, "17", topic, event, payload] — what
// phoenix.js hands to channel.on(event, (payload, ref) => ...). Anything
// that does not start as EncodeBroadcast's output (a binary broadcast has
// no ref slot) comes back unchanged.
std::string WithOffsetRef(std::string_view broadcast, uint64_t offset);

// Binary kinds (u8 lengths; every name must be <= 255 bytes, which holds for
// names taken from a decoded binary message). Return "" if a name is longer.
std::string EncodeBinaryPush(const std::optional<std::string>& join_ref, std::string_view topic,
                             std::string_view event, std::string_view payload);
std::string EncodeBinaryReply(const std::optional<std::string>& join_ref,
                              const std::optional<std::string>& ref, std::string_view topic,
                              std::string_view status, std::string_view payload);
std::string EncodeBinaryBroadcast(std::string_view topic, std::string_view event,
                                  std::string_view payload);

// Appends `s` as a JSON string literal (quotes included).
void AppendJsonString(std::string& out, std::string_view s);

}  // namespace sb::phx
