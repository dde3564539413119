// IpcEndpoint: keeps the broker's ipc:// endpoint to the broker's own user.
//
// Owns: the rules that make a Unix-socket endpoint reachable by this user
// only (the shards run as it): the socket's directory must be ours and
// writable by nobody else, so no other user can replace or pre-create the
// socket; the socket file is created 0600 (umask 077 held around the bind)
// and set 0600 again after it. Does not: bind (MeshServer's ZmqSocket does),
// or protect a tcp:// endpoint (CURVE comes with multi-node brokers).
// Startup only, before any other thread exists: umask is per process.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace sb::broker {

// The socket path of an ipc:// endpoint; nullopt for any other transport.
std::optional<std::string> IpcPath(std::string_view endpoint);

// Refused, saying why, unless `path` names a socket file in a directory
// owned by `uid` and not writable by group or others. The abstract
// namespace (ipc://@name: no file, reachable by anyone) and libzmq's
// wildcard (ipc://*: a directory it picks) are refused too.
Status CheckIpcDirectory(const std::string& path, uid_t uid);

// Makes the bound socket file owner-only (0600).
Status RestrictIpcSocket(const std::string& path);

// Holds the process umask at `mask` for the object's life.
class ScopedUmask {
 public:
  explicit ScopedUmask(mode_t mask);
  ~ScopedUmask();
  ScopedUmask(const ScopedUmask&) = delete;
  ScopedUmask& operator=(const ScopedUmask&) = delete;

 private:
  mode_t old_;
};

}  // namespace sb::broker
