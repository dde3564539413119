// Token authentication for the gateway: HS256 JWTs and topic patterns.
//
// Owns: verifying a compact JWT (header, claims, HMAC-SHA256 signature with a
// shared secret) into the claims Switchboard uses, and matching a topic
// against the token's patterns. Does not: find the token in a request (the
// gateway takes it from the query or the subprotocol), read the secret file,
// or keep state. Pure functions, callable from any thread.
//
// Only HS256 is accepted: the algorithm is fixed here, never chosen by the
// token, so "alg":"none" and algorithm-confusion tokens are refused.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace sb::worker {

// An HMAC-SHA256 key shorter than its 32-byte output is weaker than the
// signature it makes, and short secrets are the ones people guess (RFC 7518
// §3.2 requires at least this much).
inline constexpr size_t kMinSecretBytes = 32;

struct Claims {
  std::string sub;
  std::vector<std::string> topics;  // patterns, see TopicAllowed
  int64_t exp = 0;                  // unix seconds
};

// What a token must satisfy besides its signature.
struct TokenRules {
  std::string secret;    // the HS256 key; see CheckTokenSecret
  std::string audience;  // not empty: the "aud" claim must name it
  std::string issuer;    // not empty: the "iss" claim must equal it
};

// Why a token was refused: the `reason` label of the refusal counter. The
// client is never told which one (every refusal gets the same answer), so a
// caller probing with tokens learns nothing about the checks.
enum class TokenFailure : uint8_t {
  kMissing,      // no token in the request (decided by the caller)
  kMalformed,    // not three base64url parts, or a part that is not a JSON object
  kAlgorithm,    // the header's alg is not HS256
  kSignature,    // the HMAC does not match
  kClaims,       // sub, topics or exp missing; a claim of the wrong type
  kExpired,      // exp <= now
  kNotYetValid,  // nbf > now
  kAudience,     // aud missing or not naming TokenRules::audience
  kIssuer,       // iss missing or not TokenRules::issuer
  kError,        // the shard could not check it (secret unusable, HMAC failed)
  kCount
};

// Ok if `secret` may sign tokens: at least kMinSecretBytes. The shard refuses
// to start otherwise.
Status CheckTokenSecret(std::string_view secret);

// Verifies `token` (header.payload.signature, base64url without padding)
// against `rules`. The header's "alg" must be "HS256"; the claims must hold
// "sub" (string), "topics" (array of strings) and "exp" (number, unix
// seconds) with exp > now_unix_s. When present, "nbf" (number) must be
// <= now_unix_s. When rules.audience is set, "aud" (a string, or an array of
// strings, RFC 7519 §4.1.3) must name it; when rules.issuer is set, "iss"
// must equal it; otherwise those claims are not read. Claims are read only
// once the signature matches. Any failure is a non-ok Status with a short
// reason for the log ("token expired", ...), and `*failure` (when not null)
// says which check failed. A secret that fails CheckTokenSecret refuses every
// token.
Result<Claims> VerifyToken(std::string_view token, const TokenRules& rules, int64_t now_unix_s,
                           TokenFailure* failure = nullptr);

// True if `topic` matches one of `patterns`: a pattern is an exact topic, or
// a prefix followed by a final '*' ("room:*" matches "room:1" and "room:";
// "*" matches every topic). A '*' anywhere else is an ordinary character.
bool TopicAllowed(const std::vector<std::string>& patterns, std::string_view topic);

// Decodes base64url without padding (RFC 4648 §5, as JWTs use it). False on
// any character outside the alphabet, '=' padding, an impossible length, or
// non-zero bits left over after the last byte.
bool DecodeBase64Url(std::string_view in, std::string* out);
// The same for the standard alphabet ('+', '/') with the padding stripped:
// how phoenix.js sends an authToken in its subprotocol (btoa, '=' removed).
bool DecodeUnpaddedBase64(std::string_view in, std::string* out);

}  // namespace sb::worker
