// Token verification (HS256 JWT) and topic patterns.

#include "worker/auth.h"

#include <gtest/gtest.h>

#include <string>

#include "worker/test_tokens.h"

namespace sb::worker {
namespace {

constexpr int64_t kNow = 1'800'000'000;
// Exactly kMinSecretBytes long.
constexpr std::string_view kSecret = "s3cret-key-of-thirty-two-bytes!!";
const TokenRules kRules{std::string(kSecret), "", ""};

using test_tokens::B64Url;

std::string MakeToken(std::string_view claims, std::string_view secret = kSecret,
                      std::string_view header = R"({"alg":"HS256","typ":"JWT"})") {
  return test_tokens::MakeToken(claims, secret, header);
}

const std::string kClaims = R"({"sub":"alice","topics":["room:*","lobby"],"exp":1800000060})";

// `token` is refused under `rules` for `failure`, with `reason_part` in the
// message for the log.
void ExpectRefused(std::string_view token, TokenFailure failure, std::string_view reason_part,
                   const TokenRules& rules = kRules) {
  TokenFailure got = TokenFailure::kCount;
  Result<Claims> r = VerifyToken(token, rules, kNow, &got);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(),
            failure == TokenFailure::kError ? Status::Code::kInternal : Status::Code::kRefused);
  EXPECT_EQ(static_cast<int>(got), static_cast<int>(failure)) << r.status().message();
  EXPECT_NE(r.status().message().find(reason_part), std::string::npos) << r.status().message();
}

TEST(AuthTest, SecretsShorterThan32BytesAreRefused) {
  EXPECT_TRUE(CheckTokenSecret(kSecret).ok());
  EXPECT_TRUE(CheckTokenSecret(std::string(100, 'x')).ok());
  Status s = CheckTokenSecret(kSecret.substr(1));
  EXPECT_EQ(s.code(), Status::Code::kInvalidConfig);
  EXPECT_NE(s.message().find("31 bytes"), std::string::npos) << s.message();
  EXPECT_FALSE(CheckTokenSecret("").ok());
}

TEST(AuthTest, ValidTokenGivesItsClaims) {
  auto r = VerifyToken(MakeToken(kClaims), kRules, kNow);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->sub, "alice");
  EXPECT_EQ(r->topics, (std::vector<std::string>{"room:*", "lobby"}));
  EXPECT_EQ(r->exp, 1'800'000'060);
}

TEST(AuthTest, ExtraClaimsAndHeaderFieldsAreIgnored) {
  auto r = VerifyToken(
      MakeToken(R"({"iat":1,"sub":"bob","name":"B","topics":[],"exp":1800000001,"x":{"y":[]}})",
                kSecret, R"({"typ":"JWT","kid":"k1","alg":"HS256"})"),
      kRules, kNow);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->sub, "bob");
  EXPECT_TRUE(r->topics.empty());
}

TEST(AuthTest, ExpiredTokenIsRefused) {
  ExpectRefused(MakeToken(R"({"sub":"a","topics":[],"exp":1799999999})"), TokenFailure::kExpired,
                "expired");
  // exp is the first second the token is no longer valid.
  ExpectRefused(MakeToken(R"({"sub":"a","topics":[],"exp":1800000000})"), TokenFailure::kExpired,
                "expired");
  EXPECT_TRUE(
      VerifyToken(MakeToken(R"({"sub":"a","topics":[],"exp":1800000001})"), kRules, kNow).ok());
}

TEST(AuthTest, FractionalAndHugeExpAreNumbersToo) {
  // Rounds down to now.
  ExpectRefused(MakeToken(R"({"sub":"a","topics":[],"exp":1800000000.5})"), TokenFailure::kExpired,
                "expired");
  auto r = VerifyToken(MakeToken(R"({"sub":"a","topics":[],"exp":1800000001.5})"), kRules, kNow);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exp, 1'800'000'001);
  r = VerifyToken(MakeToken(R"({"sub":"a","topics":[],"exp":18446744073709551615})"), kRules, kNow);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exp, INT64_MAX);
  r = VerifyToken(MakeToken(R"({"sub":"a","topics":[],"exp":1e300})"), kRules, kNow);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exp, INT64_MAX);
  ExpectRefused(MakeToken(R"({"sub":"a","topics":[],"exp":-1e300})"), TokenFailure::kExpired,
                "expired");
}

TEST(AuthTest, WrongSecretIsRefused) {
  ExpectRefused(MakeToken(kClaims, "other-key"), TokenFailure::kSignature, "signature");
}

TEST(AuthTest, TamperedClaimsAreRefused) {
  std::string token = MakeToken(kClaims);
  std::string forged_claims = B64Url(R"({"sub":"alice","topics":["*"],"exp":1800000060})");
  size_t dot1 = token.find('.');
  size_t dot2 = token.find('.', dot1 + 1);
  std::string forged = token.substr(0, dot1 + 1) + forged_claims + token.substr(dot2);
  ExpectRefused(forged, TokenFailure::kSignature, "signature");
}

TEST(AuthTest, TruncatedOrExtendedSignatureIsRefused) {
  std::string token = MakeToken(kClaims);
  const size_t dot = token.rfind('.');
  std::string mac;
  ASSERT_TRUE(DecodeBase64Url(token.substr(dot + 1), &mac));
  ASSERT_EQ(mac.size(), 32u);
  ExpectRefused(token.substr(0, dot + 1) + B64Url(mac.substr(0, 30)), TokenFailure::kSignature,
                "signature");
  ExpectRefused(token + "AAAA", TokenFailure::kSignature, "signature");
  std::string no_signature = token.substr(0, token.rfind('.') + 1);
  ExpectRefused(no_signature, TokenFailure::kSignature, "signature");
}

TEST(AuthTest, AlgNoneIsRefused) {
  std::string unsigned_token =
      B64Url(R"({"alg":"none","typ":"JWT"})") + "." + B64Url(kClaims) + ".";
  ExpectRefused(unsigned_token, TokenFailure::kAlgorithm, "HS256");
  // Even with a valid HMAC, the header decides nothing but must say HS256.
  ExpectRefused(MakeToken(kClaims, kSecret, R"({"alg":"none"})"), TokenFailure::kAlgorithm,
                "HS256");
}

TEST(AuthTest, OtherAlgorithmsAreRefused) {
  for (const char* header : {R"({"alg":"HS512"})", R"({"alg":"RS256"})", R"({"alg":"hs256"})",
                             R"({"alg":["HS256"]})", R"({"typ":"JWT"})", R"({"alg":null})"}) {
    ExpectRefused(MakeToken(kClaims, kSecret, header), TokenFailure::kAlgorithm, "HS256");
  }
}

TEST(AuthTest, MalformedTokensAreRefused) {
  std::string token = MakeToken(kClaims);
  ExpectRefused("", TokenFailure::kMalformed, "malformed");
  ExpectRefused("abc", TokenFailure::kMalformed, "malformed");
  ExpectRefused(token.substr(0, token.rfind('.')), TokenFailure::kMalformed, "malformed");
  ExpectRefused(token + ".x", TokenFailure::kMalformed, "malformed");
  // Padding, the standard alphabet and stray characters are not base64url.
  ExpectRefused("=" + token, TokenFailure::kMalformed, "malformed");
  ExpectRefused("+" + token.substr(1), TokenFailure::kMalformed, "malformed");
  ExpectRefused(token + "=", TokenFailure::kMalformed, "malformed");
  ExpectRefused(token.substr(0, token.size() - 1) + "/", TokenFailure::kMalformed, "malformed");
  ExpectRefused(" " + token, TokenFailure::kMalformed, "malformed");
  // A header that decodes but is not a JSON object.
  ExpectRefused(B64Url("[1]") + "." + B64Url(kClaims) + ".AAAA", TokenFailure::kMalformed,
                "malformed");
  ExpectRefused(B64Url("{") + "." + B64Url(kClaims) + ".AAAA", TokenFailure::kMalformed,
                "malformed");
}

TEST(AuthTest, SignedButMalformedClaimsAreRefused) {
  ExpectRefused(MakeToken("not json"), TokenFailure::kMalformed, "malformed");
  ExpectRefused(MakeToken("[]"), TokenFailure::kMalformed, "malformed");
}

TEST(AuthTest, MissingOrMistypedClaimsAreRefused) {
  struct Case {
    const char* claims;
    const char* reason;
  };
  for (const Case& c : {
           Case{R"({"topics":[],"exp":1900000000})", "'sub'"},
           Case{R"({"sub":7,"topics":[],"exp":1900000000})", "'sub'"},
           Case{R"({"sub":null,"topics":[],"exp":1900000000})", "'sub'"},
           Case{R"({"sub":"a","exp":1900000000})", "'topics'"},
           Case{R"({"sub":"a","topics":"room:*","exp":1900000000})", "'topics'"},
           Case{R"({"sub":"a","topics":["room:*",3],"exp":1900000000})", "'topics'"},
           Case{R"({"sub":"a","topics":[]})", "'exp'"},
           Case{R"({"sub":"a","topics":[],"exp":"1900000000"})", "'exp'"},
           Case{R"({"sub":"a","topics":[],"exp":null})", "'exp'"},
       }) {
    SCOPED_TRACE(c.claims);
    ExpectRefused(MakeToken(c.claims), TokenFailure::kClaims, c.reason);
  }
}

TEST(AuthTest, AShortOrEmptySecretRefusesEverything) {
  ExpectRefused(MakeToken(kClaims, ""), TokenFailure::kError, "secret", TokenRules{});
  const std::string short_secret(kSecret.substr(0, kMinSecretBytes - 1));
  ExpectRefused(MakeToken(kClaims, short_secret), TokenFailure::kError, "secret",
                TokenRules{short_secret, "", ""});
}

TEST(AuthTest, NotBeforeIsCheckedWhenPresent) {
  // nbf is the first second the token is valid.
  EXPECT_TRUE(VerifyToken(MakeToken(R"({"sub":"a","topics":[],"exp":1800000060,"nbf":1800000000})"),
                          kRules, kNow)
                  .ok());
  EXPECT_TRUE(
      VerifyToken(MakeToken(R"({"sub":"a","topics":[],"exp":1800000060,"nbf":1})"), kRules, kNow)
          .ok());
  ExpectRefused(MakeToken(R"({"sub":"a","topics":[],"exp":1800000060,"nbf":1800000001})"),
                TokenFailure::kNotYetValid, "nbf");
  ExpectRefused(MakeToken(R"({"sub":"a","topics":[],"exp":1800000060,"nbf":1e300})"),
                TokenFailure::kNotYetValid, "nbf");
  for (const char* nbf : {R"("1")", "null", "[]", "{}", "true"}) {
    SCOPED_TRACE(nbf);
    ExpectRefused(
        MakeToken(std::string(R"({"sub":"a","topics":[],"exp":1800000060,"nbf":)") + nbf + "}"),
        TokenFailure::kClaims, "'nbf'");
  }
}

TEST(AuthTest, AudienceIsCheckedOnlyWhenConfigured) {
  TokenRules rules = kRules;
  rules.audience = "switchboard";
  const std::string base = R"({"sub":"a","topics":[],"exp":1800000060)";
  auto verify = [&](const std::string& extra) {
    return VerifyToken(MakeToken(base + extra + "}"), rules, kNow);
  };
  EXPECT_TRUE(verify(R"(,"aud":"switchboard")").ok());
  EXPECT_TRUE(verify(R"(,"aud":["other","switchboard"])").ok());
  for (const char* extra :
       {"", R"(,"aud":"other")", R"(,"aud":"Switchboard")", R"(,"aud":["other"])", R"(,"aud":[])",
        R"(,"aud":null)", R"(,"aud":7)", R"(,"aud":{"switchboard":1})"}) {
    SCOPED_TRACE(extra);
    ExpectRefused(MakeToken(base + extra + "}"), TokenFailure::kAudience, "'aud'", rules);
  }
  // Without --token-audience the claim is not read, whatever it holds.
  EXPECT_TRUE(VerifyToken(MakeToken(base + R"(,"aud":7})"), kRules, kNow).ok());
}

TEST(AuthTest, IssuerIsCheckedOnlyWhenConfigured) {
  TokenRules rules = kRules;
  rules.issuer = "https://auth.example.com";
  const std::string base = R"({"sub":"a","topics":[],"exp":1800000060)";
  EXPECT_TRUE(
      VerifyToken(MakeToken(base + R"(,"iss":"https://auth.example.com"})"), rules, kNow).ok());
  for (const char* extra : {"", R"(,"iss":"https://auth.example.com/")", R"(,"iss":"")",
                            R"(,"iss":["https://auth.example.com"])", R"(,"iss":null)"}) {
    SCOPED_TRACE(extra);
    ExpectRefused(MakeToken(base + extra + "}"), TokenFailure::kIssuer, "'iss'", rules);
  }
  EXPECT_TRUE(VerifyToken(MakeToken(base + R"(,"iss":null})"), kRules, kNow).ok());
}

TEST(AuthTest, EveryCheckHoldsWithAudienceAndIssuerSet) {
  TokenRules rules = kRules;
  rules.audience = "switchboard";
  rules.issuer = "auth";
  const std::string ok =
      R"({"sub":"a","topics":[],"exp":1800000060,"aud":"switchboard","iss":"auth"})";
  EXPECT_TRUE(VerifyToken(MakeToken(ok), rules, kNow).ok());
  // A good audience and issuer do not excuse an expired or forged token.
  ExpectRefused(MakeToken(R"({"sub":"a","topics":[],"exp":1,"aud":"switchboard","iss":"auth"})"),
                TokenFailure::kExpired, "expired", rules);
  ExpectRefused(MakeToken(ok, "another-secret-of-at-least-32-bytes"), TokenFailure::kSignature,
                "signature", rules);
}

TEST(AuthTest, DecodeBase64UrlVectors) {
  // RFC 4648 §10, without padding.
  const std::pair<const char*, const char*> vectors[] = {
      {"", ""},           {"Zg", "f"},          {"Zm8", "fo"},          {"Zm9v", "foo"},
      {"Zm9vYg", "foob"}, {"Zm9vYmE", "fooba"}, {"Zm9vYmFy", "foobar"},
  };
  for (const auto& [in, expected] : vectors) {
    std::string out;
    EXPECT_TRUE(DecodeBase64Url(in, &out)) << in;
    EXPECT_EQ(out, expected) << in;
  }
  std::string out;
  ASSERT_TRUE(DecodeBase64Url("-_-_", &out));
  EXPECT_EQ(out, "\xfb\xff\xbf");
  EXPECT_FALSE(DecodeBase64Url("Z", &out));     // 6 bits make no byte
  EXPECT_FALSE(DecodeBase64Url("Zh", &out));    // leftover bits not zero
  EXPECT_FALSE(DecodeBase64Url("Zm9=", &out));  // padding
  EXPECT_FALSE(DecodeBase64Url("Zm+v", &out));  // standard alphabet
  EXPECT_FALSE(DecodeBase64Url("Zm\x80v", &out));
  EXPECT_FALSE(DecodeBase64Url(std::string_view("Zm\0v", 4), &out));
}

TEST(AuthTest, TopicPatterns) {
  const std::vector<std::string> patterns = {"lobby", "room:*", "a*b"};
  EXPECT_TRUE(TopicAllowed(patterns, "lobby"));
  EXPECT_FALSE(TopicAllowed(patterns, "lobby:1"));
  EXPECT_FALSE(TopicAllowed(patterns, "lobb"));
  EXPECT_TRUE(TopicAllowed(patterns, "room:1"));
  EXPECT_TRUE(TopicAllowed(patterns, "room:"));
  EXPECT_TRUE(TopicAllowed(patterns, "room:a:b*"));
  EXPECT_FALSE(TopicAllowed(patterns, "room"));
  EXPECT_FALSE(TopicAllowed(patterns, "Room:1"));
  // Only a final '*' is a wildcard.
  EXPECT_TRUE(TopicAllowed(patterns, "a*b"));
  EXPECT_FALSE(TopicAllowed(patterns, "axb"));
  EXPECT_FALSE(TopicAllowed(patterns, ""));

  EXPECT_TRUE(TopicAllowed({"*"}, "anything:at:all"));
  EXPECT_TRUE(TopicAllowed({"*"}, ""));
  EXPECT_FALSE(TopicAllowed({}, "lobby"));
  EXPECT_TRUE(TopicAllowed({""}, ""));
  EXPECT_FALSE(TopicAllowed({""}, "lobby"));
}

}  // namespace
}  // namespace sb::worker
