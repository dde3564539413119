// Token verification (HS256 JWT) and topic patterns.

#include "worker/auth.h"

#include <gtest/gtest.h>

#include <string>

#include "worker/test_tokens.h"

namespace sb::worker {
namespace {

constexpr int64_t kNow = 1'800'000'000;
constexpr std::string_view kSecret = "s3cret-key";

using test_tokens::B64Url;

std::string MakeToken(std::string_view claims, std::string_view secret = kSecret,
                      std::string_view header = R"({"alg":"HS256","typ":"JWT"})") {
  return test_tokens::MakeToken(claims, secret, header);
}

const std::string kClaims = R"({"sub":"alice","topics":["room:*","lobby"],"exp":1800000060})";

void ExpectRefused(const Result<Claims>& r, std::string_view reason_part) {
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kRefused);
  EXPECT_NE(r.status().message().find(reason_part), std::string::npos) << r.status().message();
}

TEST(AuthTest, ValidTokenGivesItsClaims) {
  auto r = VerifyToken(MakeToken(kClaims), kSecret, kNow);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->sub, "alice");
  EXPECT_EQ(r->topics, (std::vector<std::string>{"room:*", "lobby"}));
  EXPECT_EQ(r->exp, 1'800'000'060);
}

TEST(AuthTest, ExtraClaimsAndHeaderFieldsAreIgnored) {
  auto r = VerifyToken(
      MakeToken(R"({"iat":1,"sub":"bob","name":"B","topics":[],"exp":1800000001,"x":{"y":[]}})",
                kSecret, R"({"typ":"JWT","kid":"k1","alg":"HS256"})"),
      kSecret, kNow);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->sub, "bob");
  EXPECT_TRUE(r->topics.empty());
}

TEST(AuthTest, ExpiredTokenIsRefused) {
  ExpectRefused(
      VerifyToken(MakeToken(R"({"sub":"a","topics":[],"exp":1799999999})"), kSecret, kNow),
      "expired");
  // exp is the first second the token is no longer valid.
  ExpectRefused(
      VerifyToken(MakeToken(R"({"sub":"a","topics":[],"exp":1800000000})"), kSecret, kNow),
      "expired");
  EXPECT_TRUE(
      VerifyToken(MakeToken(R"({"sub":"a","topics":[],"exp":1800000001})"), kSecret, kNow).ok());
}

TEST(AuthTest, FractionalAndHugeExpAreNumbersToo) {
  auto r = VerifyToken(MakeToken(R"({"sub":"a","topics":[],"exp":1800000000.5})"), kSecret, kNow);
  ExpectRefused(r, "expired");  // rounds down to now
  r = VerifyToken(MakeToken(R"({"sub":"a","topics":[],"exp":1800000001.5})"), kSecret, kNow);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exp, 1'800'000'001);
  r = VerifyToken(MakeToken(R"({"sub":"a","topics":[],"exp":18446744073709551615})"), kSecret,
                  kNow);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exp, INT64_MAX);
  r = VerifyToken(MakeToken(R"({"sub":"a","topics":[],"exp":1e300})"), kSecret, kNow);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exp, INT64_MAX);
  ExpectRefused(VerifyToken(MakeToken(R"({"sub":"a","topics":[],"exp":-1e300})"), kSecret, kNow),
                "expired");
}

TEST(AuthTest, WrongSecretIsRefused) {
  ExpectRefused(VerifyToken(MakeToken(kClaims, "other-key"), kSecret, kNow), "signature");
}

TEST(AuthTest, TamperedClaimsAreRefused) {
  std::string token = MakeToken(kClaims);
  std::string forged_claims = B64Url(R"({"sub":"alice","topics":["*"],"exp":1800000060})");
  size_t dot1 = token.find('.');
  size_t dot2 = token.find('.', dot1 + 1);
  std::string forged = token.substr(0, dot1 + 1) + forged_claims + token.substr(dot2);
  ExpectRefused(VerifyToken(forged, kSecret, kNow), "signature");
}

TEST(AuthTest, TruncatedOrExtendedSignatureIsRefused) {
  std::string token = MakeToken(kClaims);
  ExpectRefused(VerifyToken(token.substr(0, token.size() - 4), kSecret, kNow), "signature");
  ExpectRefused(VerifyToken(token + "AAAA", kSecret, kNow), "signature");
  std::string no_signature = token.substr(0, token.rfind('.') + 1);
  ExpectRefused(VerifyToken(no_signature, kSecret, kNow), "signature");
}

TEST(AuthTest, AlgNoneIsRefused) {
  std::string unsigned_token =
      B64Url(R"({"alg":"none","typ":"JWT"})") + "." + B64Url(kClaims) + ".";
  ExpectRefused(VerifyToken(unsigned_token, kSecret, kNow), "HS256");
  // Even with a valid HMAC, the header decides nothing but must say HS256.
  ExpectRefused(VerifyToken(MakeToken(kClaims, kSecret, R"({"alg":"none"})"), kSecret, kNow),
                "HS256");
}

TEST(AuthTest, OtherAlgorithmsAreRefused) {
  for (const char* header : {R"({"alg":"HS512"})", R"({"alg":"RS256"})", R"({"alg":"hs256"})",
                             R"({"alg":["HS256"]})", R"({"typ":"JWT"})", R"({"alg":null})"}) {
    ExpectRefused(VerifyToken(MakeToken(kClaims, kSecret, header), kSecret, kNow), "HS256");
  }
}

TEST(AuthTest, MalformedTokensAreRefused) {
  std::string token = MakeToken(kClaims);
  ExpectRefused(VerifyToken("", kSecret, kNow), "malformed");
  ExpectRefused(VerifyToken("abc", kSecret, kNow), "malformed");
  ExpectRefused(VerifyToken(token.substr(0, token.rfind('.')), kSecret, kNow), "malformed");
  ExpectRefused(VerifyToken(token + ".x", kSecret, kNow), "malformed");
  // Padding, the standard alphabet and stray characters are not base64url.
  ExpectRefused(VerifyToken("=" + token, kSecret, kNow), "malformed");
  ExpectRefused(VerifyToken("+" + token.substr(1), kSecret, kNow), "malformed");
  ExpectRefused(VerifyToken(token + "=", kSecret, kNow), "malformed");
  ExpectRefused(VerifyToken(token.substr(0, token.size() - 1) + "/", kSecret, kNow), "malformed");
  ExpectRefused(VerifyToken(" " + token, kSecret, kNow), "malformed");
  // A header that decodes but is not a JSON object.
  ExpectRefused(VerifyToken(B64Url("[1]") + "." + B64Url(kClaims) + ".AAAA", kSecret, kNow),
                "malformed");
  ExpectRefused(VerifyToken(B64Url("{") + "." + B64Url(kClaims) + ".AAAA", kSecret, kNow),
                "malformed");
}

TEST(AuthTest, SignedButMalformedClaimsAreRefused) {
  ExpectRefused(VerifyToken(MakeToken("not json"), kSecret, kNow), "malformed");
  ExpectRefused(VerifyToken(MakeToken("[]"), kSecret, kNow), "malformed");
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
    ExpectRefused(VerifyToken(MakeToken(c.claims), kSecret, kNow), c.reason);
  }
}

TEST(AuthTest, EmptySecretRefusesEverything) {
  ExpectRefused(VerifyToken(MakeToken(kClaims, ""), "", kNow), "secret");
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
