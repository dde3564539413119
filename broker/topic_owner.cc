#include "broker/topic_owner.h"

namespace sb::broker {

uint64_t Fnv1a64(std::string_view bytes, uint64_t seed) {
  uint64_t h = seed;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

namespace {

// splitmix64's finalizer: every input bit reaches every output bit.
uint64_t Mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

}  // namespace

uint64_t OwnerScore(std::string_view node, std::string_view topic) {
  uint64_t h = Fnv1a64(node);
  h = Fnv1a64(std::string_view("\0", 1), h);
  return Mix(Fnv1a64(topic, h));
}

std::string_view TopicOwner(std::span<const std::string> nodes, std::string_view topic) {
  std::string_view best;
  uint64_t best_score = 0;
  bool any = false;
  for (const std::string& n : nodes) {
    const uint64_t s = OwnerScore(n, topic);
    if (!any || s > best_score || (s == best_score && n < best)) {
      best = n;
      best_score = s;
      any = true;
    }
  }
  return best;
}

uint32_t NodeStreamTag(std::string_view node) {
  const uint64_t h = Mix(Fnv1a64(node));
  const uint32_t tag = static_cast<uint32_t>(h >> 32) ^ static_cast<uint32_t>(h);
  return tag != 0 ? tag : 1;
}

}  // namespace sb::broker
