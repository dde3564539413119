// The HTTP side of a shard: what to answer to a request on the public port.
//
// Owns: the decision for one parsed HTTP request — upgrade to a Phoenix
// WebSocket (/socket/websocket?vsn=2.x, RFC 6455 handshake, optional
// `phoenix` subprotocol, Origin check, token auth), /healthz, or a refusal
// with its status code — and the response bytes. Pure: the caller parses the
// request (Beast) and passes the shard's state in; nothing here touches a
// socket or a clock.
#pragma once

#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "worker/auth.h"
#include "worker/hub.h"
#include "worker/reasons.h"

namespace sb::worker {

using HttpRequest = boost::beast::http::request<boost::beast::http::empty_body>;

inline constexpr std::string_view kSocketPath = "/socket/websocket";
inline constexpr std::string_view kHealthPath = "/healthz";

// --- Origin check, with the semantics of Phoenix's `check_origin`
// (Phoenix.Socket.Transport, wildcards as fixed in Phoenix 1.6.14). A
// browser sends the page's origin with every WebSocket upgrade and a page
// cannot forge it, so checking it stops any web page a user opens from
// connecting to a shard with the user's network position. Clients that send
// no Origin header (non-browser clients) are not checked.

// One --allowed-origins entry: "scheme://host[:port]" or "//host[:port]".
struct AllowedOrigin {
  std::string scheme;     // lowercase; empty: any scheme
  std::string host;       // lowercase, IPv6 without brackets
  bool wildcard = false;  // "*.host": host itself or any name ending in ".host"
  // Empty: any port. An entry with a scheme and no port means that scheme's
  // default port (https → 443), as Elixir's URI.parse reads it for Phoenix.
  std::optional<uint16_t> port;
};

// Parses an entry as Phoenix does at endpoint start; an entry with no host
// ("example.com" without "//"), a '*' other than a leading "*.", userinfo or
// a bad port is an InvalidConfig error (the shard refuses to start).
Result<AllowedOrigin> ParseAllowedOrigin(std::string_view entry);

struct OriginPolicy {
  bool check = true;  // --check-origin on|off
  // Empty: the Origin's host must be the Host header's host (Phoenix's
  // check_origin: true, with the request's Host standing for the endpoint's
  // configured host). Otherwise the Origin must match one entry.
  std::vector<AllowedOrigin> allowed;
};

// The policy of --check-origin (`check`) and --allowed-origins (`entries`,
// each parsed by ParseAllowedOrigin). Entries with the check off are an
// InvalidConfig error: the flags contradict each other.
Result<OriginPolicy> MakeOriginPolicy(bool check, const std::vector<std::string>& entries);

// True if a request whose Origin header is `origin` (nullopt when absent)
// and whose Host header is `host` (empty when absent) passes `policy`; when
// it does not, `*why` says why (for the log). A missing Origin always
// passes. An Origin without a host ("null", "file://") never passes a check,
// nor does a request without a Host header when checked against Host.
// Scheme and host compare case-insensitively. Against Host only the host
// names are compared: the page's port and scheme do not matter, as in
// Phoenix, since a shard behind a proxy does not know those its clients see.
bool OriginAllowed(std::optional<std::string_view> origin, std::string_view host,
                   const OriginPolicy& policy, std::string* why);

struct HttpPolicy {
  bool draining = false;
  bool at_capacity = false;              // --max-connections reached
  const TokenRules* token = nullptr;     // token auth is on when set
  const OriginPolicy* origin = nullptr;  // nullptr: the default (checked against Host)
  int64_t now_unix_s = 0;
  // Reported by /healthz (headers Switchboard-Version, Switchboard-Commit)
  // so that a rolling upgrade can be watched; empty: not reported.
  std::string_view version;
  std::string_view commit;
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
