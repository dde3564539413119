#include "worker/http_upgrade.h"

#include <boost/beast/websocket/rfc6455.hpp>
#include <cctype>
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

// The value of the first `field` header, nullopt when there is none.
std::optional<std::string_view> FieldValue(const HttpRequest& req, http::field field) {
  auto it = req.find(field);
  if (it == req.end()) return std::nullopt;
  return std::string_view(it->value().data(), it->value().size());
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// An origin or an allowed-origin entry, split as Elixir's URI.parse splits
// it for Phoenix's check_origin.
struct Uri {
  std::string scheme;  // lowercase; empty for "//host"
  std::string host;    // lowercase, IPv6 without brackets
  std::optional<uint16_t> port;
};

std::optional<uint16_t> DefaultPort(std::string_view scheme) {
  if (scheme == "http" || scheme == "ws") return 80;
  if (scheme == "https" || scheme == "wss") return 443;
  return std::nullopt;
}

// Splits "host[:port]" or "[v6]:port" (a Host header, or the authority of a
// URI) into host and explicit port. False on a malformed port or brackets.
bool SplitHostPort(std::string_view authority, std::string* host, std::optional<uint16_t>* port) {
  std::string_view h = authority;
  std::string_view rest;
  if (!h.empty() && h.front() == '[') {
    size_t close = h.find(']');
    if (close == std::string_view::npos) return false;
    rest = h.substr(close + 1);
    h = h.substr(1, close - 1);
    if (!rest.empty() && rest.front() != ':') return false;
  } else {
    size_t colon = h.find(':');
    if (colon != std::string_view::npos) {
      rest = h.substr(colon);
      h = h.substr(0, colon);
    }
  }
  port->reset();
  if (!rest.empty()) {
    std::string_view digits = rest.substr(1);
    // "host:" has no port, as in RFC 3986 (port = *DIGIT).
    if (digits.size() > 5) return false;
    uint32_t p = 0;
    for (char c : digits) {
      if (c < '0' || c > '9') return false;
      p = p * 10 + static_cast<uint32_t>(c - '0');
    }
    if (p > 65535) return false;
    if (!digits.empty()) *port = static_cast<uint16_t>(p);
  }
  *host = Lower(h);
  return true;
}

// "scheme://authority[/path...]" or "//authority[/path...]". False, with
// `*why`, when there is no host (Phoenix refuses "null", "file://" and ""
// the same way) or the authority is malformed. Userinfo is refused: a
// browser never puts it in an Origin.
bool ParseUri(std::string_view s, Uri* out, std::string* why) {
  s = Trim(s);
  std::string_view rest;
  if (s.starts_with("//")) {
    rest = s.substr(2);
    out->scheme.clear();
  } else {
    size_t sep = s.find("://");
    bool scheme_ok =
        sep != std::string_view::npos && sep > 0 && std::isalpha(static_cast<unsigned char>(s[0]));
    for (size_t i = 0; scheme_ok && i < sep; ++i) {
      unsigned char c = static_cast<unsigned char>(s[i]);
      scheme_ok = std::isalnum(c) || c == '+' || c == '-' || c == '.';
    }
    if (!scheme_ok) {
      *why = "no scheme://host";
      return false;
    }
    out->scheme = Lower(s.substr(0, sep));
    rest = s.substr(sep + 3);
  }
  std::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
  if (authority.find('@') != std::string_view::npos) {
    *why = "userinfo in the authority";
    return false;
  }
  if (!SplitHostPort(authority, &out->host, &out->port)) {
    *why = "malformed host or port";
    return false;
  }
  if (out->host.empty()) {
    *why = "no host";
    return false;
  }
  if (!out->port) out->port = DefaultPort(out->scheme);
  return true;
}

bool MatchesEntry(const Uri& origin, const AllowedOrigin& entry) {
  if (!entry.scheme.empty() && entry.scheme != origin.scheme) return false;
  if (entry.port && entry.port != origin.port) return false;
  if (!entry.wildcard) return origin.host == entry.host;
  // The dot boundary of Phoenix 1.6.14: "*.example.com" must not match
  // "evilexample.com". Like Phoenix, it matches "example.com" itself.
  return origin.host == entry.host ||
         (origin.host.size() > entry.host.size() && origin.host.ends_with(entry.host) &&
          origin.host[origin.host.size() - entry.host.size() - 1] == '.');
}

}  // namespace

Result<AllowedOrigin> ParseAllowedOrigin(std::string_view entry) {
  Uri uri;
  std::string why;
  if (!ParseUri(entry, &uri, &why)) {
    return Status::InvalidConfig("allowed origin '" + std::string(entry) + "': " + why +
                                 " (expected scheme://host[:port] or //host[:port])");
  }
  AllowedOrigin out;
  out.scheme = std::move(uri.scheme);
  out.port = uri.port;
  std::string_view host = uri.host;
  if (host.starts_with("*.")) {
    out.wildcard = true;
    host.remove_prefix(2);
  }
  if (host.empty() || host.find('*') != std::string_view::npos) {
    return Status::InvalidConfig("allowed origin '" + std::string(entry) +
                                 "': a '*' may only start the host, as in //*.example.com");
  }
  out.host = std::string(host);
  return out;
}

Result<OriginPolicy> MakeOriginPolicy(bool check, const std::vector<std::string>& entries) {
  OriginPolicy policy;
  policy.check = check;
  if (!check && !entries.empty()) {
    return Status::InvalidConfig("--allowed-origins given with --check-origin off");
  }
  for (const std::string& entry : entries) {
    Result<AllowedOrigin> parsed = ParseAllowedOrigin(entry);
    if (!parsed.ok()) return parsed.status();
    policy.allowed.push_back(std::move(parsed.value()));
  }
  return policy;
}

bool OriginAllowed(std::optional<std::string_view> origin, std::string_view host,
                   const OriginPolicy& policy, std::string* why) {
  if (!policy.check || !origin) return true;
  Uri o;
  std::string parse_why;
  if (!ParseUri(*origin, &o, &parse_why)) {
    *why = "Origin '" + std::string(*origin) + "': " + parse_why;
    return false;
  }
  if (policy.allowed.empty()) {
    std::string host_name;
    std::optional<uint16_t> port;
    if (!SplitHostPort(Trim(host), &host_name, &port) || host_name.empty()) {
      *why = "Origin '" + std::string(*origin) + "' and no usable Host header to compare it with";
      return false;
    }
    if (o.host == host_name) return true;
    *why = "Origin host '" + o.host + "' is not the Host '" + host_name + "'";
    return false;
  }
  for (const AllowedOrigin& entry : policy.allowed) {
    if (MatchesEntry(o, entry)) return true;
  }
  *why = "Origin '" + std::string(*origin) + "' matches no --allowed-origins entry";
  return false;
}

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
    // The version goes in headers: the body stays the plain "ok" that load
    // balancers' health checks match.
    std::string build;
    if (!policy.version.empty())
      build += "Switchboard-Version: " + std::string(policy.version) + "\r\n";
    if (!policy.commit.empty())
      build += "Switchboard-Commit: " + std::string(policy.commit) + "\r\n";
    d.response = policy.draining ? PlainResponse(503, "Service Unavailable", "draining\n", build)
                                 : PlainResponse(200, "OK", "ok\n", build);
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
  // Before draining and capacity: a page that may not connect gets the same
  // answer whatever the shard's state.
  const OriginPolicy default_origin;  // no allocation: an empty list
  std::optional<std::string_view> origin = FieldValue(req, http::field::origin);
  std::string origin_why;
  if (!OriginAllowed(origin, FieldValue(req, http::field::host).value_or(""),
                     policy.origin ? *policy.origin : default_origin, &origin_why)) {
    RefuseWith(d, Refusal::kForbiddenOrigin, 403, "Forbidden", "origin not allowed");
    d.why = "origin not allowed: " + origin_why;
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
