#include "worker/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <array>
#include <boost/json.hpp>
#include <climits>
#include <cmath>
#include <exception>
#include <optional>

namespace sb::worker {
namespace {

constexpr size_t kSha256Size = 32;

// -1 for bytes outside the alphabet whose last two characters are c62, c63.
constexpr std::array<int8_t, 256> MakeBase64Table(char c62, char c63) {
  std::array<int8_t, 256> t{};
  for (auto& v : t) v = -1;
  for (int i = 0; i < 26; ++i) t['A' + i] = static_cast<int8_t>(i);
  for (int i = 0; i < 26; ++i) t['a' + i] = static_cast<int8_t>(26 + i);
  for (int i = 0; i < 10; ++i) t['0' + i] = static_cast<int8_t>(52 + i);
  t[static_cast<unsigned char>(c62)] = 62;
  t[static_cast<unsigned char>(c63)] = 63;
  return t;
}
constexpr std::array<int8_t, 256> kBase64Url = MakeBase64Table('-', '_');
constexpr std::array<int8_t, 256> kBase64Std = MakeBase64Table('+', '/');

bool DecodeUnpadded(const std::array<int8_t, 256>& table, std::string_view in, std::string* out) {
  out->clear();
  if (in.size() % 4 == 1) return false;
  out->reserve(in.size() / 4 * 3 + 2);
  uint32_t bits = 0;
  int nbits = 0;
  for (char c : in) {
    int8_t v = table[static_cast<unsigned char>(c)];
    if (v < 0) return false;
    bits = (bits << 6) | static_cast<uint32_t>(v);
    nbits += 6;
    if (nbits >= 8) {
      nbits -= 8;
      out->push_back(static_cast<char>((bits >> nbits) & 0xff));
    }
  }
  // 2 or 4 bits may remain after the last byte; an encoder leaves them zero.
  return (bits & ((1u << nbits) - 1)) == 0;
}

std::optional<boost::json::object> ParseObject(std::string_view text) {
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(boost::json::string_view(text.data(), text.size()), ec);
  if (ec || !v.is_object()) return std::nullopt;
  return std::move(v.get_object());
}

// exp as whole unix seconds; fractional values round down, as the claim is
// compared with whole seconds anyway.
std::optional<int64_t> ToUnixSeconds(const boost::json::value& v) {
  if (v.is_int64()) return v.get_int64();
  if (v.is_uint64())
    return v.get_uint64() > INT64_MAX ? INT64_MAX : static_cast<int64_t>(v.get_uint64());
  if (v.is_double()) {
    double d = v.get_double();
    if (!std::isfinite(d)) return std::nullopt;
    if (d >= 9.2e18) return INT64_MAX;
    if (d <= -9.2e18) return INT64_MIN;
    return static_cast<int64_t>(std::floor(d));
  }
  return std::nullopt;
}

// A refusal of kind `f`, noted in `*failure`.
Status Refuse(TokenFailure* failure, TokenFailure f, std::string why) {
  *failure = f;
  return f == TokenFailure::kError ? Status::Internal(std::move(why))
                                   : Status::Refused(std::move(why));
}

// True if "aud" (a string or an array of strings) names `audience`.
bool AudienceNames(const boost::json::value& aud, std::string_view audience) {
  if (aud.is_string()) return aud.get_string() == audience;
  if (!aud.is_array()) return false;
  for (const auto& a : aud.get_array()) {
    if (a.is_string() && a.get_string() == audience) return true;
  }
  return false;
}

Result<Claims> Verify(std::string_view token, const TokenRules& rules, int64_t now_unix_s,
                      TokenFailure* failure) {
  const std::string& secret = rules.secret;
  if (Status s = CheckTokenSecret(secret); !s.ok()) {
    return Refuse(failure, TokenFailure::kError, s.message());
  }
  if (secret.size() > INT_MAX) {
    return Refuse(failure, TokenFailure::kError, "token secret too long");
  }
  size_t dot1 = token.find('.');
  size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    return Refuse(failure, TokenFailure::kMalformed, "token malformed: not three parts");
  }
  std::string_view header_b64 = token.substr(0, dot1);
  std::string_view claims_b64 = token.substr(dot1 + 1, dot2 - dot1 - 1);
  std::string_view signature_b64 = token.substr(dot2 + 1);

  std::string header_text;
  if (!DecodeBase64Url(header_b64, &header_text)) {
    return Refuse(failure, TokenFailure::kMalformed, "token malformed: header is not base64url");
  }
  auto header = ParseObject(header_text);
  if (!header) {
    return Refuse(failure, TokenFailure::kMalformed,
                  "token malformed: header is not a JSON object");
  }
  const boost::json::value* alg = header->if_contains("alg");
  if (alg == nullptr || !alg->is_string() || alg->get_string() != "HS256") {
    return Refuse(failure, TokenFailure::kAlgorithm, "token algorithm is not HS256");
  }

  std::string signature;
  if (!DecodeBase64Url(signature_b64, &signature)) {
    return Refuse(failure, TokenFailure::kMalformed, "token malformed: signature is not base64url");
  }
  std::array<unsigned char, EVP_MAX_MD_SIZE> mac{};
  unsigned int mac_size = 0;
  std::string_view signed_part = token.substr(0, dot2);
  if (HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
           reinterpret_cast<const unsigned char*>(signed_part.data()), signed_part.size(),
           mac.data(), &mac_size) == nullptr ||
      mac_size != kSha256Size) {
    return Refuse(failure, TokenFailure::kError, "HMAC-SHA256 failed");
  }
  if (signature.size() != kSha256Size ||
      CRYPTO_memcmp(signature.data(), mac.data(), kSha256Size) != 0) {
    return Refuse(failure, TokenFailure::kSignature, "token signature does not match");
  }

  // Claims are read only once the signature vouches for them.
  std::string claims_text;
  if (!DecodeBase64Url(claims_b64, &claims_text)) {
    return Refuse(failure, TokenFailure::kMalformed, "token malformed: claims are not base64url");
  }
  auto claims = ParseObject(claims_text);
  if (!claims) {
    return Refuse(failure, TokenFailure::kMalformed,
                  "token malformed: claims are not a JSON object");
  }
  Claims out;
  const boost::json::value* sub = claims->if_contains("sub");
  if (sub == nullptr || !sub->is_string()) {
    return Refuse(failure, TokenFailure::kClaims, "token claim 'sub' missing");
  }
  out.sub = std::string(sub->get_string());
  const boost::json::value* topics = claims->if_contains("topics");
  if (topics == nullptr || !topics->is_array()) {
    return Refuse(failure, TokenFailure::kClaims, "token claim 'topics' missing");
  }
  for (const auto& t : topics->get_array()) {
    if (!t.is_string()) {
      return Refuse(failure, TokenFailure::kClaims, "token claim 'topics' is not all strings");
    }
    out.topics.emplace_back(t.get_string());
  }
  const boost::json::value* exp = claims->if_contains("exp");
  std::optional<int64_t> exp_s = exp == nullptr ? std::nullopt : ToUnixSeconds(*exp);
  if (!exp_s) return Refuse(failure, TokenFailure::kClaims, "token claim 'exp' missing");
  // nbf is optional (RFC 7519 §4.1.5), but one that is there must be a time.
  const boost::json::value* nbf = claims->if_contains("nbf");
  std::optional<int64_t> nbf_s = nbf == nullptr ? std::nullopt : ToUnixSeconds(*nbf);
  if (nbf != nullptr && !nbf_s) {
    return Refuse(failure, TokenFailure::kClaims, "token claim 'nbf' is not a number");
  }
  if (*exp_s <= now_unix_s) return Refuse(failure, TokenFailure::kExpired, "token expired");
  if (nbf_s && *nbf_s > now_unix_s) {
    return Refuse(failure, TokenFailure::kNotYetValid, "token not valid yet (nbf)");
  }
  if (!rules.audience.empty()) {
    const boost::json::value* aud = claims->if_contains("aud");
    if (aud == nullptr || !AudienceNames(*aud, rules.audience)) {
      return Refuse(failure, TokenFailure::kAudience,
                    "token claim 'aud' does not name this audience");
    }
  }
  if (!rules.issuer.empty()) {
    const boost::json::value* iss = claims->if_contains("iss");
    if (iss == nullptr || !iss->is_string() || iss->get_string() != rules.issuer) {
      return Refuse(failure, TokenFailure::kIssuer, "token claim 'iss' is not the expected issuer");
    }
  }
  out.exp = *exp_s;
  return out;
}

}  // namespace

bool DecodeBase64Url(std::string_view in, std::string* out) {
  return DecodeUnpadded(kBase64Url, in, out);
}

bool DecodeUnpaddedBase64(std::string_view in, std::string* out) {
  return DecodeUnpadded(kBase64Std, in, out);
}

Status CheckTokenSecret(std::string_view secret) {
  if (secret.size() < kMinSecretBytes) {
    return Status::InvalidConfig("the secret is " + std::to_string(secret.size()) +
                                 " bytes, shorter than " + std::to_string(kMinSecretBytes));
  }
  return Status::Ok();
}

Result<Claims> VerifyToken(std::string_view token, const TokenRules& rules, int64_t now_unix_s,
                           TokenFailure* failure) {
  TokenFailure ignored = TokenFailure::kError;
  if (failure == nullptr) failure = &ignored;
  // Boost.JSON throws only on allocation failure or size limits; no
  // exception leaves this module.
  try {
    return Verify(token, rules, now_unix_s, failure);
  } catch (const std::exception& e) {
    return Refuse(failure, TokenFailure::kError, std::string("token verification: ") + e.what());
  }
}

bool TopicAllowed(const std::vector<std::string>& patterns, std::string_view topic) {
  for (const std::string& p : patterns) {
    if (!p.empty() && p.back() == '*') {
      if (topic.starts_with(std::string_view(p).substr(0, p.size() - 1))) return true;
    } else if (topic == p) {
      return true;
    }
  }
  return false;
}

}  // namespace sb::worker
