#include "broker/key_table.h"

namespace sb::broker {

std::string KeyTable::ClaimOf(std::string_view key, std::string_view topic) {
  std::string claim = std::to_string(key.size());
  claim.push_back(':');
  claim.append(key).append(topic);
  return claim;
}

void KeyTable::Expire(int64_t now_ms) {
  while (!by_age_.empty() && now_ms - by_age_.begin()->first >= mesh::kKeyTtlMs) {
    by_claim_.erase(by_age_.begin()->second);
    by_age_.erase(by_age_.begin());
  }
}

void KeyTable::Insert(std::string claim, Entry entry) {
  while (!by_age_.empty() && by_claim_.size() >= max_entries_) {
    by_claim_.erase(by_age_.begin()->second);
    by_age_.erase(by_age_.begin());
    ++evicted_;
  }
  if (max_entries_ == 0) return;
  by_age_.emplace(entry.at_ms, claim);
  by_claim_.emplace(std::move(claim), entry);
}

KeyTable::Verdict KeyTable::Claim(std::string_view key, std::string_view topic, uint64_t origin,
                                  uint64_t seq, int64_t now_ms) {
  Expire(now_ms);
  std::string claim = ClaimOf(key, topic);
  if (auto it = by_claim_.find(claim); it != by_claim_.end()) {
    return it->second.origin == origin && it->second.seq == seq ? Verdict::kSame : Verdict::kRepeat;
  }
  Insert(std::move(claim), Entry{now_ms, origin, seq});
  return Verdict::kFirst;
}

void KeyTable::Restore(std::string_view key, std::string_view topic, uint64_t origin, uint64_t seq,
                       uint32_t age_ms, int64_t now_ms) {
  Expire(now_ms);
  if (age_ms >= mesh::kKeyTtlMs) return;
  std::string claim = ClaimOf(key, topic);
  const int64_t at = now_ms - age_ms;
  if (auto it = by_claim_.find(claim); it != by_claim_.end()) {
    // Two shards restate the same key (one accepted a repeat the last
    // broker did not route): the one accepted first is taken for the
    // original, so the other's re-send, if unacked, stays a repeat.
    if (at < it->second.at_ms) {
      by_age_.erase({it->second.at_ms, claim});
      by_age_.emplace(at, claim);
      it->second = Entry{at, origin, seq};
    }
    return;
  }
  // A claim older than every one kept would be the first evicted: when
  // full, it is the one forgotten.
  if (by_claim_.size() >= max_entries_ && !by_age_.empty() && at < by_age_.begin()->first) {
    ++evicted_;
    return;
  }
  Insert(std::move(claim), Entry{at, origin, seq});
}

}  // namespace sb::broker
