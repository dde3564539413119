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

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace sb::worker {

struct Claims {
  std::string sub;
  std::vector<std::string> topics;  // patterns, see TopicAllowed
  int64_t exp = 0;                  // unix seconds
};

// Verifies `token` (header.payload.signature, base64url without padding)
// against `secret`. The header's "alg" must be "HS256"; the claims must hold
// "sub" (string), "topics" (array of strings) and "exp" (number, unix
// seconds) with exp > now_unix_s. Any failure is Status::Refused with a short
// reason for the log ("token expired", "bad signature", ...); an empty secret
// refuses every token.
Result<Claims> VerifyToken(std::string_view token, std::string_view secret, int64_t now_unix_s);

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
