// The HTTP decision of a shard: every answer to a request on the public port.

#include "worker/http_upgrade.h"

#include <gtest/gtest.h>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <string>

#include "worker/test_tokens.h"

namespace sb::worker {
namespace {

constexpr int64_t kNow = 1'800'000'000;
const std::string kSecret = "upgrade-secret-of-at-least-32-bytes";
const TokenRules kRules{kSecret, "", ""};
constexpr char kKey[] = "dGhlIHNhbXBsZSBub25jZQ==";         // RFC 6455 §1.3
constexpr char kAccept[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";  // and its answer

HttpRequest Parse(const std::string& raw) {
  boost::beast::http::request_parser<boost::beast::http::empty_body> p;
  boost::system::error_code ec;
  p.put(boost::asio::buffer(raw), ec);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_TRUE(p.is_done());
  return p.release();
}

std::string Upgrade(const std::string& target, const std::string& extra_headers = "") {
  return "GET " + target +
         " HTTP/1.1\r\nHost: shard\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " +
         kKey + "\r\n" + extra_headers + "\r\n";
}

HttpDecision Decide(const std::string& raw, HttpPolicy policy = {}) {
  policy.now_unix_s = kNow;
  return DecideRequest(Parse(raw), policy);
}

int StatusOf(const HttpDecision& d) { return std::stoi(d.response.substr(9, 3)); }

TEST(HttpUpgradeTest, PhoenixUpgradeGets101WithTheAcceptKey) {
  HttpDecision d = Decide(Upgrade("/socket/websocket?vsn=2.0.0"));
  ASSERT_TRUE(d.upgrade) << d.response;
  EXPECT_EQ(StatusOf(d), 101);
  EXPECT_NE(d.response.find(std::string("Sec-WebSocket-Accept: ") + kAccept + "\r\n"),
            std::string::npos);
  EXPECT_EQ(d.response.find("Sec-WebSocket-Protocol"), std::string::npos);
  EXPECT_FALSE(d.refusal.has_value());
  EXPECT_FALSE(d.identity.has_value());
}

TEST(HttpUpgradeTest, PhoenixSubprotocolIsSelectedFromAnyOfSeveralHeaders) {
  HttpDecision d = Decide(Upgrade("/socket/websocket?vsn=2.0.0",
                                  "Sec-WebSocket-Protocol: chat, superchat\r\nX-Other: 1\r\n"
                                  "Sec-WebSocket-Protocol: phoenix\r\n"));
  ASSERT_TRUE(d.upgrade);
  EXPECT_NE(d.response.find("Sec-WebSocket-Protocol: phoenix\r\n"), std::string::npos);
}

TEST(HttpUpgradeTest, HealthzAnswersWhileServingAndRefusesWhileDraining) {
  const std::string req = "GET /healthz HTTP/1.1\r\nHost: shard\r\n\r\n";
  EXPECT_EQ(StatusOf(Decide(req)), 200);
  HttpPolicy draining;
  draining.draining = true;
  EXPECT_EQ(StatusOf(Decide(req, draining)), 503);
  EXPECT_FALSE(Decide(req).refusal.has_value());
}

TEST(HttpUpgradeTest, HealthzReportsVersionAndCommitInHeadersAndKeepsItsBody) {
  const std::string req = "GET /healthz HTTP/1.1\r\nHost: shard\r\n\r\n";
  HttpPolicy policy;
  policy.version = "0.1.0-b";
  policy.commit = "28ee336abcde";
  for (bool draining : {false, true}) {
    policy.draining = draining;
    const std::string r = Decide(req, policy).response;
    EXPECT_NE(r.find("\r\nSwitchboard-Version: 0.1.0-b\r\n"), std::string::npos) << r;
    EXPECT_NE(r.find("\r\nSwitchboard-Commit: 28ee336abcde\r\n"), std::string::npos) << r;
    EXPECT_TRUE(r.ends_with(draining ? "\r\n\r\ndraining\n" : "\r\n\r\nok\n")) << r;
  }
  EXPECT_EQ(Decide(req).response.find("Switchboard-"), std::string::npos);
}

TEST(HttpUpgradeTest, RefusalsCarryTheirStatusAndReason) {
  struct Case {
    std::string raw;
    int status;
    Refusal refusal;
  } cases[] = {
      {"GET /other HTTP/1.1\r\nHost: s\r\n\r\n", 404, Refusal::kNotFound},
      {"POST /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: s\r\nContent-Length: 0\r\n\r\n", 405,
       Refusal::kMethodNotAllowed},
      {"GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: s\r\n\r\n", 400, Refusal::kBadRequest},
      {Upgrade("/socket/websocket"), 403, Refusal::kForbidden},
      {Upgrade("/socket/websocket?vsn=1.0.0"), 403, Refusal::kForbidden},
  };
  for (const Case& c : cases) {
    HttpDecision d = Decide(c.raw);
    EXPECT_FALSE(d.upgrade) << c.raw;
    EXPECT_EQ(StatusOf(d), c.status) << c.raw;
    ASSERT_TRUE(d.refusal.has_value()) << c.raw;
    EXPECT_EQ(*d.refusal, c.refusal) << c.raw;
    EXPECT_NE(d.response.find("Connection: close\r\n"), std::string::npos);
  }
}

TEST(HttpUpgradeTest, WrongVersionGets426NamingVersion13AndABadKeyGets400) {
  std::string v8 = Upgrade("/socket/websocket?vsn=2.0.0");
  v8.replace(v8.find("Version: 13"), 11, "Version: 8");
  HttpDecision d = Decide(v8);
  EXPECT_EQ(StatusOf(d), 426);
  EXPECT_NE(d.response.find("Sec-WebSocket-Version: 13\r\n"), std::string::npos);

  std::string bad_key = Upgrade("/socket/websocket?vsn=2.0.0");
  bad_key.replace(bad_key.find(kKey), sizeof kKey - 1, "short");
  EXPECT_EQ(StatusOf(Decide(bad_key)), 400);
}

TEST(HttpUpgradeTest, DrainingAndFullShardsAnswer503WithRetryAfter) {
  HttpPolicy full;
  full.at_capacity = true;
  HttpDecision d = Decide(Upgrade("/socket/websocket?vsn=2.0.0"), full);
  EXPECT_EQ(StatusOf(d), 503);
  EXPECT_EQ(d.refusal, Refusal::kOverloaded);
  EXPECT_NE(d.response.find("Retry-After: 1\r\n"), std::string::npos);
  HttpPolicy draining;
  draining.draining = true;
  EXPECT_EQ(Decide(Upgrade("/socket/websocket?vsn=2.0.0"), draining).refusal, Refusal::kDraining);
}

TEST(HttpUpgradeTest, WithAuthOnlyAValidTokenUpgradesAndItsPatternsBecomeTheIdentity) {
  HttpPolicy auth;
  auth.token = &kRules;
  const std::string token =
      test_tokens::MakeToken(R"({"sub":"alice","topics":["room:*"],"exp":1800000060})", kSecret);

  HttpDecision none = Decide(Upgrade("/socket/websocket?vsn=2.0.0"), auth);
  EXPECT_EQ(StatusOf(none), 403);
  EXPECT_EQ(none.refusal, Refusal::kUnauthorized);

  HttpDecision query = Decide(Upgrade("/socket/websocket?token=" + token + "&vsn=2.0.0"), auth);
  ASSERT_TRUE(query.upgrade) << query.response;
  ASSERT_TRUE(query.identity.has_value());
  EXPECT_EQ(query.identity->sub, "alice");
  EXPECT_EQ(query.identity->topic_patterns, std::vector<std::string>{"room:*"});

  const std::string expired =
      test_tokens::MakeToken(R"({"sub":"alice","topics":["room:*"],"exp":1799999999})", kSecret);
  EXPECT_EQ(Decide(Upgrade("/socket/websocket?token=" + expired + "&vsn=2.0.0"), auth).refusal,
            Refusal::kUnauthorized);
  const std::string forged = test_tokens::MakeToken(
      R"({"sub":"alice","topics":["*"],"exp":1800000060})", "another-secret-of-at-least-32-bytes");
  EXPECT_EQ(Decide(Upgrade("/socket/websocket?token=" + forged + "&vsn=2.0.0"), auth).refusal,
            Refusal::kUnauthorized);
}

TEST(HttpUpgradeTest, TokenInPhoenixAuthTokenSubprotocolIsAccepted) {
  HttpPolicy auth;
  auth.token = &kRules;
  const std::string token =
      test_tokens::MakeToken(R"({"sub":"bob","topics":["*"],"exp":1800000060})", kSecret);
  // phoenix.js: "base64url.bearer.phx." + btoa(token) with '=' stripped.
  std::string b64 = test_tokens::B64Url(token);
  for (char& c : b64) {
    if (c == '-') c = '+';
    if (c == '_') c = '/';
  }
  HttpDecision d =
      Decide(Upgrade("/socket/websocket?vsn=2.0.0",
                     "Sec-WebSocket-Protocol: phoenix, base64url.bearer.phx." + b64 + "\r\n"),
             auth);
  ASSERT_TRUE(d.upgrade) << d.response;
  EXPECT_EQ(d.identity->sub, "bob");
  EXPECT_NE(d.response.find("Sec-WebSocket-Protocol: phoenix\r\n"), std::string::npos);
}

TEST(HttpUpgradeTest, EveryTokenFailureGetsTheSameAnswerAndIsCountedByItsCheck) {
  TokenRules rules = kRules;
  rules.audience = "switchboard";
  rules.issuer = "auth";
  HttpPolicy auth;
  auth.token = &rules;
  auto token = [](std::string_view claims, const std::string& secret = kSecret) {
    return test_tokens::MakeToken(claims, secret);
  };
  const std::string good =
      R"({"sub":"a","topics":["*"],"exp":1800000060,"aud":"switchboard","iss":"auth")";
  struct Case {
    const char* name;
    std::string target;
    TokenFailure failure;
  } cases[] = {
      {"missing", "/socket/websocket?vsn=2.0.0", TokenFailure::kMissing},
      {"empty", "/socket/websocket?vsn=2.0.0&token=", TokenFailure::kMissing},
      {"malformed", "/socket/websocket?vsn=2.0.0&token=abc", TokenFailure::kMalformed},
      {"forged", "/socket/websocket?vsn=2.0.0&token=" + token(good + "}", kSecret + "x"),
       TokenFailure::kSignature},
      {"expired",
       "/socket/websocket?vsn=2.0.0&token=" +
           token(R"({"sub":"a","topics":[],"exp":1,"aud":"switchboard","iss":"auth"})"),
       TokenFailure::kExpired},
      {"not yet valid",
       "/socket/websocket?vsn=2.0.0&token=" + token(good + R"(,"nbf":1800000001})"),
       TokenFailure::kNotYetValid},
      {"audience",
       "/socket/websocket?vsn=2.0.0&token=" +
           token(R"({"sub":"a","topics":[],"exp":1800000060,"aud":"other","iss":"auth"})"),
       TokenFailure::kAudience},
      {"issuer",
       "/socket/websocket?vsn=2.0.0&token=" +
           token(R"({"sub":"a","topics":[],"exp":1800000060,"aud":"switchboard"})"),
       TokenFailure::kIssuer},
  };
  const std::string first = Decide(Upgrade(cases[0].target), auth).response;
  EXPECT_EQ(StatusOf(Decide(Upgrade(cases[0].target), auth)), 403);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    HttpDecision d = Decide(Upgrade(c.target), auth);
    EXPECT_FALSE(d.upgrade);
    EXPECT_EQ(d.refusal, Refusal::kUnauthorized);
    ASSERT_TRUE(d.token_failure.has_value());
    EXPECT_EQ(static_cast<int>(*d.token_failure), static_cast<int>(c.failure)) << d.why;
    EXPECT_EQ(d.response, first);
    EXPECT_EQ(d.response.find(d.why), std::string::npos) << "the log reason reaches the client";
  }
  HttpDecision ok = Decide(Upgrade("/socket/websocket?vsn=2.0.0&token=" + token(good + "}")), auth);
  EXPECT_TRUE(ok.upgrade) << ok.why;
  EXPECT_FALSE(ok.token_failure.has_value());
}

// --- Origin

std::string WithOrigin(std::string_view origin, std::string_view host = "shard") {
  std::string raw =
      Upgrade("/socket/websocket?vsn=2.0.0", "Origin: " + std::string(origin) + "\r\n");
  raw.replace(raw.find("Host: shard"), 11, "Host: " + std::string(host));
  return raw;
}

OriginPolicy Allowing(std::vector<std::string> entries) {
  Result<OriginPolicy> p = MakeOriginPolicy(true, entries);
  EXPECT_TRUE(p.ok()) << p.status().message();
  return p.ok() ? p.value() : OriginPolicy{};
}

bool Allowed(std::optional<std::string_view> origin, std::string_view host,
             const OriginPolicy& policy = {}) {
  std::string why;
  bool ok = OriginAllowed(origin, host, policy, &why);
  EXPECT_EQ(ok, why.empty()) << why;
  return ok;
}

TEST(HttpUpgradeTest, ACrossOriginUpgradeIsForbiddenByDefault) {
  HttpDecision d = Decide(WithOrigin("https://evil.example"));
  EXPECT_FALSE(d.upgrade);
  EXPECT_EQ(StatusOf(d), 403);
  EXPECT_EQ(d.refusal, Refusal::kForbiddenOrigin);
  EXPECT_NE(d.why.find("evil.example"), std::string::npos) << d.why;

  EXPECT_TRUE(Decide(WithOrigin("https://shard")).upgrade);
  EXPECT_TRUE(Decide(Upgrade("/socket/websocket?vsn=2.0.0")).upgrade) << "no Origin: not a browser";
  // The page may not connect whatever the shard's state.
  HttpPolicy draining;
  draining.draining = true;
  EXPECT_EQ(Decide(WithOrigin("https://evil.example"), draining).refusal,
            Refusal::kForbiddenOrigin);
}

TEST(HttpUpgradeTest, OriginCheckFollowsThePolicyGiven) {
  const OriginPolicy off = MakeOriginPolicy(false, {}).value();
  HttpPolicy policy;
  policy.origin = &off;
  EXPECT_TRUE(Decide(WithOrigin("https://evil.example"), policy).upgrade);
  const OriginPolicy list = Allowing({"https://app.example.com"});
  policy.origin = &list;
  EXPECT_TRUE(Decide(WithOrigin("https://app.example.com"), policy).upgrade);
  EXPECT_EQ(Decide(WithOrigin("https://shard"), policy).refusal, Refusal::kForbiddenOrigin)
      << "with a list, the Host no longer counts";
}

TEST(OriginTest, DefaultComparesTheOriginHostWithTheHostHeaderHost) {
  EXPECT_TRUE(Allowed("https://chat.example.com", "chat.example.com"));
  // Port and scheme do not matter (a proxy in front changes both).
  EXPECT_TRUE(Allowed("http://chat.example.com:8080", "chat.example.com:4000"));
  EXPECT_TRUE(Allowed("https://chat.example.com", "chat.example.com:443"));
  EXPECT_TRUE(Allowed("https://Chat.Example.COM", "chat.example.com")) << "hosts ignore case";
  EXPECT_TRUE(Allowed("http://127.0.0.1:3000", "127.0.0.1:4000"));
  EXPECT_TRUE(Allowed("http://[::1]:3000", "[::1]:4000"));
  EXPECT_TRUE(Allowed("https://chat.example.com/path?q", "chat.example.com"));

  EXPECT_FALSE(Allowed("https://evil.example", "chat.example.com"));
  EXPECT_FALSE(Allowed("https://chat.example.com.evil.example", "chat.example.com"));
  EXPECT_FALSE(Allowed("https://example.com", "chat.example.com"));
  EXPECT_FALSE(Allowed("https://sub.chat.example.com", "chat.example.com"));
  EXPECT_FALSE(Allowed("http://[::2]:3000", "[::1]:4000"));
  EXPECT_FALSE(Allowed("https://chat.example.com", "")) << "no Host to compare with";
  EXPECT_FALSE(Allowed("https://chat.example.com", "[::1"));
}

TEST(OriginTest, AnOriginWithoutAHostIsRefusedAndNoOriginIsAllowed) {
  const OriginPolicy list = Allowing({"//example.com"});
  for (const OriginPolicy* p : {static_cast<const OriginPolicy*>(nullptr), &list}) {
    const OriginPolicy policy = p ? *p : OriginPolicy{};
    EXPECT_TRUE(Allowed(std::nullopt, "example.com", policy));
    for (std::string_view origin :
         {"null", "file://", "", "example.com", "https://", "https://user@example.com",
          "https://example.com:99999", "https://example.com:80a", "1http://example.com"}) {
      SCOPED_TRACE(origin);
      EXPECT_FALSE(Allowed(origin, "example.com", policy));
    }
  }
}

TEST(OriginTest, CheckOffAllowsEveryOrigin) {
  const OriginPolicy off = MakeOriginPolicy(false, {}).value();
  EXPECT_TRUE(Allowed("https://evil.example", "shard", off));
  EXPECT_TRUE(Allowed("null", "", off));
  EXPECT_FALSE(MakeOriginPolicy(false, {"//example.com"}).ok()) << "contradicting flags";
}

TEST(OriginTest, AListEntryWithoutSchemeOrPortMatchesAnySchemeAndPort) {
  const OriginPolicy p = Allowing({"//example.com"});
  EXPECT_TRUE(Allowed("http://example.com", "shard", p));
  EXPECT_TRUE(Allowed("https://example.com/", "shard", p));
  EXPECT_TRUE(Allowed("https://example.com:8443", "shard", p));
  EXPECT_TRUE(Allowed("chrome-extension://example.com", "shard", p));
  EXPECT_FALSE(Allowed("https://org1.example.com", "shard", p)) << "no subdomains without *.";
  EXPECT_FALSE(Allowed("https://example.com.evil", "shard", p));
  EXPECT_FALSE(Allowed("https://shard", "shard", p));
}

TEST(OriginTest, AListEntryWithASchemeChecksItAndItsDefaultPort) {
  // As Phoenix's own tests: "http://scheme.com" allows http on port 80 only.
  const OriginPolicy p = Allowing({"http://scheme.com", "HTTPS://Secure.com"});
  EXPECT_TRUE(Allowed("http://scheme.com", "shard", p));
  EXPECT_TRUE(Allowed("http://scheme.com:80", "shard", p));
  EXPECT_FALSE(Allowed("https://scheme.com", "shard", p));
  EXPECT_FALSE(Allowed("http://scheme.com:8080", "shard", p));
  EXPECT_TRUE(Allowed("https://secure.com", "shard", p));
  EXPECT_TRUE(Allowed("https://secure.com:443", "shard", p));
  EXPECT_FALSE(Allowed("https://secure.com:8443", "shard", p));
  EXPECT_FALSE(Allowed("http://secure.com", "shard", p));
}

TEST(OriginTest, AListEntryWithAPortChecksIt) {
  const OriginPolicy p = Allowing({"//port.com:81", "https://both.com:8443"});
  EXPECT_TRUE(Allowed("http://port.com:81", "shard", p));
  EXPECT_TRUE(Allowed("https://port.com:81", "shard", p));
  EXPECT_FALSE(Allowed("http://port.com:82", "shard", p));
  EXPECT_FALSE(Allowed("http://port.com", "shard", p));
  EXPECT_TRUE(Allowed("https://both.com:8443", "shard", p));
  EXPECT_FALSE(Allowed("http://both.com:8443", "shard", p));
  EXPECT_FALSE(Allowed("https://both.com", "shard", p));
}

TEST(OriginTest, AWildcardEntryMatchesSubdomainsAtADotBoundary) {
  const OriginPolicy p = Allowing({"//*.example.com", "https://*.foo.test"});
  EXPECT_TRUE(Allowed("https://a.example.com", "shard", p));
  EXPECT_TRUE(Allowed("http://a.b.example.com:3000", "shard", p));
  // As in Phoenix (1.6.14 on), the wildcard covers the domain itself too.
  EXPECT_TRUE(Allowed("https://example.com", "shard", p));
  // The dot boundary: the fix of Phoenix 1.6.14.
  EXPECT_FALSE(Allowed("https://evilexample.com", "shard", p));
  EXPECT_FALSE(Allowed("https://a.evilexample.com", "shard", p));
  EXPECT_FALSE(Allowed("https://example.com.evil.example", "shard", p));
  EXPECT_FALSE(Allowed("https://xample.com", "shard", p));

  EXPECT_TRUE(Allowed("https://org1.foo.test", "shard", p));
  EXPECT_FALSE(Allowed("http://org1.foo.test", "shard", p));
  EXPECT_FALSE(Allowed("https://org1.bar.test", "shard", p));
}

TEST(OriginTest, MalformedListEntriesAreRefused) {
  for (const char* entry : {"example.com", "", "//", "https://", "//*", "//*.", "//*example.com",
                            "//a.*.example.com", "https://user@example.com", "//example.com:99999",
                            "//example.com:8o", "//[::1", "://example.com"}) {
    SCOPED_TRACE(entry);
    Result<AllowedOrigin> r = ParseAllowedOrigin(entry);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Status::Code::kInvalidConfig);
  }
  Result<AllowedOrigin> r = ParseAllowedOrigin(" HTTPS://*.Example.com:8443/ ");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->scheme, "https");
  EXPECT_EQ(r->host, "example.com");
  EXPECT_TRUE(r->wildcard);
  EXPECT_EQ(r->port, 8443);
  r = ParseAllowedOrigin("//[::1]");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->host, "::1");
  EXPECT_EQ(r->port, std::nullopt);
}

TEST(HttpUpgradeTest, QueryParamsArePercentDecoded) {
  EXPECT_EQ(QueryParam("/p?a=1&b=x%20y+z&c", "b"), "x y z");
  EXPECT_EQ(QueryParam("/p?a=1&b=2&c", "c"), "");
  EXPECT_EQ(QueryParam("/p?a=1", "z"), std::nullopt);
  EXPECT_EQ(QueryParam("/p", "a"), std::nullopt);
  EXPECT_EQ(QueryParam("/p?na%6De=v%2", "name"), "v%2");
}

}  // namespace
}  // namespace sb::worker
