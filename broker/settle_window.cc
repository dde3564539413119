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
  if (!over_ && now_us >= start_us_ + window_ms() * 1000) over_ = true;
  return !over_;
}

void SettleWindow::OnHello(int64_t heartbeat_ms, int64_t now_us) {
  // Checked first: a window that has ended stays ended, whatever the hello
  // says (what was held has been released).
  if (!Settling(now_us)) return;
  longest_heartbeat_ms_ = std::max(longest_heartbeat_ms_, heartbeat_ms);
}

}  // namespace sb::broker
