#include "broker/settle_window.h"

#include <algorithm>

namespace sb::broker {

SettleWindow::SettleWindow(SettlePolicy policy)
    : policy_(policy), longest_heartbeat_ms_(policy.heartbeat_ms) {}

int64_t SettleWindow::window_ms() const {
  // Clamped before doubling: an announced interval can be anything.
  const int64_t heartbeat = std::min(longest_heartbeat_ms_, policy_.max_ms);
  return std::min(2 * heartbeat + policy_.margin_ms, policy_.max_ms);
}

bool SettleWindow::Settling(int64_t now_us) {
  if (start_us_ < 0) start_us_ = now_us;
  if (end_ == SettleEnd::kNotYet && now_us >= start_us_ + window_ms() * 1000) {
    end_ = SettleEnd::kTimeout;
    missing_.clear();
    heard_.clear();
  }
  return end_ == SettleEnd::kNotYet;
}

void SettleWindow::OnHello(std::string_view name, int64_t heartbeat_ms,
                           std::span<const std::string> members, int64_t now_us, bool restating) {
  // Checked first: a window that has ended stays ended, whatever the hello
  // says (what was held has been released).
  if (!Settling(now_us)) return;
  longest_heartbeat_ms_ = std::max(longest_heartbeat_ms_, heartbeat_ms);
  // By name, not instance: a shard that restarted along with the broker is
  // the one its peers expect, and its hello brings what the others need
  // (its subscriptions).
  if (heard_.size() + missing_.size() >= kMaxSettleNames) overflow_ = true;
  if (overflow_) return;
  if (restating) {
    // Expected until its restates have come (OnRestated).
    if (auto it = heard_.find(name); it != heard_.end()) heard_.erase(it);
    missing_.emplace(name);
  } else {
    if (auto it = missing_.find(name); it != missing_.end()) missing_.erase(it);
    heard_.emplace(name);
  }
  for (const std::string& m : members) {
    if (heard_.size() + missing_.size() >= kMaxSettleNames) {
      overflow_ = true;
      return;
    }
    if (!heard_.contains(m)) missing_.insert(m);
  }
  if (!members.empty()) expected_any_ = true;
  EndIfAllHeard();
}

void SettleWindow::OnRestated(std::string_view name, int64_t now_us) {
  if (!Settling(now_us) || overflow_) return;
  auto it = missing_.find(name);
  if (it == missing_.end()) return;
  missing_.erase(it);
  heard_.emplace(name);
  EndIfAllHeard();
}

void SettleWindow::EndIfAllHeard() {
  // Only once some hello has named the shards to expect: at a cold start
  // none does, and the bound holds the window for shards nobody knows of.
  if (expected_any_ && missing_.empty()) {
    end_ = SettleEnd::kAllHello;
    heard_.clear();
  }
}

}  // namespace sb::broker
