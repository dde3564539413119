// MonoTime: the one clock of every Switchboard program, and its units.
//
// Owns: how a process reads monotonic time (CLOCK_MONOTONIC, through
// std::chrono::steady_clock, which libstdc++ maps to it) and the integer
// forms decisions and wire formats use. Every program reads the clock only
// through MonoNow(); decision classes never read it: the effects layer
// passes "now" in (as a MonoTime, or as the integer form their header names).
// The events file's "ts" and sb-testchild's records are ToSeconds() of the
// same clock, so tests can compare them with their own readings.
// Plain functions, any thread.
#pragma once

#include <chrono>
#include <cstdint>

namespace sb {

using MonoClock = std::chrono::steady_clock;
using MonoTime = MonoClock::time_point;

inline MonoTime MonoNow() { return MonoClock::now(); }

// Integer forms since the clock's epoch (boot), for decisions and metrics.
inline int64_t ToNs(MonoTime t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
inline int64_t ToUs(MonoTime t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}
inline int64_t ToMs(MonoTime t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}
inline double ToSeconds(MonoTime t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

inline int64_t MonoNowMs() { return ToMs(MonoNow()); }
inline int64_t MonoNowUs() { return ToUs(MonoNow()); }
inline int64_t MonoNowNs() { return ToNs(MonoNow()); }

}  // namespace sb
