// RunLoopUntil: how common's unit tests wait on a real EventLoop.
//
// Owns: turning a loop until a condition holds, with a deadline, instead of
// sleeping a fixed time. Test-only, header-only.
#pragma once

#include <chrono>
#include <functional>

#include "common/event_loop.h"
#include "common/mono_time.h"

namespace sb::testing {

// Turns `loop` until `cond` holds; false if `deadline` passes first.
inline bool RunLoopUntil(EventLoop& loop, const std::function<bool()>& cond,
                         std::chrono::milliseconds deadline = std::chrono::seconds(5)) {
  const MonoTime until = MonoNow() + deadline;
  while (!cond()) {
    if (MonoNow() >= until) return false;
    loop.RunOnce(std::chrono::milliseconds(50));
  }
  return true;
}

}  // namespace sb::testing
