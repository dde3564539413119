// The client subcommands of `switchboard`: status/tree, stop, start, restart, scale, upgrade,
// reload and events, each one control call (control_client.h) turned into output and an exit code.
//
// Owns: the wording of client output, the human rendering of a status reply, and the mapping of
// failures to exit codes (common/exit_codes.h): 0 ok; 1 refused, busy or a transport failure;
// 2 usage or configuration error (an invalid request, a config the daemon rejected on reload, an
// unknown child id); 3 the daemon is not running. Does not: parse the command line or find the
// socket path (switchboard_main.cc does). Blocking; runs on the calling thread.
#pragma once

#include <boost/json.hpp>
#include <chrono>
#include <ostream>
#include <string>

#include "supervisor/control_client.h"

namespace sb::supervisor {

// `status` and `tree`: the tree as RenderStatus draws it, or the raw reply as one JSON line with
// `json`. With a cluster in the reply, the broker child's /metrics are read here for each
// member's link and added to both (cluster_status.h).
int RunStatus(const std::string& control, bool json, std::ostream& out, std::ostream& err);

// `cmd` is stop, start or restart. Prints "<id>: stopped" (started, restarted) on success.
int RunSimple(const std::string& control, const std::string& cmd, const std::string& id,
              std::ostream& out, std::ostream& err,
              std::chrono::milliseconds timeout = kControlLongTimeout);

// Prints "<id>: added a, b" and/or "<id>: removed c", or "<id>: already <n>".
int RunScale(const std::string& control, const std::string& id, int n, std::ostream& out,
             std::ostream& err, std::chrono::milliseconds timeout = kControlLongTimeout);

// `upgrade ID`: prints one line per child handed over, "<id>: upgraded, pid 1234, 12
// connections moved in 8 ms" ("?" for what the new process did not report). On failure, the
// children already handed over, then the reason on `err`; exit 1.
int RunUpgrade(const std::string& control, const std::string& id, std::ostream& out,
               std::ostream& err, std::chrono::milliseconds timeout = kControlLongTimeout);

// Prints one line per change ("root: start shard.2"), or "no changes".
int RunReload(const std::string& control, std::ostream& out, std::ostream& err,
              std::chrono::milliseconds timeout = kControlLongTimeout);

// Copies event lines to `out` as they come. Returns 0 when the stream ends with the daemon's
// daemon_exit event or `out` fails (its reader went away); 1 if the daemon closed the stream
// otherwise (it died, or this reader fell too far behind).
int RunEvents(const std::string& control, std::ostream& out, std::ostream& err);

// Human rendering of a status reply: an indented tree, one line per node:
//   root            supervisor one_for_one  running   restarts 0/3 in 5s
//     broker        pid 1234  running   up 1m02s  restarts 0
//     shards        supervisor one_for_one  running   restarts 1/10 in 10s
//       shard.0     pid 1240  running   up 12.3s  restarts 1  last exit: killed by SIGKILL
// Missing or mistyped fields show as "?" (a missing pid or uptime as "-"); never throws.
std::string RenderStatus(const boost::json::object& reply);

}  // namespace sb::supervisor
