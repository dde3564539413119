#include "broker/liveness.h"

#include <algorithm>
#include <cstdlib>

namespace sb::broker {

Status ValidateLivenessPolicy(const LivenessPolicy& policy) {
  if (policy.interval_ms <= 0) return Status::InvalidConfig("heartbeat interval must be > 0");
  if (policy.misses <= 0) return Status::InvalidConfig("heartbeat misses must be > 0");
  return Status::Ok();
}

Liveness::Liveness(LivenessPolicy policy) : policy_(policy) {
  // A zero interval would declare every link dead at once: a broken
  // invariant, since configuration is validated at startup.
  if (!ValidateLivenessPolicy(policy_).ok()) std::abort();
}

void Liveness::OnHeard(LinkId link, int64_t now_ms) {
  auto [it, added] = last_heard_.try_emplace(link, now_ms);
  if (!added) it->second = std::max(it->second, now_ms);
}

void Liveness::Remove(LinkId link) { last_heard_.erase(link); }

void Liveness::Forgive(int64_t ms) {
  if (ms <= 0) return;
  for (auto& [link, heard] : last_heard_) heard += ms;
}

std::vector<LinkId> Liveness::Expired(int64_t now_ms) {
  std::vector<LinkId> dead;
  for (const auto& [link, heard] : last_heard_) {
    if (now_ms - heard > timeout_ms()) dead.push_back(link);
  }
  std::sort(dead.begin(), dead.end());
  for (LinkId link : dead) last_heard_.erase(link);
  return dead;
}

std::optional<int64_t> Liveness::NextExpiry() const {
  std::optional<int64_t> next;
  for (const auto& [link, heard] : last_heard_) {
    int64_t at = heard + timeout_ms() + 1;
    if (!next || at < *next) next = at;
  }
  return next;
}

int64_t Liveness::NextHeartbeatDue(int64_t now_ms) const {
  if (!last_sent_ms_) return now_ms;
  return std::max(now_ms, *last_sent_ms_ + policy_.interval_ms);
}

}  // namespace sb::broker
