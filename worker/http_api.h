// The shard's HTTP API (/api/*): what a backend may ask of any shard with
// the node's API key — publish a broadcast, read a topic's presence.
//
// Owns: the decision for one complete /api/* request (API off, the bearer
// key compared in constant time, routing, method, the JSON body and its
// bounds, topic and event rules as for clients) and the response bytes
// (JSON bodies, keep-alive or close), plus the idempotency table of
// publishes (IdempotencyTable, time injected). Pure: no socket, clock or
// file here but LoadApiKey's one read at startup. The gateway parses the
// request and writes the answer; the shard performs what a decision asks
// (worker/shard.cc, "API"). Runs on the shard's loop thread.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"

namespace sb::worker {

inline constexpr std::string_view kApiPrefix = "/api/";

// What requests are counted under (label `endpoint`).
enum class ApiEndpoint : uint8_t { kPublish, kBroadcast, kPresence, kHistory, kOther, kCount };
inline constexpr std::array<std::string_view, static_cast<size_t>(ApiEndpoint::kCount)>
    kApiEndpointNames = {"publish", "broadcast", "presence", "history", "other"};
// Every status an API answer can have (label `status`), in this order.
inline constexpr std::array<int, 7> kApiStatuses = {200, 400, 401, 404, 405, 413, 503};
// Index of `status` in kApiStatuses (the last, 503, for anything else).
size_t ApiStatusIndex(int status);

// True for a request target the API answers ("/api/..." with any query).
bool IsApiTarget(std::string_view target);
// The endpoint `target` names (kOther for any other path).
ApiEndpoint ApiEndpointOf(std::string_view target);

// Bounds of one request. The body is bounded by the gateway's parser
// (max_body, from --max-frame): a larger one is answered 413.
inline constexpr size_t kMaxApiTopics = 100;            // topics of one /api/broadcast
inline constexpr size_t kMaxIdempotencyKeyBytes = 200;  // longer: 400
inline constexpr size_t kMaxEventBytes = 255;           // as a binary broadcast's u8 length

struct ApiPolicy {
  const std::string* key = nullptr;  // null: the API is off (every /api/* is 404)
  size_t max_body = 1 << 20;         // for the 413 message
};

// A request the shard must perform.
struct ApiRequest {
  ApiEndpoint endpoint = ApiEndpoint::kOther;
  // kPublish: one topic; kBroadcast: one or more, distinct; kPresence: one.
  std::vector<std::string> topics;
  std::string event;    // publish / broadcast
  std::string payload;  // publish / broadcast: the payload's JSON text, byte for byte
  std::optional<std::string> idempotency_key;
  // kHistory: ?since=OFFSET (the messages after it; 0: from the oldest held)
  // and ?limit=N (1..kMaxApiHistoryLimit, default kMaxApiHistoryLimit).
  uint64_t since = 0;
  uint32_t limit = 0;
};
// The most messages one /api/history answer holds (a backend pages on with
// ?since= the last offset it got).
inline constexpr uint32_t kMaxApiHistoryLimit = 1000;

struct ApiDecision {
  ApiEndpoint endpoint = ApiEndpoint::kOther;
  // Set: the shard performs it and answers. Unset: `status` and `body` are
  // the answer.
  std::optional<ApiRequest> request;
  int status = 0;
  std::string body;
};

// True if `authorization` (the Authorization header's value, nullopt when
// absent) is "Bearer <key>", compared in constant time.
bool ApiKeyAccepted(std::optional<std::string_view> authorization, const std::string& key);

// Decides one complete request whose target IsApiTarget. `authorization`:
// the Authorization header's value (nullopt when absent).
ApiDecision DecideApi(std::string_view method, std::string_view target,
                      std::optional<std::string_view> authorization, std::string_view body,
                      const ApiPolicy& policy);

// {"error":{"code":code,"message":message}}
std::string ApiErrorBody(std::string_view code, std::string_view message);
inline constexpr std::string_view kApiOkBody = R"({"ok":true})";

// The response bytes: JSON body, Content-Length, and "Connection:
// keep-alive" or "close". 401 carries WWW-Authenticate, 405 Allow, 503
// Retry-After.
std::string ApiResponse(int status, std::string_view body, bool keep_alive);

// Reads the API key from `path` (common/key_file: the first line, from a
// file only its owner may access, kMinApiKeyBytes or longer); an
// InvalidConfig error otherwise, and the shard refuses to start. The key is
// never put in a message.
inline constexpr size_t kMinApiKeyBytes = 16;
Result<std::string> LoadApiKey(const std::string& path);

// Idempotency keys of publishes answered 200, each kept kTtlMs: a repeat in
// that time gets the first answer again and is not delivered again. One
// table per shard, the fast path: with a broker, a repeat sent to another
// shard is caught by the broker's node-wide table (docs/WORKER.md,
// Idempotency). At most `max_entries`; when full, the oldest
// entry is forgotten early (counted in `evicted`). Since every entry lives
// kTtlMs, insertion order is expiry order: a deque is the index.
class IdempotencyTable {
 public:
  static constexpr int64_t kTtlMs = 5 * 60 * 1000;
  explicit IdempotencyTable(size_t max_entries = 100000) : max_entries_(max_entries) {}

  // The answer body recorded for `key`, if a publish with it was answered
  // 200 within kTtlMs before `now_ms`.
  const std::string* Find(std::string_view key, int64_t now_ms);
  // Records the 200 answer `body` of the publish with `key`.
  void Insert(std::string key, std::string body, int64_t now_ms);

  size_t size() const { return by_key_.size(); }
  uint64_t evicted() const { return evicted_; }

 private:
  void Expire(int64_t now_ms);
  struct Entry {
    std::string body;
    int64_t at_ms;
  };
  size_t max_entries_;
  std::unordered_map<std::string, Entry> by_key_;
  std::deque<std::pair<int64_t, std::string>> order_;  // (at_ms, key), oldest first
  uint64_t evicted_ = 0;
};

}  // namespace sb::worker
