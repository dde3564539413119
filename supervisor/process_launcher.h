// ProcessLauncher: starts one child OS process the way the supervisor needs.
//
// Owns: the spawn sequence and everything the child inherits: its own
// process group (so a stop signal reaches helpers it forked), PDEATHSIG
// SIGKILL (the child dies with the daemon: no orphans), stdout/stderr pipes,
// the systemd protocols (NOTIFY_SOCKET; LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES
// with the sockets at fd 3..), and a pidfd for event-driven exit detection.
// The child is created with clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD), as
// posix_spawn does: no page-table copy, the pidfd comes atomically with the
// pid, and an exec failure is known before Launch returns. Does not:
// wait for readiness or exit (the daemon's loop does), or keep any state.
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "common/unique_fd.h"

namespace sb::supervisor {

struct LaunchRequest {
  std::vector<std::string> argv;                         // argv[0] resolved via `path`
  std::vector<std::pair<std::string, std::string>> env;  // set on top of the daemon's env
  std::vector<std::pair<std::string, int>> listen_fds;   // name, fd in the daemon
  std::string notify_socket;                             // NOTIFY_SOCKET, empty = unset
  std::string path;                                      // PATH used to find argv[0]
};

struct LaunchedProcess {
  pid_t pid = -1;
  UniqueFd pidfd;  // readable once the process has exited
  UniqueFd out;    // read end of its stdout (non-blocking)
  UniqueFd err;    // read end of its stderr (non-blocking)
};

// Starts the process. Returns an error (and leaves nothing behind) when the
// program cannot be executed: not found, not executable, bad argv.
Result<LaunchedProcess> Launch(const LaunchRequest& req);

// Resolves `name` like execvp would, using `path`; names with a '/' are kept.
std::string ResolveProgram(const std::string& name, const std::string& path);

}  // namespace sb::supervisor
