#include "common/curve.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "common/key_file.h"
#include "common/unique_fd.h"

namespace sb::curve {

namespace {
constexpr std::string_view kZ85Alphabet =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
}  // namespace

Result<Keypair> Generate() {
  char pub[kZ85KeyChars + 1], sec[kZ85KeyChars + 1];
  if (zmq_curve_keypair(pub, sec) != 0) {
    return Status::IoError(std::string("curve keypair: ") + zmq_strerror(zmq_errno()));
  }
  Keypair k{std::string(pub, kZ85KeyChars), std::string(sec, kZ85KeyChars)};
  // The secret is on the stack of this frame only until it returns.
  std::memset(sec, 0, sizeof sec);
  return k;
}

Status Validate(std::string_view key) {
  if (key.size() != kZ85KeyChars) {
    return Status::InvalidConfig("a CURVE key is 40 Z85 characters, not " +
                                 std::to_string(key.size()));
  }
  if (key.find_first_not_of(kZ85Alphabet) != std::string_view::npos) {
    return Status::InvalidConfig("a CURVE key has a character outside the Z85 alphabet");
  }
  // Each 5 characters are a 32-bit number; "#####" and the like overflow it,
  // so a key is valid only if it encodes back to itself.
  uint8_t raw[kKeyBytes];
  const std::string text(key);
  if (zmq_z85_decode(raw, text.c_str()) == nullptr ||
      Encode(std::string_view(reinterpret_cast<const char*>(raw), kKeyBytes)) != key) {
    return Status::InvalidConfig("a CURVE key does not decode to 32 bytes");
  }
  return Status::Ok();
}

Result<std::string> Decode(std::string_view z85) {
  if (Status s = Validate(z85); !s.ok()) return s;
  uint8_t raw[kKeyBytes];
  const std::string text(z85);
  (void)zmq_z85_decode(raw, text.c_str());
  return std::string(reinterpret_cast<const char*>(raw), kKeyBytes);
}

std::string Encode(std::string_view raw) {
  if (raw.size() != kKeyBytes) return {};
  char text[kZ85KeyChars + 1];
  if (zmq_z85_encode(text, reinterpret_cast<const uint8_t*>(raw.data()), raw.size()) == nullptr) {
    return {};
  }
  return std::string(text, kZ85KeyChars);
}

Result<std::string> PublicKeyOf(std::string_view secret_z85) {
  if (Status s = Validate(secret_z85); !s.ok()) return s;
  const std::string secret(secret_z85);
  char pub[kZ85KeyChars + 1];
  if (zmq_curve_public(pub, secret.c_str()) != 0) {
    return Status::IoError(std::string("curve public key: ") + zmq_strerror(zmq_errno()));
  }
  return std::string(pub, kZ85KeyChars);
}

Result<Keypair> ReadSecretFile(const std::string& path) {
  Result<std::string> secret = ReadPrivateKeyFile(path, kZ85KeyChars);
  if (!secret.ok()) return secret.status();
  Result<std::string> pub = PublicKeyOf(*secret);
  if (!pub.ok()) return Status::InvalidConfig("key file " + path + ": " + pub.status().message());
  return Keypair{std::move(pub).value(), std::move(secret).value()};
}

Status WriteSecretFile(const std::string& path, std::string_view secret_z85, bool overwrite) {
  if (Status s = Validate(secret_z85); !s.ok()) return s;
  // O_NOFOLLOW: a link planted at the path must not send the key elsewhere.
  // O_NONBLOCK: a FIFO there fails at once instead of waiting for a reader.
  int flags = O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;
  flags |= overwrite ? O_TRUNC : O_EXCL;
  UniqueFd fd(::open(path.c_str(), flags, 0600));
  if (fd.get() < 0) {
    if (errno == EEXIST) {
      return Status::Refused(path + " exists (--force replaces it)");
    }
    if (errno == ELOOP) return Status::IoError(path + ": a symbolic link, not followed");
    return Status::IoError(path + ": " + std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return Status::IoError(path + ": not a regular file");
  }
  // An existing file keeps its mode through O_TRUNC; the umask may have
  // narrowed a new one further, never widened it.
  if (::fchmod(fd.get(), 0600) != 0) return Status::IoError(path + ": " + std::strerror(errno));
  std::string line(secret_z85);
  line += '\n';
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(fd.get(), line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status::IoError(path + ": " + std::strerror(errno));
    done += static_cast<size_t>(n);
  }
  std::memset(line.data(), 0, line.size());
  if (::fsync(fd.get()) != 0) return Status::IoError(path + ": " + std::strerror(errno));
  return Status::Ok();
}

}  // namespace sb::curve
