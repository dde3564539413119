// Vocabulary of the restart engine: what goes in (exits, readiness, timers)
// and what comes out (spawn, signal, arm a timer, emit an event, exit).
//
// Owns: plain value types only. The engine (tree_engine.h) consumes events
// and produces Actions; the daemon (daemon.h) performs the Actions with real
// processes, signals and timers and feeds the results back as events. Nothing
// here touches the OS.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/status.h"
#include "supervisor/tree_spec.h"

namespace sb::supervisor {

using Time = std::chrono::nanoseconds;  // monotonic, supplied by the caller
using Token = uint64_t;                 // one spawned process (an incarnation of a child)
using TimerToken = uint64_t;            // one armed timer
using Instance = uint64_t;              // one running supervisor
using RequestId = uint64_t;             // one operator request awaiting its reply

// How a process ended: an exit status or a terminating signal.
struct ExitInfo {
  int status = -1;  // WEXITSTATUS when the process exited, else -1
  int signal = 0;   // terminating signal, else 0
  static ExitInfo Code(int c) { return ExitInfo{c, 0}; }
  static ExitInfo Signal(int s) { return ExitInfo{-1, s}; }
  std::string Describe() const;  // "exit status 1" / "killed by SIGKILL"
};

// Normal exit in OTP terms: status 0 or one of the child's success codes.
// Signals are always abnormal.
bool IsNormalExit(const ExitInfo& e, const ChildSpec& spec);

// What a line of the event stream says happened (docs/supervision.md lists
// when each is emitted). Readers compare the kind; only the writers (the
// events file, the log) spell it, through EventName().
enum class EventKind : uint8_t {
  kStarted,
  kReady,
  kExited,
  kRestarting,
  kStopping,
  kStopped,
  kGaveUp,
  kUpgrading,
  kUpgraded,
  kUpgradeFailed,
  kDaemonExit,  // stays last (the table's size check below)
};

// The one spelling of every kind: the events file, the control socket's
// event stream and the daemon's log use it. Users and tests read these
// strings, so an entry never changes once released.
struct EventKindName {
  EventKind kind;
  std::string_view name;
};
inline constexpr std::array kEventKindNames = {
    EventKindName{EventKind::kStarted, "started"},
    EventKindName{EventKind::kReady, "ready"},
    EventKindName{EventKind::kExited, "exited"},
    EventKindName{EventKind::kRestarting, "restarting"},
    EventKindName{EventKind::kStopping, "stopping"},
    EventKindName{EventKind::kStopped, "stopped"},
    EventKindName{EventKind::kGaveUp, "gave_up"},
    EventKindName{EventKind::kUpgrading, "upgrading"},
    EventKindName{EventKind::kUpgraded, "upgraded"},
    EventKindName{EventKind::kUpgradeFailed, "upgrade_failed"},
    EventKindName{EventKind::kDaemonExit, "daemon_exit"},
};

constexpr std::string_view EventName(EventKind kind) {
  return kEventKindNames[static_cast<size_t>(kind)].name;
}
// The kind spelled `name`, for readers of the events file; nullopt if none.
std::optional<EventKind> ParseEventKind(std::string_view name);

namespace internal {
// EventName() indexes the table by kind: every kind has its row, in order.
constexpr bool EventTableInKindOrder() {
  for (size_t i = 0; i < kEventKindNames.size(); ++i) {
    if (static_cast<size_t>(kEventKindNames[i].kind) != i) return false;
  }
  return true;
}
static_assert(EventTableInKindOrder());
static_assert(static_cast<size_t>(EventKind::kDaemonExit) + 1 == kEventKindNames.size());
}  // namespace internal

// One line of the event stream (node.events). `ts` is added by the writer.
// Built with named fields: TreeEvent{.kind = EventKind::kExited, .id = id,
// .reason = "gave up"}.
struct TreeEvent {
  EventKind kind;
  std::string id;
  std::optional<int> pid;     // the incarnation's process, for workers
  std::optional<int> status;  // exit status (exited) or the daemon's exit code (daemon_exit)
  std::optional<int> signal;  // terminating signal (exited)
  std::string reason;         // free text, omitted when empty
  // upgraded: what the new process reported (STATUS=upgraded connections=N
  // ms=T), when it did.
  std::optional<int64_t> connections;
  std::optional<int64_t> ms;
};

// What a hand-off moved, as the new process reports it on NOTIFY_SOCKET:
// "STATUS=upgraded connections=N ms=T". Unknown fields stay empty.
struct UpgradeOutcome {
  std::string id;
  int pid = 0;  // the new process, now the child
  std::optional<int64_t> connections;
  std::optional<int64_t> ms;
  bool operator==(const UpgradeOutcome&) const = default;
};
// Parses a STATUS= value; nullopt unless it is an "upgraded ..." report.
// Fields other than connections and ms are ignored (room to add some).
std::optional<UpgradeOutcome> ParseUpgradedStatus(std::string_view status);

// std::visit over several lambdas: std::visit(Overloaded{[](const A&) {...},
// [](const B&) {...}}, v).
template <typename... F>
struct Overloaded : F... {
  using F::operator()...;
};

namespace action {
struct Spawn {  // fork/exec the worker; answer with OnSpawned or OnSpawnFailed
  Token token;
  ChildSpec spec;
};
struct Signal {  // to the process group of a live incarnation; no-op once it is reaped
  Token token;
  int signal;
};
struct StartTimer {  // answer with OnTimer(timer) after `after`
  TimerToken timer;
  Millis after;
};
struct CancelTimer {
  TimerToken timer;
};
struct Emit {
  TreeEvent event;
};
struct Log {
  enum class Level { kInfo, kWarn, kError } level;
  std::string text;
};
struct Exit {  // the root is gone: end the daemon with `code`
  int code;
  std::string reason;
};
struct Reply {  // an operator request is done (or refused)
  RequestId request;
  Status status;
  std::vector<std::string> added;        // scale: ids started
  std::vector<std::string> removed;      // scale: ids stopped and forgotten
  std::vector<UpgradeOutcome> upgraded;  // upgrade: each child handed over, in order
};
}  // namespace action

using Action = std::variant<action::Spawn, action::Signal, action::StartTimer, action::CancelTimer,
                            action::Emit, action::Log, action::Exit, action::Reply>;

// Runtime state of a child, as shown to operators.
// kUpgrading: running, with a new incarnation beside it taking over.
enum class ChildState { kStopped, kStarting, kRunning, kStopping, kRestarting, kUpgrading };
const char* ChildStateName(ChildState s);

// A read-only picture of the running tree, for `switchboard status`.
struct TreeView {
  std::string id;
  bool is_supervisor = false;
  ChildState state = ChildState::kStopped;
  int pid = 0;                        // workers with a process
  int upgrade_pid = 0;                // kUpgrading: the new incarnation, once spawned
  std::optional<Time> since;          // when it became running
  int restarts = 0;                   // automatic restarts of this child
  std::optional<ExitInfo> last_exit;  // workers
  std::string metrics;                // workers: their Prometheus endpoint, if any
  std::vector<int> success_exit_codes;
  // Supervisors only.
  Strategy strategy = Strategy::kOneForOne;
  int intensity = 0;
  Millis period{0};
  int restarts_in_window = 0;
  std::vector<TreeView> children;
};

}  // namespace sb::supervisor
