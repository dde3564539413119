#include "supervisor/engine_types.h"

#include <string.h>

#include <algorithm>

namespace sb::supervisor {

std::string ExitInfo::Describe() const {
  if (signal != 0) {
    const char* abbrev = sigabbrev_np(signal);
    return std::string("killed by SIG") + (abbrev ? abbrev : std::to_string(signal).c_str());
  }
  return "exit status " + std::to_string(status);
}

bool IsNormalExit(const ExitInfo& e, const ChildSpec& spec) {
  if (e.signal != 0) return false;
  if (e.status == 0) return true;
  return std::find(spec.success_exit_codes.begin(), spec.success_exit_codes.end(), e.status) !=
         spec.success_exit_codes.end();
}

std::optional<EventKind> ParseEventKind(std::string_view name) {
  for (const EventKindName& e : kEventKindNames) {
    if (e.name == name) return e.kind;
  }
  return std::nullopt;
}

const char* ChildStateName(ChildState s) {
  switch (s) {
    case ChildState::kStopped:
      return "stopped";
    case ChildState::kStarting:
      return "starting";
    case ChildState::kRunning:
      return "running";
    case ChildState::kStopping:
      return "stopping";
    case ChildState::kRestarting:
      return "restarting";
  }
  return "unknown";
}

}  // namespace sb::supervisor
