#include "protocol/websocket.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cstring>

namespace sb::ws {

namespace {

constexpr size_t kMaxControlPayload = 125;

bool IsControl(uint8_t opcode) { return (opcode & 0x8) != 0; }

bool IsKnownOpcode(uint8_t opcode) {
  switch (static_cast<Opcode>(opcode)) {
    case Opcode::kContinuation:
    case Opcode::kText:
    case Opcode::kBinary:
    case Opcode::kClose:
    case Opcode::kPing:
    case Opcode::kPong:
      return true;
  }
  return false;
}

// XORs eight bytes at a time; the mask phase restarts at 0 for every frame
// because only whole frames are unmasked.
void Unmask(char* p, size_t n, const uint8_t mask[4]) {
  uint8_t m8[8];
  for (int i = 0; i < 8; ++i) m8[i] = mask[i & 3];
  uint64_t m;
  std::memcpy(&m, m8, 8);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v;
    std::memcpy(&v, p + i, 8);
    v ^= m;
    std::memcpy(p + i, &v, 8);
  }
  for (; i < n; ++i) p[i] = static_cast<char>(p[i] ^ mask[i & 3]);
}

// Codes a peer may put in a close frame (RFC 6455 §7.4, IANA registry).
// 1004, 1005, 1006 and 1015 are reserved for local use and never sent.
bool IsValidCloseCode(uint16_t code) {
  if (code >= 1000 && code <= 1003) return true;
  if (code >= 1007 && code <= 1014) return true;
  return code >= 3000 && code <= 4999;
}

// Drops a string's heap block: an idle connection must cost no buffer.
void Release(std::string& s) {
  s.clear();
  if (s.capacity() > std::string().capacity()) std::string().swap(s);
}

}  // namespace

struct MessageParser::FrameHeader {
  bool fin = false;
  bool rsv = false;
  uint8_t opcode = 0;
  bool masked = false;
  uint8_t mask[4] = {0, 0, 0, 0};
  uint64_t payload_len = 0;
  size_t header_len = 0;
};

MessageParser::MessageParser(Role role, size_t max_message_bytes)
    : role_(role), max_message_bytes_(max_message_bytes) {}

size_t MessageParser::ReadHeader(const char* p, size_t avail, FrameHeader* h) {
  if (avail < 2) return 0;
  const auto* b = reinterpret_cast<const uint8_t*>(p);
  h->fin = (b[0] & 0x80) != 0;
  h->rsv = (b[0] & 0x70) != 0;
  h->opcode = b[0] & 0x0F;
  h->masked = (b[1] & 0x80) != 0;
  const uint8_t len7 = b[1] & 0x7F;
  size_t n = 2;
  if (len7 == 126) {
    if (avail < n + 2) return 0;
    h->payload_len = (uint64_t{b[2]} << 8) | b[3];
    n += 2;
  } else if (len7 == 127) {
    if (avail < n + 8) return 0;
    uint64_t len = 0;
    for (int i = 0; i < 8; ++i) len = (len << 8) | b[2 + i];
    h->payload_len = len;
    n += 8;
  } else {
    h->payload_len = len7;
  }
  if (h->masked) {
    if (avail < n + 4) return 0;
    std::memcpy(h->mask, b + n, 4);
    n += 4;
  }
  h->header_len = n;
  return n;
}

Status MessageParser::Restore(Leftovers l) {
  if (l.opcode != Opcode::kText && l.opcode != Opcode::kBinary) {
    return Status::Refused("parser leftovers: a message opcode other than text or binary");
  }
  if (l.message.size() > max_message_bytes_ || (!l.in_message && !l.message.empty())) {
    return Status::Refused("parser leftovers: fragments over the limit or without a message");
  }
  // A tail is one frame cut short: its header (at most 14 bytes) and less
  // than what is left of the limit. A control frame's payload is at most 125.
  if (l.tail.size() > 14 + std::max<size_t>(max_message_bytes_ - l.message.size(), 125)) {
    return Status::Refused("parser leftovers: a tail longer than a frame");
  }
  tail_ = std::move(l.tail);
  message_ = std::move(l.message);
  in_message_ = l.in_message;
  message_opcode_ = l.opcode;
  return Status::Ok();
}

bool MessageParser::message_in_progress() const {
  return in_message_ || (!tail_.empty() && !IsControl(static_cast<uint8_t>(tail_[0]) & 0x0F));
}

size_t MessageParser::HeapBytes(const std::string& s) {
  return s.capacity() > std::string().capacity() ? s.capacity() : 0;
}

uint16_t MessageParser::FeedImpl(char* data, size_t size, Callback cb, void* ctx) {
  size_t used = 0;
  if (!tail_.empty()) {
    // Finish the frame started in an earlier call. Its header is at most 14
    // bytes, so completing it byte by byte costs nothing worth optimizing.
    FrameHeader h;
    while (ReadHeader(tail_.data(), tail_.size(), &h) == 0) {
      if (used == size) return 0;
      tail_.push_back(data[used++]);
    }
    if (uint16_t err = CheckHeader(h)) return err;
    const size_t frame_len = h.header_len + static_cast<size_t>(h.payload_len);
    const size_t take = std::min(frame_len - tail_.size(), size - used);
    tail_.append(data + used, take);
    used += take;
    if (tail_.size() < frame_len) return 0;
    uint16_t err = HandleFrame(h, tail_.data() + h.header_len, cb, ctx);
    Release(tail_);
    if (err) return err;
  }
  while (used < size) {
    uint16_t err = 0;
    size_t n = ParseFrame(data + used, size - used, cb, ctx, &err);
    if (err) return err;
    if (n == 0) {
      tail_.assign(data + used, size - used);
      break;
    }
    used += n;
  }
  return 0;
}

size_t MessageParser::ParseFrame(char* p, size_t avail, Callback cb, void* ctx, uint16_t* error) {
  FrameHeader h;
  if (ReadHeader(p, avail, &h) == 0) return 0;
  // Checked before anything is buffered: an oversized or invalid frame costs
  // the peer its connection, not our memory.
  *error = CheckHeader(h);
  if (*error) return 0;
  if (avail - h.header_len < h.payload_len) return 0;
  *error = HandleFrame(h, p + h.header_len, cb, ctx);
  return h.header_len + static_cast<size_t>(h.payload_len);
}

uint16_t MessageParser::CheckHeader(const FrameHeader& h) const {
  // No extension is ever negotiated, so no RSV bit has a meaning.
  if (h.rsv) return close_code::kProtocolError;
  if (!IsKnownOpcode(h.opcode)) return close_code::kProtocolError;
  if (h.masked != (role_ == Role::kServer)) return close_code::kProtocolError;
  if (h.payload_len >> 63) return close_code::kProtocolError;
  if (IsControl(h.opcode)) {
    if (!h.fin || h.payload_len > kMaxControlPayload) return close_code::kProtocolError;
    return 0;
  }
  size_t already = 0;
  if (static_cast<Opcode>(h.opcode) == Opcode::kContinuation) {
    if (!in_message_) return close_code::kProtocolError;
    already = message_.size();
  } else if (in_message_) {
    return close_code::kProtocolError;
  }
  if (h.payload_len > max_message_bytes_ - already) return close_code::kMessageTooBig;
  return 0;
}

uint16_t MessageParser::HandleFrame(const FrameHeader& h, char* payload, Callback cb, void* ctx) {
  const size_t len = static_cast<size_t>(h.payload_len);
  if (h.masked) Unmask(payload, len, h.mask);
  const std::string_view body(payload, len);
  switch (static_cast<Opcode>(h.opcode)) {
    case Opcode::kPing:
      cb(ctx, Event{Event::Kind::kPing, body});
      return 0;
    case Opcode::kPong:
      cb(ctx, Event{Event::Kind::kPong, body});
      return 0;
    case Opcode::kClose: {
      if (len == 0) {
        cb(ctx, Event{Event::Kind::kClose, {}, close_code::kNoStatus});
        return 0;
      }
      if (len == 1) return close_code::kProtocolError;
      const auto* b = reinterpret_cast<const uint8_t*>(payload);
      const uint16_t code = static_cast<uint16_t>((b[0] << 8) | b[1]);
      if (!IsValidCloseCode(code)) return close_code::kProtocolError;
      const std::string_view reason = body.substr(2);
      if (!IsValidUtf8(reason)) return close_code::kInvalidPayload;
      cb(ctx, Event{Event::Kind::kClose, reason, code});
      return 0;
    }
    case Opcode::kText:
    case Opcode::kBinary:
      if (h.fin) return Deliver(static_cast<Opcode>(h.opcode), body, cb, ctx);
      message_.assign(body);
      in_message_ = true;
      message_opcode_ = static_cast<Opcode>(h.opcode);
      return 0;
    case Opcode::kContinuation: {
      message_.append(body);
      if (!h.fin) return 0;
      in_message_ = false;
      uint16_t err = Deliver(message_opcode_, message_, cb, ctx);
      Release(message_);
      return err;
    }
  }
  return close_code::kProtocolError;  // unreachable: CheckHeader rejected it
}

uint16_t MessageParser::Deliver(Opcode op, std::string_view body, Callback cb, void* ctx) {
  if (op == Opcode::kText) {
    if (!IsValidUtf8(body)) return close_code::kInvalidPayload;
    cb(ctx, Event{Event::Kind::kText, body});
  } else {
    cb(ctx, Event{Event::Kind::kBinary, body});
  }
  return 0;
}

void AppendFrameHeader(std::string& out, Opcode op, uint64_t payload_size, bool fin,
                       const uint8_t* mask) {
  char h[14];
  size_t n = 0;
  h[n++] = static_cast<char>((fin ? 0x80 : 0) | static_cast<uint8_t>(op));
  const uint8_t mask_bit = mask ? 0x80 : 0;
  if (payload_size < 126) {
    h[n++] = static_cast<char>(mask_bit | payload_size);
  } else if (payload_size <= 0xFFFF) {
    h[n++] = static_cast<char>(mask_bit | 126);
    h[n++] = static_cast<char>(payload_size >> 8);
    h[n++] = static_cast<char>(payload_size);
  } else {
    h[n++] = static_cast<char>(mask_bit | 127);
    for (int shift = 56; shift >= 0; shift -= 8) h[n++] = static_cast<char>(payload_size >> shift);
  }
  if (mask) {
    std::memcpy(h + n, mask, 4);
    n += 4;
  }
  out.append(h, n);
}

std::string ServerFrame(Opcode op, std::string_view payload) {
  std::string out;
  out.reserve(payload.size() + 10);
  AppendFrameHeader(out, op, payload.size());
  out.append(payload);
  return out;
}

void AppendClientFrame(std::string& out, Opcode op, std::string_view payload, uint32_t mask_key,
                       bool fin) {
  const uint8_t mask[4] = {static_cast<uint8_t>(mask_key >> 24),
                           static_cast<uint8_t>(mask_key >> 16),
                           static_cast<uint8_t>(mask_key >> 8), static_cast<uint8_t>(mask_key)};
  out.reserve(out.size() + payload.size() + 14);
  AppendFrameHeader(out, op, payload.size(), fin, mask);
  const size_t start = out.size();
  out.append(payload);
  Unmask(out.data() + start, payload.size(), mask);
}

std::string ClosePayload(uint16_t code, std::string_view reason) {
  constexpr size_t kMaxReason = kMaxControlPayload - 2;
  if (reason.size() > kMaxReason) {
    size_t cut = kMaxReason;
    // Back up to the start of the code point the limit falls inside.
    while (cut > 0 && (static_cast<uint8_t>(reason[cut]) & 0xC0) == 0x80) --cut;
    reason = reason.substr(0, cut);
  }
  std::string out;
  out.reserve(2 + reason.size());
  out.push_back(static_cast<char>(code >> 8));
  out.push_back(static_cast<char>(code & 0xFF));
  out.append(reason);
  return out;
}

bool IsValidUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    if (p[i] < 0x80) {
      // Text messages are mostly ASCII JSON: skip it eight bytes at a time.
      while (i + 8 <= n) {
        uint64_t v;
        std::memcpy(&v, p + i, 8);
        if (v & 0x8080808080808080ULL) break;
        i += 8;
      }
      while (i < n && p[i] < 0x80) ++i;
      continue;
    }
    // Well-formed sequences, Unicode 15 Table 3-7: the second byte's range
    // excludes overlongs (E0, F0), surrogates (ED) and > U+10FFFF (F4).
    const uint8_t c = p[i];
    auto cont = [&](size_t k, uint8_t lo, uint8_t hi) {
      return i + k < n && p[i + k] >= lo && p[i + k] <= hi;
    };
    if (c >= 0xC2 && c <= 0xDF) {
      if (!cont(1, 0x80, 0xBF)) return false;
      i += 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      const uint8_t lo = c == 0xE0 ? 0xA0 : 0x80;
      const uint8_t hi = c == 0xED ? 0x9F : 0xBF;
      if (!cont(1, lo, hi) || !cont(2, 0x80, 0xBF)) return false;
      i += 3;
    } else if (c >= 0xF0 && c <= 0xF4) {
      const uint8_t lo = c == 0xF0 ? 0x90 : 0x80;
      const uint8_t hi = c == 0xF4 ? 0x8F : 0xBF;
      if (!cont(1, lo, hi) || !cont(2, 0x80, 0xBF) || !cont(3, 0x80, 0xBF)) return false;
      i += 4;
    } else {
      return false;  // continuation byte, C0/C1 (overlong) or F5..FF
    }
  }
  return true;
}

std::string AcceptKey(std::string_view client_key) {
  static constexpr std::string_view kGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  std::string input;
  input.reserve(client_key.size() + kGuid.size());
  input.append(client_key);
  input.append(kGuid);
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(input.data()), input.size(), digest);
  unsigned char encoded[4 * ((SHA_DIGEST_LENGTH + 2) / 3) + 1];
  const int len = EVP_EncodeBlock(encoded, digest, SHA_DIGEST_LENGTH);
  return std::string(reinterpret_cast<const char*>(encoded), static_cast<size_t>(len));
}

}  // namespace sb::ws
