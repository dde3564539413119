// EventLog: the node's event stream as JSON lines (node.events).
//
// Owns: the open events file (O_APPEND) and the JSON encoding of a TreeEvent:
// {"ts": <CLOCK_MONOTONIC seconds>, "event", "id", "pid", "status",
// "signal", "reason"}; pid/status/signal are null when they do not apply.
// Each line goes out in one write(), so readers never see half a line from
// us. Does not: buffer, rotate or fsync (an event log, not a journal).
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "common/unique_fd.h"
#include "supervisor/engine_types.h"

namespace sb::supervisor {

// One event as its JSON line (with trailing '\n').
std::string EncodeEventLine(double ts, const TreeEvent& ev);

// "SIGKILL" for 9; "SIG<n>" for unknown numbers.
std::string SignalName(int sig);

class EventLog {
 public:
  // An empty path gives a log that writes nothing.
  static Result<std::unique_ptr<EventLog>> Open(const std::string& path);
  void Write(double ts, const TreeEvent& ev) { WriteLine(EncodeEventLine(ts, ev)); }
  void WriteLine(const std::string& line);

 private:
  explicit EventLog(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace sb::supervisor
