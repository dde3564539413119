// Test helper: HS256 tokens built independently of worker/auth (OpenSSL's
// HMAC and a plain base64url encoder), for the unit tests of auth and of the
// HTTP upgrade. Not linked into any program.
#pragma once

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace sb::worker::test_tokens {

inline std::string B64Url(std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  uint32_t bits = 0;
  int nbits = 0;
  for (unsigned char c : bytes) {
    bits = (bits << 8) | c;
    nbits += 8;
    while (nbits >= 6) {
      nbits -= 6;
      out += kAlphabet[(bits >> nbits) & 63];
    }
  }
  if (nbits > 0) out += kAlphabet[(bits << (6 - nbits)) & 63];
  return out;
}

inline std::string Sign(std::string_view signed_part, std::string_view secret) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(signed_part.data()), signed_part.size(), mac, &size);
  return B64Url(std::string_view(reinterpret_cast<const char*>(mac), size));
}

inline std::string MakeToken(std::string_view claims, std::string_view secret,
                             std::string_view header = R"({"alg":"HS256","typ":"JWT"})") {
  std::string signed_part = B64Url(header) + "." + B64Url(claims);
  return signed_part + "." + Sign(signed_part, secret);
}

}  // namespace sb::worker::test_tokens
