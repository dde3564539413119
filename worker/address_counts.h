// AddressCounts: how many sockets each remote address holds on a shard, and
// the --max-connections-per-ip decision.
//
// Owns: a count per address, for sockets from accept to close, kept only
// while the limit is on (0: unlimited, nothing kept) and only for addresses
// that hold a socket. IPv4 and IPv6 addresses count apart; an IPv4-mapped
// IPv6 address (::ffff:a.b.c.d, what a dual-stack socket reports) counts as
// its IPv4 address. Does not: accept or close anything (the gateway does,
// and asks here first). Plain data on the shard's loop thread; the gateway
// owns one.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <unordered_map>

namespace sb::worker {

class AddressCounts {
 public:
  // An address as 16 bytes: IPv6 as is, IPv4 as IPv4-mapped IPv6.
  using Key = std::array<uint8_t, 16>;
  // The key of an AF_INET or AF_INET6 address; nullopt for other families.
  static std::optional<Key> KeyOf(const sockaddr* addr, socklen_t len);

  explicit AddressCounts(size_t max_per_address) : max_(max_per_address) {}

  // Counts one more socket of `key`. False, and nothing counted, if `key`
  // already holds the maximum.
  bool Add(const Key& key);
  // Counts one more socket of `key` even past the maximum: a socket handed
  // over by the process this one replaces (docs/UPGRADE.md) is not refused.
  void Adopt(const Key& key);
  // A socket counted by Add or Adopt is gone.
  void Remove(const Key& key);

  size_t count(const Key& key) const;
  // Addresses holding at least one socket (0 while the limit is off).
  size_t addresses() const { return counts_.size(); }

 private:
  struct KeyHash {
    size_t operator()(const Key& k) const;
  };
  size_t max_;
  std::unordered_map<Key, uint32_t, KeyHash> counts_;
};

}  // namespace sb::worker
