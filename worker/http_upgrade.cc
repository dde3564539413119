#include "worker/http_upgrade.h"

#include <boost/beast/websocket/rfc6455.hpp>
#include <string>

#include "protocol/websocket.h"
#include "worker/auth.h"

namespace sb::worker {

namespace http = boost::beast::http;

namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string PercentDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && HexValue(s[i + 1]) >= 0 &&
               HexValue(s[i + 2]) >= 0) {
      out += static_cast<char>(HexValue(s[i + 1]) * 16 + HexValue(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

Refusal RefuseWith(HttpDecision& d, Refusal r, int status, std::string_view reason, std::string why,
                   std::string_view extra_headers = {}) {
  d.refusal = r;
  d.why = std::move(why);
  d.response = PlainResponse(status, reason, d.why + "\n", extra_headers);
  return r;
}

}  // namespace

std::string PlainResponse(int status, std::string_view reason, std::string_view body,
                          std::string_view extra_headers) {
  std::string r = "HTTP/1.1 " + std::to_string(status) + " ";
  r += reason;
  r += "\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
       "\r\nConnection: close\r\n";
  r += extra_headers;
  r += "\r\n";
  r += body;
  return r;
}

std::optional<std::string> QueryParam(std::string_view target, std::string_view name) {
  size_t q = target.find('?');
  if (q == std::string_view::npos) return std::nullopt;
  std::string_view query = target.substr(q + 1);
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    size_t eq = pair.find('=');
    std::string key = PercentDecode(pair.substr(0, eq));
    if (key == name) {
      return eq == std::string_view::npos ? std::string() : PercentDecode(pair.substr(eq + 1));
    }
  }
  return std::nullopt;
}

HttpDecision DecideRequest(const HttpRequest& req, const HttpPolicy& policy) {
  HttpDecision d;
  std::string_view target(req.target().data(), req.target().size());
  std::string_view path = target.substr(0, target.find('?'));

  if (path == kHealthPath) {
    d.response = policy.draining ? PlainResponse(503, "Service Unavailable", "draining\n")
                                 : PlainResponse(200, "OK", "ok\n");
    return d;
  }
  if (path != kSocketPath) {
    RefuseWith(d, Refusal::kNotFound, 404, "Not Found", "no such path");
    return d;
  }
  if (req.method() != http::verb::get) {
    RefuseWith(d, Refusal::kMethodNotAllowed, 405, "Method Not Allowed", "use GET",
               "Allow: GET\r\n");
    return d;
  }
  if (!boost::beast::websocket::is_upgrade(req)) {
    RefuseWith(d, Refusal::kBadRequest, 400, "Bad Request", "expected a WebSocket upgrade");
    return d;
  }
  auto version = req.find(http::field::sec_websocket_version);
  if (version == req.end() || Trim({version->value().data(), version->value().size()}) != "13") {
    RefuseWith(d, Refusal::kBadRequest, 426, "Upgrade Required", "WebSocket version 13 only",
               "Sec-WebSocket-Version: 13\r\n");
    return d;
  }
  auto key_field = req.find(http::field::sec_websocket_key);
  std::string_view key = key_field == req.end()
                             ? std::string_view{}
                             : Trim({key_field->value().data(), key_field->value().size()});
  // RFC 6455 §4.1: a base64-encoded 16-byte nonce, hence 24 characters.
  if (key.size() != 24 || key.substr(22) != "==") {
    RefuseWith(d, Refusal::kBadRequest, 400, "Bad Request",
               "missing or malformed Sec-WebSocket-Key");
    return d;
  }
  std::optional<std::string> vsn = QueryParam(target, "vsn");
  if (!vsn || vsn->rfind("2.", 0) != 0) {
    RefuseWith(d, Refusal::kForbidden, 403, "Forbidden",
               "unsupported serializer: this server speaks vsn=2.0.0");
    return d;
  }
  if (policy.draining) {
    RefuseWith(d, Refusal::kDraining, 503, "Service Unavailable", "shard is draining",
               "Retry-After: 1\r\n");
    return d;
  }
  if (policy.at_capacity) {
    RefuseWith(d, Refusal::kOverloaded, 503, "Service Unavailable", "shard is full",
               "Retry-After: 1\r\n");
    return d;
  }

  // Subprotocols: phoenix.js offers "phoenix" plus the token when the app
  // sets authToken; we must select "phoenix" or clients abort.
  bool offered_phoenix = false;
  std::optional<std::string> token = QueryParam(target, "token");
  // Every Sec-WebSocket-Protocol header (a client may send several).
  auto offers = req.equal_range(http::field::sec_websocket_protocol);
  for (auto it = offers.first; it != offers.second; ++it) {
    std::string_view list(it->value().data(), it->value().size());
    while (!list.empty()) {
      size_t comma = list.find(',');
      std::string_view item = Trim(list.substr(0, comma));
      list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
      constexpr std::string_view kBearer = "base64url.bearer.phx.";
      if (item == "phoenix") {
        offered_phoenix = true;
      } else if (item.substr(0, kBearer.size()) == kBearer && !token) {
        std::string decoded;
        if (DecodeUnpaddedBase64(item.substr(kBearer.size()), &decoded)) token = std::move(decoded);
      }
    }
  }

  if (policy.token) {
    // One answer for every failed check: the client learns only that its
    // token did not do; the log and the metric say which check failed.
    TokenFailure failure = TokenFailure::kMissing;
    std::string why = "no token";
    if (token && !token->empty()) {
      Result<Claims> claims = VerifyToken(*token, *policy.token, policy.now_unix_s, &failure);
      if (claims.ok()) {
        d.identity = Identity{claims->sub, claims->topics};
      } else {
        why = claims.status().message();
      }
    }
    if (!d.identity) {
      RefuseWith(d, Refusal::kUnauthorized, 403, "Forbidden", "invalid or missing token");
      d.token_failure = failure;
      d.why = "token refused: " + why;
      return d;
    }
  }

  d.upgrade = true;
  d.response =
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: " +
      ws::AcceptKey(key) + "\r\n";
  if (offered_phoenix) d.response += "Sec-WebSocket-Protocol: phoenix\r\n";
  d.response += "\r\n";
  return d;
}

}  // namespace sb::worker
