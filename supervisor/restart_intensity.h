// RestartIntensity: OTP's "more than `intensity` restarts within `period`".
//
// Owns: the timestamps of one supervisor's recent automatic restart attempts.
// Pure: the caller passes monotonic time in. One deliberate difference from
// OTP: time is precise (nanoseconds), not truncated to whole seconds, so a
// window of 5s means exactly 5s. Attempts exactly `period` apart share a
// window (inclusive bound, as in OTP's add_restart).
#pragma once

#include <chrono>
#include <deque>

namespace sb::supervisor {

class RestartIntensity {
 public:
  using Time = std::chrono::nanoseconds;

  RestartIntensity(int intensity, std::chrono::nanoseconds period)
      : intensity_(intensity), period_(period) {}

  // Called before every automatic restart attempt. Records the attempt and
  // returns true if it is allowed; returns false (give up) if it would be the
  // (intensity+1)-th attempt within [now - period, now].
  bool Allow(Time now);

  // New limits (a reload); the recorded attempts are kept.
  void Reconfigure(int intensity, std::chrono::nanoseconds period) {
    intensity_ = intensity;
    period_ = period;
  }

  // Attempts recorded within the window ending at `now`.
  int CountInWindow(Time now) const;

  int intensity() const { return intensity_; }
  std::chrono::nanoseconds period() const { return period_; }

 private:
  void Expire(Time now);
  int intensity_;
  std::chrono::nanoseconds period_;
  std::deque<Time> attempts_;
};

}  // namespace sb::supervisor
