#include "broker/membership.h"

#include <boost/json.hpp>
#include <charconv>

namespace sb::broker {

namespace json = boost::json;

namespace {
constexpr std::string_view kZ85Alphabet =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
constexpr size_t kCurvePublicChars = 40;
constexpr size_t kMaxNameChars = 64;
constexpr size_t kMaxIncarnationChars = 64;
constexpr size_t kMaxEndpointChars = 256;

bool NameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

// The string field `key` of `obj`, or nullptr.
const json::string* StringField(const json::object& obj, std::string_view key) {
  const json::value* v = obj.if_contains(key);
  return v == nullptr ? nullptr : v->if_string();
}
}  // namespace

std::string_view MemberEventName(MemberEventKind kind) {
  switch (kind) {
    case MemberEventKind::kJoined:
      return "joined";
    case MemberEventKind::kLeft:
      return "left";
    case MemberEventKind::kChanged:
      return "changed";
  }
  return "unknown";
}

Status ValidateNodeName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameChars) {
    return Status::InvalidConfig("node name '" + std::string(name) + "' must be 1-64 characters");
  }
  for (char c : name) {
    if (!NameChar(c)) {
      return Status::InvalidConfig("node name '" + std::string(name) +
                                   "' may hold only letters, digits, '.', '_' and '-'");
    }
  }
  return Status::Ok();
}

Status ValidateCurvePublic(std::string_view key) {
  if (key.size() != kCurvePublicChars ||
      key.find_first_not_of(kZ85Alphabet) != std::string_view::npos) {
    return Status::InvalidConfig("CURVE public key '" + std::string(key) +
                                 "' is not 40 characters of Z85");
  }
  return Status::Ok();
}

Status ValidatePeerEndpoint(std::string_view endpoint) {
  constexpr std::string_view kScheme = "tcp://";
  auto bad = [&](std::string_view why) {
    return Status::InvalidConfig("peer endpoint '" + std::string(endpoint) +
                                 "': " + std::string(why));
  };
  if (endpoint.size() > kMaxEndpointChars) return bad("longer than 256 characters");
  if (!endpoint.starts_with(kScheme)) return bad("not tcp://HOST:PORT");
  std::string_view rest = endpoint.substr(kScheme.size());
  size_t colon = rest.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return bad("not tcp://HOST:PORT");
  std::string_view port = rest.substr(colon + 1);
  int p = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (ec != std::errc() || end != port.data() + port.size() || p < 1 || p > 65535) {
    return bad("the port is not 1-65535");
  }
  for (char c : rest.substr(0, colon)) {
    if (c <= ' ' || c > '~' || c == '/') return bad("the host holds a space, '/' or a control");
  }
  return Status::Ok();
}

Status ValidateMember(const Member& m) {
  if (Status s = ValidateNodeName(m.name); !s.ok()) return s;
  if (Status s = ValidatePeerEndpoint(m.endpoint); !s.ok()) return s;
  if (Status s = ValidateCurvePublic(m.curve_public); !s.ok()) return s;
  if (m.incarnation.empty() || m.incarnation.size() > kMaxIncarnationChars) {
    return Status::InvalidConfig("incarnation of '" + m.name + "' must be 1-64 characters");
  }
  for (char c : m.incarnation) {
    if (c < '!' || c > '~') {
      return Status::InvalidConfig("incarnation of '" + m.name + "' must be printable ASCII");
    }
  }
  return Status::Ok();
}

std::string FormatMemberRecord(const Member& m) {
  json::object obj;
  obj["broker"] = m.endpoint;
  obj["curve_public"] = m.curve_public;
  obj["incarnation"] = m.incarnation;
  return json::serialize(obj);
}

Result<Member> ParseMemberRecord(std::string_view name, std::string_view value) {
  boost::system::error_code ec;
  json::value v = json::parse(value, ec);
  if (ec) return Status::InvalidConfig("record of '" + std::string(name) + "': " + ec.message());
  const json::object* obj = v.if_object();
  if (obj == nullptr) {
    return Status::InvalidConfig("record of '" + std::string(name) + "' is not an object");
  }
  const json::string* broker = StringField(*obj, "broker");
  const json::string* key = StringField(*obj, "curve_public");
  const json::string* incarnation = StringField(*obj, "incarnation");
  if (broker == nullptr || key == nullptr || incarnation == nullptr) {
    return Status::InvalidConfig("record of '" + std::string(name) +
                                 "' lacks a string broker, curve_public or incarnation");
  }
  Member m{.name = std::string(name),
           .endpoint = std::string(*broker),
           .curve_public = std::string(*key),
           .incarnation = std::string(*incarnation)};
  if (Status s = ValidateMember(m); !s.ok()) return s;
  return m;
}

Result<Member> ParseStaticPeer(std::string_view spec) {
  // Z85 has '=' in its alphabet; names and tcp endpoints do not, so the
  // first two '=' split the three fields and the key keeps any others.
  size_t first = spec.find('=');
  size_t second = first == std::string_view::npos ? first : spec.find('=', first + 1);
  if (second == std::string_view::npos) {
    return Status::InvalidConfig("--peer '" + std::string(spec) + "' is not NAME=ENDPOINT=PUBKEY");
  }
  Member m{.name = std::string(spec.substr(0, first)),
           .endpoint = std::string(spec.substr(first + 1, second - first - 1)),
           .curve_public = std::string(spec.substr(second + 1)),
           .incarnation = "static"};
  if (Status s = ValidateMember(m); !s.ok()) {
    return Status::InvalidConfig("--peer '" + std::string(spec) + "': " + s.message());
  }
  return m;
}

bool Membership::Valid(const Member& m) {
  if (ValidateMember(m).ok()) return true;
  ++bad_records_;
  return false;
}

std::vector<MemberEvent> Membership::ApplySnapshot(std::span<const Member> members) {
  std::map<std::string, const Member*, std::less<>> next;
  for (const Member& m : members) {
    if (m.name == self_ || !Valid(m)) continue;
    next[m.name] = &m;
  }
  std::vector<MemberEvent> events;
  // Both maps are in name order: one merge walk.
  auto old_it = members_.begin();
  auto new_it = next.begin();
  while (old_it != members_.end() || new_it != next.end()) {
    if (new_it == next.end() || (old_it != members_.end() && old_it->first < new_it->first)) {
      events.push_back({MemberEventKind::kLeft, old_it->second});
      ++old_it;
    } else if (old_it == members_.end() || new_it->first < old_it->first) {
      events.push_back({MemberEventKind::kJoined, *new_it->second});
      ++new_it;
    } else {
      if (!(old_it->second == *new_it->second)) {
        events.push_back({MemberEventKind::kChanged, *new_it->second});
      }
      ++old_it;
      ++new_it;
    }
  }
  members_.clear();
  for (const auto& [name, m] : next) members_.emplace(name, *m);
  return events;
}

std::vector<MemberEvent> Membership::ApplySnapshot(std::span<const MemberRecord> records) {
  std::vector<Member> members;
  members.reserve(records.size());
  for (const MemberRecord& r : records) {
    if (r.name == self_) continue;  // never parsed: its value is not ours to judge
    Result<Member> m = ParseMemberRecord(r.name, r.value);
    if (!m.ok()) {
      ++bad_records_;
      continue;
    }
    members.push_back(std::move(m).value());
  }
  return ApplySnapshot(std::span<const Member>(members));
}

std::vector<MemberEvent> Membership::Put(const Member& m) {
  if (m.name == self_ || !Valid(m)) return {};
  auto it = members_.find(m.name);
  if (it == members_.end()) {
    members_.emplace(m.name, m);
    return {{MemberEventKind::kJoined, m}};
  }
  if (it->second == m) return {};
  it->second = m;
  return {{MemberEventKind::kChanged, m}};
}

std::vector<MemberEvent> Membership::Put(const MemberRecord& record) {
  if (record.name == self_) return {};
  Result<Member> m = ParseMemberRecord(record.name, record.value);
  if (!m.ok()) {
    ++bad_records_;
    return {};
  }
  return Put(m.value());
}

std::vector<MemberEvent> Membership::Delete(std::string_view name) {
  auto it = members_.find(name);
  if (it == members_.end()) return {};
  MemberEvent e{MemberEventKind::kLeft, std::move(it->second)};
  members_.erase(it);
  return {std::move(e)};
}

}  // namespace sb::broker
