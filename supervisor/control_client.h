// Control client: the `switchboard status|stop|start|restart|scale|reload|events` side of the
// control socket (docs/CONTROL.md).
//
// Owns: one short-lived connection per call; blocking I/O bounded by a deadline (poll), so it is
// for command-line programs and tests, never for a process's event loop. Does not: interpret
// replies beyond parsing them (control_cli.h renders them) or retry. Safe to call from any
// thread; calls share nothing.
#pragma once

#include <boost/json.hpp>
#include <chrono>
#include <functional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace sb::supervisor {

// For status (the daemon answers at once).
inline constexpr std::chrono::milliseconds kControlShortTimeout{30 * 1000};
// For stop, start, restart, scale and reload: the daemon replies only once the work is done, and
// a stop may wait out a child's whole shutdown timeout.
inline constexpr std::chrono::milliseconds kControlLongTimeout{10 * 60 * 1000};

// Sends `request` and returns the daemon's reply object, whether it says ok or not. Errors:
// NotFound "daemon not running (no control socket at <path>)" when there is no socket file or
// nobody listens on it; Refused when the socket's permissions keep us out; InvalidConfig for a
// path too long for a unix socket or a request over 64 KiB; IoError for a timeout, a closed
// connection without a reply, or a reply that is not a JSON object.
Result<boost::json::object> ControlCall(const std::string& path, const boost::json::object& request,
                                        std::chrono::milliseconds timeout);

// Sends {"cmd":"events"}, then calls on_line for each streamed line (without its '\n') until it
// returns false or the daemon closes the stream; both return Ok. Errors as ControlCall, plus
// Refused when the daemon answers the request with an error (too many connections, say).
Status FollowEvents(const std::string& path,
                    const std::function<bool(std::string_view line)>& on_line);

}  // namespace sb::supervisor
