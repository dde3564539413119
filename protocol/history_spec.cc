#include "protocol/history_spec.h"

#include <charconv>

namespace sb::history {

namespace {

Status Bad(std::string_view text, const std::string& why) {
  return Status::InvalidConfig("--history '" + std::string(text) + "': " + why +
                               " (want PATTERN=SIZE/TTL, e.g. 'room:*=1000/10m')");
}

bool ParseUnsigned(std::string_view s, uint64_t* out) {
  if (s.empty()) return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && end == s.data() + s.size();
}

}  // namespace

Result<Rule> ParseRule(std::string_view text) {
  const size_t eq = text.rfind('=');
  if (eq == std::string_view::npos) return Bad(text, "no '='");
  Rule rule;
  rule.pattern = std::string(text.substr(0, eq));
  if (rule.pattern.empty()) return Bad(text, "empty pattern");
  const std::string_view rest = text.substr(eq + 1);
  const size_t slash = rest.find('/');
  if (slash == std::string_view::npos) return Bad(text, "no '/' between SIZE and TTL");
  uint64_t size = 0;
  if (!ParseUnsigned(rest.substr(0, slash), &size) || size == 0 || size > kMaxSize) {
    return Bad(text, "SIZE must be 1 to " + std::to_string(kMaxSize));
  }
  rule.size = static_cast<uint32_t>(size);
  std::string_view ttl = rest.substr(slash + 1);
  int64_t unit = 0;
  if (ttl.ends_with("ms")) {
    unit = 1;
    ttl.remove_suffix(2);
  } else if (ttl.ends_with('s')) {
    unit = 1000;
    ttl.remove_suffix(1);
  } else if (ttl.ends_with('m')) {
    unit = 60'000;
    ttl.remove_suffix(1);
  } else if (ttl.ends_with('h')) {
    unit = 3'600'000;
    ttl.remove_suffix(1);
  } else {
    return Bad(text, "TTL needs a unit: ms, s, m or h");
  }
  uint64_t n = 0;
  if (!ParseUnsigned(ttl, &n) || n == 0 || n > static_cast<uint64_t>(kMaxTtlMs / unit)) {
    return Bad(text, "TTL must be 1 ms to 7 days");
  }
  rule.ttl_ms = static_cast<int64_t>(n) * unit;
  return rule;
}

Result<Rules> Rules::Parse(const std::vector<std::string>& texts) {
  std::vector<Rule> rules;
  for (const std::string& t : texts) {
    Result<Rule> r = ParseRule(t);
    if (!r.ok()) return r.status();
    rules.push_back(std::move(*r));
  }
  return Rules(std::move(rules));
}

const Rule* Rules::Find(std::string_view topic) const {
  for (const Rule& r : rules_) {
    const std::string& p = r.pattern;
    if (p.back() == '*' ? topic.starts_with(std::string_view(p).substr(0, p.size() - 1))
                        : topic == p) {
      return &r;
    }
  }
  return nullptr;
}

std::string FormatEpoch(uint64_t stream) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, stream >>= 4) out[static_cast<size_t>(i)] = kHex[stream & 15];
  return out;
}

std::optional<uint64_t> ParseEpoch(std::string_view text) {
  if (text.size() != 16) return std::nullopt;
  uint64_t v = 0;
  for (char c : text) {
    int d = 0;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else {
      return std::nullopt;
    }
    v = v << 4 | static_cast<uint64_t>(d);
  }
  if (v == 0) return std::nullopt;
  return v;
}

}  // namespace sb::history
