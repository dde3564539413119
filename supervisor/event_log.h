// EventLog: the node's event stream as JSON lines (node.events).
//
// Owns: the open events file (O_APPEND, opened only in a trusted directory
// and never through a symlink: runtime_dir.h) and the JSON encoding of a TreeEvent:
// {"ts": <CLOCK_MONOTONIC seconds>, "event", "id", "pid", "status",
// "signal", "reason"}; pid/status/signal are null when they do not apply.
// A line is written whole or not at all: when the disk fills (or a file size
// limit is reached) in the middle of one, the file is cut back to where the
// line began, so the next line never glues onto a fragment. Does not: buffer,
// retry a lost line, rotate or fsync (an event log, not a journal). Runs on
// the daemon's loop thread.
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
  // An empty path gives a log that writes nothing. Fails with InvalidConfig
  // when the file's directory is not trusted (CheckTrustedDir), the path is a
  // symbolic link, or it is not a regular file.
  static Result<std::unique_ptr<EventLog>> Open(const std::string& path);
  Status Write(double ts, const TreeEvent& ev) { return WriteLine(EncodeEventLine(ts, ev)); }
  // Appends `line` (ending in '\n') whole. On failure the line is lost, the
  // file holds no part of it, and the error says why ("write PATH: No space
  // left on device").
  Status WriteLine(const std::string& line);

 private:
  EventLog(std::string path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
  std::string path_;
  UniqueFd fd_;
  // A failed line could not be cut back (ftruncate failed too): the file ends
  // in a fragment, so the next line starts with '\n' to begin a line of its own.
  bool torn_ = false;
};

}  // namespace sb::supervisor
