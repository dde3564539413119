// The HTTP side of a shard: what to answer to a request on the public port.
//
// Owns: the decision for one parsed HTTP request — upgrade to a Phoenix
// WebSocket (/socket/websocket?vsn=2.x, RFC 6455 handshake, optional
// `phoenix` subprotocol, token auth), /healthz, or a refusal with its status
// code — and the response bytes. Pure: the caller parses the request (Beast)
// and passes the shard's state in; nothing here touches a socket or a clock.
#pragma once

#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "worker/auth.h"
#include "worker/hub.h"
#include "worker/worker_metrics.h"

namespace sb::worker {

using HttpRequest = boost::beast::http::request<boost::beast::http::empty_body>;

inline constexpr std::string_view kSocketPath = "/socket/websocket";
inline constexpr std::string_view kHealthPath = "/healthz";

struct HttpPolicy {
  bool draining = false;
  bool at_capacity = false;           // --max-connections reached
  const TokenRules* token = nullptr;  // token auth is on when set
  int64_t now_unix_s = 0;
};

struct HttpDecision {
  bool upgrade = false;
  std::string response;                       // the bytes to write (101 or a complete response)
  std::optional<Refusal> refusal;             // why, when refused (for metrics)
  std::optional<TokenFailure> token_failure;  // which token check failed (for metrics)
  std::string why;                            // for the debug log
  std::optional<Identity> identity;           // from the token, when auth is on
};

HttpDecision DecideRequest(const HttpRequest& req, const HttpPolicy& policy);

// A complete response that ends the connection ("Connection: close").
std::string PlainResponse(int status, std::string_view reason, std::string_view body,
                          std::string_view extra_headers = {});

// The value of query parameter `name` in `target` ("/p?a=1&b=x%20y"),
// percent-decoded ('+' is a space); nullopt if absent.
std::optional<std::string> QueryParam(std::string_view target, std::string_view name);

}  // namespace sb::worker
