#include "common/zap_policy.h"

#include "common/curve.h"

namespace sb {

namespace {
// RFC 27's request frames, after the envelope.
enum Frame : size_t { kVersion, kRequestId, kDomain, kAddress, kIdentity, kMechanism, kFirstCred };
}  // namespace

Status ZapPolicy::Admit(std::string_view name, std::string_view public_z85) {
  if (name.empty()) return Status::InvalidConfig("a member needs a name");
  Result<std::string> raw = curve::Decode(public_z85);
  if (!raw.ok()) {
    return Status::InvalidConfig("member " + std::string(name) + ": " + raw.status().message());
  }
  members_[std::move(raw).value()] = std::string(name);
  return Status::Ok();
}

bool ZapPolicy::Remove(std::string_view public_z85) {
  Result<std::string> raw = curve::Decode(public_z85);
  return raw.ok() && members_.erase(*raw) > 0;
}

ZapReply ZapPolicy::Decide(std::span<const std::string_view> frames) {
  // The request id is echoed whatever else is wrong: libzmq matches the
  // reply to its request by it and fails that handshake alone.
  const std::string_view id = frames.size() > kRequestId ? frames[kRequestId] : std::string_view();
  if (frames.size() <= kMechanism || frames[kVersion] != "1.0") {
    return Refuse(Refusal::kMalformed, id, "malformed request");
  }
  if (frames[kMechanism] != "CURVE") {
    return Refuse(Refusal::kMechanism, id, "CURVE only");
  }
  if (frames.size() != kFirstCred + 1 || frames[kFirstCred].size() != curve::kKeyBytes) {
    return Refuse(Refusal::kMalformed, id, "malformed CURVE credentials");
  }
  auto it = members_.find(frames[kFirstCred]);
  if (it == members_.end()) return Refuse(Refusal::kUnknownKey, id, "unknown key");
  ++admitted_;
  return {.request_id = std::string(id),
          .status_code = "200",
          .status_text = "OK",
          .user_id = it->second};
}

ZapReply ZapPolicy::Refuse(Refusal r, std::string_view request_id, std::string_view text) {
  ++refused_[static_cast<size_t>(r)];
  return {.request_id = std::string(request_id),
          .status_code = r == Refusal::kMalformed ? "500" : "400",
          .status_text = std::string(text),
          .user_id = {}};
}

}  // namespace sb
