// ZapPolicy: who may complete a CURVE handshake with a socket — the
// decision half of a ZAP handler (ZeroMQ RFC 27).
//
// Owns: the admitted public keys, each with the member name it stands for,
// and the answer to one ZAP request given as its raw frames: 200 with the
// member's name as user id for an admitted key, 400 for an unknown key or
// another mechanism than CURVE, 500 for a request it cannot read (RFC 27's
// "internal error": the handler could not process it); refusals counted by
// reason. Never throws or aborts on any frames. Does not: own a socket or
// a loop (common/zmq_socket serves the handler's REP socket and asks this
// class), or learn the members (broker flags today, membership later).
// Not thread-safe: its owner serialises Decide, changes and reads.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>

#include "common/status.h"

namespace sb {

// One ZAP reply (RFC 27): version, request id, status code, status text,
// user id, metadata — sent in that order.
struct ZapReply {
  std::string request_id;
  std::string status_code;  // "200", "400" or "500"
  std::string status_text;
  std::string user_id;  // the member's name when admitted
  std::array<std::string_view, 6> Frames() const {
    return {"1.0", request_id, status_code, status_text, user_id, ""};
  }
};

class ZapPolicy {
 public:
  // Why a request was not admitted (the metric's `reason` label: kRefusalNames).
  enum class Refusal { kUnknownKey, kMechanism, kMalformed, kCount };
  static constexpr std::array<std::string_view, static_cast<size_t>(Refusal::kCount)>
      kRefusalNames = {"unknown_key", "mechanism", "malformed"};

  // Admits `public_z85` (a Z85 CURVE public key, common/curve) as member
  // `name`; a key admitted already now stands for `name`. InvalidConfig if
  // the key is not a valid Z85 key or the name is empty.
  Status Admit(std::string_view name, std::string_view public_z85);
  // Stops admitting `public_z85`; false if it was not admitted. Connections
  // already made stay (ZAP is asked at the handshake only).
  bool Remove(std::string_view public_z85);
  size_t size() const { return members_.size(); }

  // The reply to the request `frames` (the REP socket strips the envelope):
  // version "1.0", request id, domain, address, routing id, mechanism, then
  // the mechanism's credentials — for CURVE, the client's 32-byte key.
  ZapReply Decide(std::span<const std::string_view> frames);

  uint64_t admitted() const { return admitted_; }
  uint64_t refused(Refusal r) const { return refused_[static_cast<size_t>(r)]; }

 private:
  ZapReply Refuse(Refusal r, std::string_view request_id, std::string_view text);
  std::map<std::string, std::string, std::less<>> members_;  // raw 32-byte key → name
  uint64_t admitted_ = 0;
  std::array<uint64_t, static_cast<size_t>(Refusal::kCount)> refused_{};
};

}  // namespace sb
