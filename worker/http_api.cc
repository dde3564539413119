#include "worker/http_api.h"

#include <openssl/crypto.h>

#include <boost/json.hpp>
#include <charconv>
#include <exception>
#include <unordered_set>
#include <utility>

#include "common/key_file.h"
#include "protocol/json_scan.h"
#include "protocol/limits.h"
#include "protocol/phoenix.h"
#include "protocol/phoenix_events.h"

namespace sb::worker {

namespace {

constexpr std::string_view kPublishPath = "/api/publish";
constexpr std::string_view kBroadcastPath = "/api/broadcast";
constexpr std::string_view kPresencePath = "/api/presence";
constexpr std::string_view kHistoryPath = "/api/history";

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 413:
      return "Content Too Large";
    case 503:
      return "Service Unavailable";
    default:
      return "Error";
  }
}

ApiDecision Answer(ApiEndpoint endpoint, int status, std::string_view code,
                   std::string_view message) {
  ApiDecision d;
  d.endpoint = endpoint;
  d.status = status;
  d.body = ApiErrorBody(code, message);
  return d;
}

// Constant time in the key's length whatever the candidate: the length
// check leaks only the length, which a 16-byte-or-more random key does not
// make guessable.
bool KeyMatches(std::string_view candidate, const std::string& key) {
  return candidate.size() == key.size() &&
         CRYPTO_memcmp(candidate.data(), key.data(), key.size()) == 0;
}

// Over text boost::json has accepted (protocol/json_scan.h).
using json_scan::SkipSpace;
using json_scan::SkipString;
using json_scan::SkipValue;

// The members of the root object `t` (already parsed) with the source
// text of each value, in order, duplicates included (boost::json keeps
// only the last of a repeated name). Names are decoded, so an escaped name
// ("pay\u006coad") is itself.
std::vector<std::pair<std::string, std::string_view>> RawMembers(std::string_view t) {
  std::vector<std::pair<std::string, std::string_view>> out;
  size_t i = SkipSpace(t, 0) + 1;  // past '{'
  while (true) {
    i = SkipSpace(t, i);
    if (i >= t.size() || t[i] != '"') return out;
    const size_t key_end = SkipString(t, i);
    std::string_view raw_key = t.substr(i, key_end - i);
    std::string name;
    if (raw_key.find('\\') == std::string_view::npos) {
      name = raw_key.substr(1, raw_key.size() - 2);
    } else {
      boost::system::error_code ec;
      boost::json::value k = boost::json::parse(raw_key, ec);
      if (!ec && k.is_string()) name = k.get_string();
    }
    i = SkipSpace(t, key_end) + 1;  // past ':'
    i = SkipSpace(t, i);
    const size_t value_end = SkipValue(t, i);
    out.emplace_back(std::move(name), t.substr(i, value_end - i));
    i = SkipSpace(t, value_end);
    if (i >= t.size() || t[i] != ',') return out;
    ++i;
  }
}

// A topic as a client may join it (protocol/limits.h).
bool ValidTopic(std::string_view topic) {
  return !topic.empty() && topic.size() <= limits::kMaxTopicBytes;
}

// Events a client may not relay (the hub's reserved events) and the
// channel events only Phoenix itself uses (phx_*): a backend cannot forge
// presence or channel control either.
bool ReservedEvent(std::string_view event) {
  return event.starts_with("phx_") || phx::IsServerOnlyEvent(event) || event == phx::kHeartbeat;
}

// The body of a publish or broadcast: {"topic"|"topics", "event", "payload",
// "idempotency_key"?}. Unknown members are refused so a typo
// ("idempotencyKey") is not silently ignored.
ApiDecision ParsePublish(ApiEndpoint endpoint, std::string_view body) {
  auto bad = [endpoint](std::string_view message) {
    return Answer(endpoint, 400, "bad_request", message);
  };
  boost::json::value doc;
  try {
    boost::json::parse_options options;
    // The payload sits at level 2, as in a client's message array, so the
    // bound is the one the Phoenix decoder applies to clients.
    options.max_depth = phx::kMaxJsonDepth;
    boost::system::error_code ec;
    doc = boost::json::parse(body, ec, {}, options);
    if (ec) return bad("body is not valid JSON: " + ec.message());
  } catch (const std::exception&) {
    return Answer(endpoint, 503, "unavailable", "out of memory");
  }
  const boost::json::object* obj = doc.if_object();
  if (obj == nullptr) return bad("body is not a JSON object");
  // A repeated name would leave two readings of the request: refused.
  const std::vector<std::pair<std::string, std::string_view>> raw = RawMembers(body);
  std::unordered_set<std::string_view> names;
  std::string_view payload_text;
  for (const auto& [name, text] : raw) {
    if (!names.insert(name).second) return bad("member \"" + name + "\" repeated");
    if (name == "payload") payload_text = text;
  }
  const std::string_view topic_member = endpoint == ApiEndpoint::kPublish ? "topic" : "topics";
  for (const auto& member : *obj) {
    std::string_view name(member.key().data(), member.key().size());
    if (name != topic_member && name != "event" && name != "payload" && name != "idempotency_key") {
      return bad("unknown member \"" + std::string(name) + "\"");
    }
  }
  ApiRequest r;
  r.endpoint = endpoint;
  const boost::json::value* topic = obj->if_contains(topic_member);
  if (topic == nullptr) return bad("missing \"" + std::string(topic_member) + "\"");
  if (endpoint == ApiEndpoint::kPublish) {
    if (!topic->is_string()) return bad("\"topic\" is not a string");
    r.topics.emplace_back(topic->get_string());
  } else {
    const boost::json::array* list = topic->if_array();
    if (list == nullptr || list->empty()) return bad("\"topics\" is not a non-empty array");
    if (list->size() > kMaxApiTopics) {
      return bad("more than " + std::to_string(kMaxApiTopics) + " topics");
    }
    std::unordered_set<std::string_view> seen;
    for (const boost::json::value& t : *list) {
      if (!t.is_string()) return bad("\"topics\" holds a non-string");
      std::string_view s(t.get_string().data(), t.get_string().size());
      if (!seen.insert(s).second) return bad("topic \"" + std::string(s) + "\" repeated");
      r.topics.emplace_back(s);
    }
  }
  for (const std::string& t : r.topics) {
    if (!ValidTopic(t)) {
      return Answer(endpoint, 400, "invalid_topic",
                    "a topic is 1 to " + std::to_string(limits::kMaxTopicBytes) + " bytes");
    }
  }
  const boost::json::value* event = obj->if_contains("event");
  if (event == nullptr || !event->is_string()) return bad("missing or non-string \"event\"");
  r.event = std::string(event->get_string());
  if (r.event.empty() || r.event.size() > kMaxEventBytes) {
    return Answer(endpoint, 400, "invalid_event",
                  "an event is 1 to " + std::to_string(kMaxEventBytes) + " bytes");
  }
  if (ReservedEvent(r.event)) {
    return Answer(endpoint, 400, "reserved_event",
                  "event \"" + r.event + "\" is reserved for the protocol");
  }
  if (!obj->contains("payload")) return bad("missing \"payload\"");
  r.payload = std::string(payload_text);
  if (const boost::json::value* key = obj->if_contains("idempotency_key")) {
    if (!key->is_string() || key->get_string().empty() ||
        key->get_string().size() > kMaxIdempotencyKeyBytes) {
      return bad("\"idempotency_key\" is not a string of 1 to " +
                 std::to_string(kMaxIdempotencyKeyBytes) + " bytes");
    }
    r.idempotency_key = std::string(key->get_string());
  }
  ApiDecision d;
  d.endpoint = endpoint;
  d.request = std::move(r);
  return d;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The percent-decoded value of query parameter `name` ('+' is a space);
// nullopt if absent. worker/http_upgrade has the same for the upgrade; the
// API keeps its own to stay free of Beast.
std::optional<std::string> QueryValue(std::string_view target, std::string_view name) {
  const size_t q = target.find('?');
  std::string_view query = q == std::string_view::npos ? "" : target.substr(q + 1);
  while (!query.empty()) {
    const size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    const size_t eq = pair.find('=');
    if (pair.substr(0, eq) != name) continue;
    std::string_view v = eq == std::string_view::npos ? "" : pair.substr(eq + 1);
    std::string out;
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i] == '+') {
        out += ' ';
      } else if (v[i] == '%' && i + 2 < v.size() && HexValue(v[i + 1]) >= 0 &&
                 HexValue(v[i + 2]) >= 0) {
        out += static_cast<char>(HexValue(v[i + 1]) * 16 + HexValue(v[i + 2]));
        i += 2;
      } else {
        out += v[i];
      }
    }
    return out;
  }
  return std::nullopt;
}

// A decimal u64, digits only (from_chars takes no sign or space for an
// unsigned type), all of `s`; one past 2^64 - 1 is an error. `out` is
// left alone unless it parses.
bool ParseDecimal(std::string_view s, uint64_t* out) {
  uint64_t n = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (ec != std::errc() || end != s.data() + s.size()) return false;
  *out = n;
  return true;
}

}  // namespace

ApiEndpoint ApiEndpointOf(std::string_view target) {
  const std::string_view path = target.substr(0, target.find('?'));
  if (path == kPublishPath) return ApiEndpoint::kPublish;
  if (path == kBroadcastPath) return ApiEndpoint::kBroadcast;
  if (path == kPresencePath) return ApiEndpoint::kPresence;
  if (path == kHistoryPath) return ApiEndpoint::kHistory;
  return ApiEndpoint::kOther;
}

size_t ApiStatusIndex(int status) {
  for (size_t i = 0; i < kApiStatuses.size(); ++i) {
    if (kApiStatuses[i] == status) return i;
  }
  return kApiStatuses.size() - 1;
}

bool IsApiTarget(std::string_view target) {
  return target.substr(0, target.find('?')).starts_with(kApiPrefix);
}

std::string ApiErrorBody(std::string_view code, std::string_view message) {
  std::string out = R"({"error":{"code":)";
  phx::AppendJsonString(out, code);
  out += R"(,"message":)";
  phx::AppendJsonString(out, message);
  out += "}}";
  return out;
}

std::string ApiResponse(int status, std::string_view body, bool keep_alive) {
  std::string r = "HTTP/1.1 " + std::to_string(status) + " ";
  r += ReasonPhrase(status);
  r += "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
       "\r\nCache-Control: no-store\r\nConnection: ";
  r += keep_alive ? "keep-alive" : "close";
  r += "\r\n";
  if (status == 401) r += "WWW-Authenticate: Bearer\r\n";
  if (status == 503) r += "Retry-After: 1\r\n";
  r += "\r\n";
  r += body;
  return r;
}

bool ApiKeyAccepted(std::optional<std::string_view> authorization, const std::string& key) {
  constexpr std::string_view kBearer = "Bearer ";
  std::string_view given = authorization.value_or("");
  while (!given.empty() && (given.back() == ' ' || given.back() == '\t')) given.remove_suffix(1);
  // The scheme is case-insensitive (RFC 9110 §11.1); the two spellings
  // clients use are enough.
  const bool bearer =
      given.size() > kBearer.size() &&
      (given.substr(0, kBearer.size()) == kBearer || given.substr(0, kBearer.size()) == "bearer ");
  return bearer && KeyMatches(given.substr(kBearer.size()), key);
}

ApiDecision DecideApi(std::string_view method, std::string_view target,
                      std::optional<std::string_view> authorization, std::string_view body,
                      const ApiPolicy& policy) {
  const ApiEndpoint endpoint = ApiEndpointOf(target);
  // Off: the API does not exist, whatever the request.
  if (policy.key == nullptr) return Answer(endpoint, 404, "not_found", "the API is off");
  // Before routing: without the key nobody learns which paths exist.
  if (!ApiKeyAccepted(authorization, *policy.key)) {
    return Answer(endpoint, 401, "unauthorized", "missing or wrong API key");
  }
  switch (endpoint) {
    case ApiEndpoint::kPublish:
    case ApiEndpoint::kBroadcast: {
      if (method != "POST") return Answer(endpoint, 405, "method_not_allowed", "use POST");
      return ParsePublish(endpoint, body);
    }
    case ApiEndpoint::kPresence:
    case ApiEndpoint::kHistory: {
      if (method != "GET") return Answer(endpoint, 405, "method_not_allowed", "use GET");
      std::optional<std::string> topic = QueryValue(target, "topic");
      if (!topic) return Answer(endpoint, 400, "bad_request", "missing ?topic=");
      if (!ValidTopic(*topic)) {
        return Answer(endpoint, 400, "invalid_topic",
                      "a topic is 1 to " + std::to_string(limits::kMaxTopicBytes) + " bytes");
      }
      ApiDecision d;
      d.endpoint = endpoint;
      d.request = ApiRequest{.endpoint = endpoint, .topics = {std::move(*topic)}};
      if (endpoint == ApiEndpoint::kHistory) {
        d.request->limit = kMaxApiHistoryLimit;
        uint64_t n = 0;
        if (std::optional<std::string> since = QueryValue(target, "since")) {
          if (!ParseDecimal(*since, &n)) {
            return Answer(endpoint, 400, "bad_request", "since is not an offset");
          }
          d.request->since = n;
        }
        if (std::optional<std::string> limit = QueryValue(target, "limit")) {
          if (!ParseDecimal(*limit, &n) || n == 0 || n > kMaxApiHistoryLimit) {
            return Answer(endpoint, 400, "bad_request",
                          "limit must be 1 to " + std::to_string(kMaxApiHistoryLimit));
          }
          d.request->limit = static_cast<uint32_t>(n);
        }
      }
      return d;
    }
    case ApiEndpoint::kOther:
    case ApiEndpoint::kCount:
      break;
  }
  return Answer(endpoint, 404, "not_found", "no such endpoint");
}

Result<std::string> LoadApiKey(const std::string& path) {
  return ReadPrivateKeyFile(path, kMinApiKeyBytes);
}

const std::string* IdempotencyTable::Find(std::string_view key, int64_t now_ms) {
  Expire(now_ms);
  auto it = by_key_.find(std::string(key));
  return it == by_key_.end() ? nullptr : &it->second.body;
}

void IdempotencyTable::Insert(std::string key, std::string body, int64_t now_ms) {
  Expire(now_ms);
  if (by_key_.contains(key)) return;
  while (!order_.empty() && by_key_.size() >= max_entries_) {
    by_key_.erase(order_.front().second);
    order_.pop_front();
    ++evicted_;
  }
  order_.emplace_back(now_ms, key);
  by_key_.emplace(std::move(key), Entry{std::move(body), now_ms});
}

void IdempotencyTable::Expire(int64_t now_ms) {
  while (!order_.empty() && now_ms - order_.front().first >= kTtlMs) {
    by_key_.erase(order_.front().second);
    order_.pop_front();
  }
}

}  // namespace sb::worker
