// The client side of a shard's HTTP API for operators and scripts:
// `switchboard publish TOPIC EVENT JSON`.
//
// Owns: the node's `api:` settings as the config gives them (the URL of any
// shard's port and the key file), making the key file at the daemon's first
// start, reading it (refused if group
// or others may read it, as the shards refuse it), one blocking HTTP/1.1
// POST /api/publish (and the one blocking GET `switchboard status` reads a
// child's /metrics with), and the command's output and exit code (0 ok; 1
// refused or failed, the reason on stderr; 2 usage). Does not: find the
// config (switchboard_main.cc) or decide anything about the request (the
// shard does: worker/http_api). Blocking; runs on the calling thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>

#include "common/status.h"

namespace sb::supervisor {

struct ApiUrl {
  std::string host;  // numeric IPv4, IPv6 without brackets, or localhost
  uint16_t port = 0;
};

// "http://HOST:PORT" with an optional trailing "/": HOST as the listen
// addresses take it (numeric, [v6] or localhost). InvalidConfig otherwise.
Result<ApiUrl> ParseApiUrl(std::string_view url);

// The key file's first line (common/key_file, 16 bytes or more, as the
// shards require). InvalidConfig if it cannot be read, is too short, or
// group or others have any access to it.
Result<std::string> ReadApiKeyFile(const std::string& path);

// The daemon's part: makes the node's key file if there is none — 32
// random bytes as 64 hex digits and a line end, mode 0600, created
// exclusively — and otherwise checks it as ReadApiKeyFile does. So a node
// configured with node.api has a key from its first start, and the
// operator rotates it by replacing the file and restarting the shards.
Status EnsureApiKeyFile(const std::string& path);

struct ApiReply {
  int status = 0;
  std::string body;
};

// POSTs `body` (JSON) to `path` with the bearer `key`; one connection,
// closed after the answer. IoError when the shard cannot be reached or
// does not answer within `timeout`.
Result<ApiReply> ApiPost(const ApiUrl& url, std::string_view path, const std::string& key,
                         std::string_view body, std::chrono::milliseconds timeout);

// GET `path` with HTTP/1.0 (no body sent, the answer read to the close):
// how `switchboard status` reads a child's Prometheus /metrics.
Result<ApiReply> HttpGet(const ApiUrl& url, std::string_view path,
                         std::chrono::milliseconds timeout);

// Where `switchboard publish` posts without --config: the default
// topology's node.api (config/cluster.yaml), as the control commands fall
// back to its control socket.
inline constexpr std::string_view kDefaultApiUrl = "http://127.0.0.1:4000";
inline constexpr std::string_view kDefaultApiKeyFile = "/tmp/switchboard/node1.api-key";

struct PublishArgs {
  std::string url;       // node.api.url
  std::string key_file;  // node.api.key_file
  std::string topic, event, payload_json;
  std::optional<std::string> idempotency_key;
};

// `switchboard publish`: prints the shard's answer body on success.
int RunPublish(const PublishArgs& args, std::ostream& out, std::ostream& err,
               std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace sb::supervisor
