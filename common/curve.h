// Curve: the node's CURVE keys (ZeroMQ RFC 26) as the rest of Switchboard
// sees them — Z85 text, 40 characters for 32 bytes.
//
// Owns: generating a keypair, telling a well-formed Z85 key from anything
// else, converting between Z85 and the 32 raw bytes (what a ZAP request
// carries), deriving a public key from a secret one, and the secret-key
// file: written owner-only by `switchboard keygen`, read back through
// common/key_file's rule. Does not: open sockets (common/zmq_socket sets the
// keys on one) or decide who is admitted (common/zap_policy). Plain
// functions over libzmq's; blocking file I/O, any thread. Messages name
// paths, never a secret key.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace sb::curve {

inline constexpr size_t kKeyBytes = 32;
inline constexpr size_t kZ85KeyChars = 40;

struct Keypair {
  std::string public_key;  // Z85
  std::string secret_key;  // Z85
};

// A new random keypair; IoError if libzmq was built without CURVE.
Result<Keypair> Generate();

// Ok if `key` is 40 characters of the Z85 alphabet that decode to 32 bytes
// (and encode back to themselves); InvalidConfig saying why otherwise,
// without quoting the key (it may be a secret one).
Status Validate(std::string_view key);
// The 32 bytes of a valid Z85 key (InvalidConfig as Validate otherwise).
Result<std::string> Decode(std::string_view z85);
// The Z85 text of 32 raw bytes; empty if `raw` is not 32 bytes long.
std::string Encode(std::string_view raw);

// The public key of a valid Z85 secret key.
Result<std::string> PublicKeyOf(std::string_view secret_z85);

// The keypair of the secret-key file at `path`: its first line is the Z85
// secret key, and the file is owner-only (common/key_file).
// InvalidConfig naming `path` otherwise.
Result<Keypair> ReadSecretFile(const std::string& path);

// Writes `secret_z85` and a line end to a new file at `path`, created 0600.
// Refuses (Refused) a path that exists unless `overwrite`; never follows a
// symbolic link at `path` and never writes to anything but a regular file;
// an overwritten file is made 0600 again. IoError naming `path` otherwise.
Status WriteSecretFile(const std::string& path, std::string_view secret_z85, bool overwrite);

}  // namespace sb::curve
