#include "worker/address_counts.h"

#include <netinet/in.h>

#include <cstring>
#include <string_view>

namespace sb::worker {

std::optional<AddressCounts::Key> AddressCounts::KeyOf(const sockaddr* addr, socklen_t len) {
  Key key{};
  if (addr->sa_family == AF_INET && len >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(addr);
    key[10] = 0xff;
    key[11] = 0xff;
    std::memcpy(key.data() + 12, &in->sin_addr, 4);
    return key;
  }
  if (addr->sa_family == AF_INET6 && len >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(addr);
    // An IPv4-mapped address is already the IPv4 key.
    std::memcpy(key.data(), &in6->sin6_addr, 16);
    return key;
  }
  return std::nullopt;
}

size_t AddressCounts::KeyHash::operator()(const Key& k) const {
  return std::hash<std::string_view>{}(
      std::string_view(reinterpret_cast<const char*>(k.data()), k.size()));
}

bool AddressCounts::Add(const Key& key) {
  if (max_ == 0) return true;
  uint32_t& n = counts_[key];  // a new entry only when n will become 1
  if (n >= max_) return false;
  ++n;
  return true;
}

void AddressCounts::Adopt(const Key& key) {
  if (max_ != 0) ++counts_[key];
}

void AddressCounts::Remove(const Key& key) {
  if (max_ == 0) return;
  auto it = counts_.find(key);
  if (it == counts_.end()) return;
  if (--it->second == 0) counts_.erase(it);
}

size_t AddressCounts::count(const Key& key) const {
  auto it = counts_.find(key);
  return it == counts_.end() ? 0 : it->second;
}

}  // namespace sb::worker
