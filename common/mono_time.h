// MonoTime: the one clock of every Switchboard program, and its units.
//
// Owns: how a process reads monotonic time (CLOCK_MONOTONIC, through
// std::chrono::steady_clock, which libstdc++ maps to it) and the integer
// forms decisions and wire formats use. Every program reads the clock only
// through MonoNow(); decision classes never read it: the effects layer
// passes "now" in (as a MonoTime, or as the integer form their header names).
// The events file's "ts" and sb-testchild's records are ToSeconds() of the
// same clock, so tests can compare them with their own readings. The one
// exception is WallNowNs(), for stamps that cross processes and machines.
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

// Wall-clock time (CLOCK_REALTIME), in nanoseconds of the Unix epoch: only
// for a time that another process compares with its own reading — possibly
// on another machine, where only the wall clock is shared — such as the
// stamp a broadcast carries through the mesh. Never for deciding anything.
inline int64_t WallNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}
// The wall-clock time of monotonic instant `mono_ns` (MonoNowNs()'s form):
// both clocks read now, so an instant a moment ago converts exactly.
inline int64_t WallFromMonoNs(int64_t mono_ns) { return WallNowNs() - (MonoNowNs() - mono_ns); }

}  // namespace sb
