#include "protocol/phoenix.h"

#include <boost/json/basic_parser_impl.hpp>
#include <exception>

#include "protocol/json_scan.h"
#include "protocol/websocket.h"

namespace sb::phx {

namespace {

constexpr uint16_t kInvalidText = ws::close_code::kInvalidPayload;
constexpr uint16_t kUnsupportedBinary = ws::close_code::kUnsupportedData;
constexpr size_t kNameElements = 4;  // join_ref, ref, topic, event
constexpr const char* kElementNames[kNameElements] = {"1 (join_ref)", "2 (ref)", "3 (topic)",
                                                      "4 (event)"};

bool Fail(DecodeError* error, uint16_t code, std::string what) {
  if (error) *error = DecodeError{code, std::move(what)};
  return false;
}

// SAX handler for Boost.JSON's validating parser. It builds no DOM: it notes
// whether the root is an array, how many elements that array has, and the
// type and decoded value of the first four; the payload's bytes are located
// afterwards by FindElement over the then-validated text.
class ShapeHandler {
 public:
  enum class Kind : uint8_t { kString, kNull, kOther };

  static constexpr size_t max_object_size = static_cast<size_t>(-1);
  static constexpr size_t max_array_size = static_cast<size_t>(-1);
  static constexpr size_t max_key_size = static_cast<size_t>(-1);
  static constexpr size_t max_string_size = static_cast<size_t>(-1);

  bool root_is_array = false;
  size_t elements = 0;  // direct children of the root array seen so far
  Kind kinds[kNameElements] = {Kind::kOther, Kind::kOther, Kind::kOther, Kind::kOther};
  std::string strings[kNameElements];

  bool on_document_begin(boost::json::error_code&) { return true; }
  bool on_document_end(boost::json::error_code&) { return true; }
  bool on_array_begin(boost::json::error_code&) {
    if (depth_ == 0) root_is_array = true;
    Value(Kind::kOther);
    ++depth_;
    return true;
  }
  bool on_array_end(size_t, boost::json::error_code&) {
    --depth_;
    return true;
  }
  bool on_object_begin(boost::json::error_code&) {
    Value(Kind::kOther);
    ++depth_;
    return true;
  }
  bool on_object_end(size_t, boost::json::error_code&) {
    --depth_;
    return true;
  }
  bool on_string_part(boost::json::string_view s, size_t, boost::json::error_code&) {
    if (WantString()) strings[elements].append(s.data(), s.size());
    return true;
  }
  bool on_string(boost::json::string_view s, size_t, boost::json::error_code&) {
    if (WantString()) strings[elements].append(s.data(), s.size());
    Value(Kind::kString);
    return true;
  }
  bool on_key_part(boost::json::string_view, size_t, boost::json::error_code&) { return true; }
  bool on_key(boost::json::string_view, size_t, boost::json::error_code&) { return true; }
  bool on_number_part(boost::json::string_view, boost::json::error_code&) { return true; }
  bool on_int64(int64_t, boost::json::string_view, boost::json::error_code&) {
    Value(Kind::kOther);
    return true;
  }
  bool on_uint64(uint64_t, boost::json::string_view, boost::json::error_code&) {
    Value(Kind::kOther);
    return true;
  }
  bool on_double(double, boost::json::string_view, boost::json::error_code&) {
    Value(Kind::kOther);
    return true;
  }
  bool on_bool(bool, boost::json::error_code&) {
    Value(Kind::kOther);
    return true;
  }
  bool on_null(boost::json::error_code&) {
    Value(Kind::kNull);
    return true;
  }
  bool on_comment_part(boost::json::string_view, boost::json::error_code&) { return true; }
  bool on_comment(boost::json::string_view, boost::json::error_code&) { return true; }

 private:
  bool WantString() const { return depth_ == 1 && elements < kNameElements; }
  // A value has started (containers) or ended (scalars) at the current depth.
  void Value(Kind kind) {
    if (depth_ != 1) return;
    if (elements < kNameElements) kinds[elements] = kind;
    ++elements;
  }

  int depth_ = 0;
};

// The scanners run only over text the parser has accepted (json_scan.h).
using json_scan::SkipSpace;
using json_scan::SkipValue;

// The exact source bytes of element `index` of the root array of `t`.
std::string_view FindElement(std::string_view t, size_t index) {
  size_t i = SkipSpace(t, 0) + 1;  // past '['
  for (size_t k = 0; k < index; ++k) {
    i = SkipValue(t, SkipSpace(t, i));
    i = SkipSpace(t, i) + 1;  // past ','
  }
  i = SkipSpace(t, i);
  return t.substr(i, SkipValue(t, i) - i);
}

bool CheckUtf8(std::string_view s, const char* name, DecodeError* error) {
  if (ws::IsValidUtf8(s)) return true;
  return Fail(error, kInvalidText, std::string(name) + " is not valid UTF-8");
}

void AppendNullable(std::string& out, const std::optional<std::string>& s) {
  if (s) {
    AppendJsonString(out, *s);
  } else {
    out.append("null");
  }
}

// Every binary name fits a u8 length.
bool FitsU8(std::string_view s) { return s.size() <= 255; }

void AppendU8(std::string& out, size_t n) { out.push_back(static_cast<char>(n)); }

}  // namespace

bool DecodeText(std::string_view text, Message* out, DecodeError* error) {
  boost::json::parse_options options;
  options.max_depth = kMaxJsonDepth;
  boost::json::basic_parser<ShapeHandler> parser(options);
  boost::json::error_code ec;
  try {
    const size_t n = parser.write_some(false, text.data(), text.size(), ec);
    if (!ec && n < text.size()) return Fail(error, kInvalidText, "invalid JSON: trailing data");
  } catch (const std::exception& e) {
    // Only std::bad_alloc (the parser's nesting stack): not the client's fault.
    return Fail(error, ws::close_code::kInternalError, std::string("decoding failed: ") + e.what());
  }
  if (ec) return Fail(error, kInvalidText, "invalid JSON: " + ec.message());
  ShapeHandler& h = parser.handler();
  if (!h.root_is_array) return Fail(error, kInvalidText, "not a JSON array");
  if (h.elements != 5) {
    return Fail(error, kInvalidText,
                "array has " + std::to_string(h.elements) + " elements, not 5");
  }
  for (size_t k = 0; k < kNameElements; ++k) {
    const bool nullable = k < 2;
    if (h.kinds[k] == ShapeHandler::Kind::kString) continue;
    if (nullable && h.kinds[k] == ShapeHandler::Kind::kNull) continue;
    return Fail(error, kInvalidText,
                std::string("element ") + kElementNames[k] +
                    (nullable ? " is not a string or null" : " is not a string"));
  }
  auto take = [&](size_t k) -> std::optional<std::string> {
    if (h.kinds[k] == ShapeHandler::Kind::kNull) return std::nullopt;
    return std::move(h.strings[k]);
  };
  out->join_ref = take(0);
  out->ref = take(1);
  out->topic = std::move(h.strings[2]);
  out->event = std::move(h.strings[3]);
  out->payload.assign(FindElement(text, 4));
  out->binary = false;
  return true;
}

bool DecodeBinary(std::string_view bytes, Message* out, DecodeError* error) {
  if (bytes.empty()) return Fail(error, kUnsupportedBinary, "empty binary message");
  const auto kind = static_cast<uint8_t>(bytes[0]);
  if (kind != 0) {
    return Fail(error, kUnsupportedBinary,
                "binary kind " + std::to_string(kind) + " may not come from a client");
  }
  constexpr size_t kHeader = 5;  // kind, jr_len, ref_len, topic_len, event_len
  if (bytes.size() < kHeader) return Fail(error, kUnsupportedBinary, "binary header is short");
  size_t lens[4];
  size_t total = kHeader;
  for (size_t k = 0; k < 4; ++k) {
    lens[k] = static_cast<uint8_t>(bytes[1 + k]);
    total += lens[k];
  }
  if (total > bytes.size()) {
    return Fail(error, kUnsupportedBinary, "binary name lengths exceed the message");
  }
  std::string_view names[4];
  size_t at = kHeader;
  for (size_t k = 0; k < 4; ++k) {
    names[k] = bytes.substr(at, lens[k]);
    at += lens[k];
  }
  if (!CheckUtf8(names[0], "join_ref", error) || !CheckUtf8(names[1], "ref", error) ||
      !CheckUtf8(names[2], "topic", error) || !CheckUtf8(names[3], "event", error)) {
    return false;
  }
  auto nullable = [](std::string_view s) -> std::optional<std::string> {
    if (s.empty()) return std::nullopt;
    return std::string(s);
  };
  out->join_ref = nullable(names[0]);
  out->ref = nullable(names[1]);
  out->topic.assign(names[2]);
  out->event.assign(names[3]);
  out->payload.assign(bytes.substr(at));
  out->binary = true;
  return true;
}

std::string EncodeReply(const std::optional<std::string>& join_ref,
                        const std::optional<std::string>& ref, std::string_view topic,
                        std::string_view status, std::string_view response_json) {
  std::string out;
  out.reserve(64 + topic.size() + status.size() + response_json.size());
  out.push_back('[');
  AppendNullable(out, join_ref);
  out.push_back(',');
  AppendNullable(out, ref);
  out.push_back(',');
  AppendJsonString(out, topic);
  out.append(",\"phx_reply\",{\"status\":");
  AppendJsonString(out, status);
  out.append(",\"response\":");
  out.append(response_json);
  out.append("}]");
  return out;
}

std::string EncodePush(const std::optional<std::string>& join_ref, std::string_view topic,
                       std::string_view event, std::string_view payload_json) {
  std::string out;
  out.reserve(32 + topic.size() + event.size() + payload_json.size());
  out.push_back('[');
  AppendNullable(out, join_ref);
  out.append(",null,");
  AppendJsonString(out, topic);
  out.push_back(',');
  AppendJsonString(out, event);
  out.push_back(',');
  out.append(payload_json);
  out.push_back(']');
  return out;
}

std::string EncodeChannelEvent(const std::string& join_ref, std::string_view topic,
                               std::string_view event, std::string_view payload_json) {
  std::string out;
  out.reserve(32 + 2 * join_ref.size() + topic.size() + event.size() + payload_json.size());
  out.push_back('[');
  AppendJsonString(out, join_ref);
  out.push_back(',');
  AppendJsonString(out, join_ref);
  out.push_back(',');
  AppendJsonString(out, topic);
  out.push_back(',');
  AppendJsonString(out, event);
  out.push_back(',');
  out.append(payload_json);
  out.push_back(']');
  return out;
}

std::string EncodeBroadcast(std::string_view topic, std::string_view event,
                            std::string_view payload_json) {
  std::string out;
  out.reserve(32 + topic.size() + event.size() + payload_json.size());
  out.append("[null,null,");
  AppendJsonString(out, topic);
  out.push_back(',');
  AppendJsonString(out, event);
  out.push_back(',');
  out.append(payload_json);
  out.push_back(']');
  return out;
}

std::string WithOffsetRef(std::string_view broadcast, uint64_t offset) {
  constexpr std::string_view kPrefix = "[null,null,";
  if (!broadcast.starts_with(kPrefix)) return std::string(broadcast);
  const std::string number = std::to_string(offset);
  std::string out;
  out.reserve(broadcast.size() + number.size() - 2);
  out.append("[null,\"").append(number).append("\",");
  out.append(broadcast.substr(kPrefix.size()));
  return out;
}

std::string EncodeBinaryPush(const std::optional<std::string>& join_ref, std::string_view topic,
                             std::string_view event, std::string_view payload) {
  const std::string_view jr = join_ref ? std::string_view(*join_ref) : std::string_view();
  if (!FitsU8(jr) || !FitsU8(topic) || !FitsU8(event)) return "";
  std::string out;
  out.reserve(4 + jr.size() + topic.size() + event.size() + payload.size());
  out.push_back(0);
  AppendU8(out, jr.size());
  AppendU8(out, topic.size());
  AppendU8(out, event.size());
  out.append(jr).append(topic).append(event).append(payload);
  return out;
}

std::string EncodeBinaryReply(const std::optional<std::string>& join_ref,
                              const std::optional<std::string>& ref, std::string_view topic,
                              std::string_view status, std::string_view payload) {
  const std::string_view jr = join_ref ? std::string_view(*join_ref) : std::string_view();
  const std::string_view rf = ref ? std::string_view(*ref) : std::string_view();
  if (!FitsU8(jr) || !FitsU8(rf) || !FitsU8(topic) || !FitsU8(status)) return "";
  std::string out;
  out.reserve(5 + jr.size() + rf.size() + topic.size() + status.size() + payload.size());
  out.push_back(1);
  AppendU8(out, jr.size());
  AppendU8(out, rf.size());
  AppendU8(out, topic.size());
  AppendU8(out, status.size());
  out.append(jr).append(rf).append(topic).append(status).append(payload);
  return out;
}

std::string EncodeBinaryBroadcast(std::string_view topic, std::string_view event,
                                  std::string_view payload) {
  if (!FitsU8(topic) || !FitsU8(event)) return "";
  std::string out;
  out.reserve(3 + topic.size() + event.size() + payload.size());
  out.push_back(2);
  AppendU8(out, topic.size());
  AppendU8(out, event.size());
  out.append(topic).append(event).append(payload);
  return out;
}

void AppendJsonString(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  size_t run = 0;  // start of the bytes not yet appended
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<uint8_t>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"':
        out.append("\\\"");
        break;
      case '\\':
        out.append("\\\\");
        break;
      case '\b':
        out.append("\\b");
        break;
      case '\f':
        out.append("\\f");
        break;
      case '\n':
        out.append("\\n");
        break;
      case '\r':
        out.append("\\r");
        break;
      case '\t':
        out.append("\\t");
        break;
      default: {
        const char esc[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xF]};
        out.append(esc, sizeof esc);
      }
    }
  }
  out.append(s.data() + run, s.size() - run);
  out.push_back('"');
}

}  // namespace sb::phx
