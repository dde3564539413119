#include "supervisor/restart_intensity.h"

namespace sb::supervisor {

void RestartIntensity::Expire(Time now) {
  while (!attempts_.empty() && attempts_.front() < now - period_) attempts_.pop_front();
}

bool RestartIntensity::Allow(Time now) {
  if (intensity_ <= 0) return false;
  Expire(now);
  if (static_cast<int>(attempts_.size()) >= intensity_) return false;
  attempts_.push_back(now);
  return true;
}

int RestartIntensity::CountInWindow(Time now) const {
  int n = 0;
  for (Time t : attempts_) n += (t >= now - period_) ? 1 : 0;
  return n;
}

}  // namespace sb::supervisor
