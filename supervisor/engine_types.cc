#include "supervisor/engine_types.h"

#include <string.h>

#include <algorithm>
#include <charconv>

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
    case ChildState::kUpgrading:
      return "upgrading";
  }
  return "unknown";
}

std::optional<UpgradeOutcome> ParseUpgradedStatus(std::string_view status) {
  auto next_word = [&]() {
    size_t start = status.find_first_not_of(' ');
    if (start == std::string_view::npos) return std::string_view();
    status.remove_prefix(start);
    size_t end = std::min(status.find(' '), status.size());
    std::string_view word = status.substr(0, end);
    status.remove_prefix(end);
    return word;
  };
  if (next_word() != "upgraded") return std::nullopt;
  UpgradeOutcome out;
  for (std::string_view w = next_word(); !w.empty(); w = next_word()) {
    size_t eq = w.find('=');
    if (eq == std::string_view::npos) continue;
    std::string_view key = w.substr(0, eq), value = w.substr(eq + 1);
    int64_t n = 0;
    auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
    if (ec != std::errc() || ptr != value.data() + value.size() || n < 0) continue;
    if (key == "connections") out.connections = n;
    if (key == "ms") out.ms = n;
  }
  return out;
}

}  // namespace sb::supervisor
