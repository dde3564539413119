#include "worker/rate_limiter.h"

#include <algorithm>
#include <cmath>

namespace sb::worker {

RateLimiter::RateLimiter(double rate_per_second, double burst)
    : rate_per_ms_(rate_per_second / 1000.0), burst_(std::max(burst, 1.0)), tokens_(burst_) {}

bool RateLimiter::Allow(int64_t now_ms) {
  if (rate_per_ms_ <= 0) return true;
  if (now_ms > last_ms_) {
    // The first call refills from 0 and is capped at burst_, which is what a
    // bucket that started full would hold anyway.
    tokens_ = std::min(burst_, tokens_ + static_cast<double>(now_ms - last_ms_) * rate_per_ms_);
    last_ms_ = now_ms;
  }
  // Refills are sums of products like 99 * 0.01, which can land a hair
  // below a whole token; the slack keeps the rate exact as configured.
  if (tokens_ < 1.0 - 1e-9) return false;
  tokens_ -= 1.0;
  return true;
}

void RateLimiter::Restore(State state) {
  tokens_ = std::isfinite(state.tokens) ? std::clamp(state.tokens, 0.0, burst_) : 0.0;
  last_ms_ = state.last_ms;
}

}  // namespace sb::worker
