// Binding a listening TCP socket: the one way Switchboard programs do it
// (the daemon for `sockets:` in YAML, a shard run alone with --listen).
//
// Owns: resolving a numeric or named host, SO_REUSEADDR (a restarted program
// must not wait out TIME_WAIT), bind and listen, and errors that say which of
// them failed and why. The fd is close-on-exec and blocking; callers that
// accept from a loop set O_NONBLOCK. Does not: accept connections.
#pragma once

#include <string>

#include "common/status.h"
#include "common/unique_fd.h"

namespace sb {

// `host` is an IPv4/IPv6 address or a name; port 0 binds any free port.
// `reuseport` sets SO_REUSEPORT before bind, so further sockets of the same
// user may join the port as one group (the daemon's round_robin sockets).
// Errors: "unable to resolve HOST: why", "unable to bind to HOST:PORT: why",
// "unable to listen on HOST:PORT: why".
Result<UniqueFd> ListenTcp(const std::string& host, int port, int backlog, bool reuseport = false);

// "host:port" or "port" (host 127.0.0.1), as a --listen flag gives it.
// InvalidConfig naming `spec` if it is neither; else as ListenTcp.
Result<UniqueFd> ListenTcpSpec(const std::string& spec, int backlog);

// The port a bound socket has (useful after port 0); 0 if unknown.
int BoundPort(int fd);

// "ip:port" ("[v6]:port") of a bound socket, for log lines; "inherited
// socket" if it is not an IP socket.
std::string BoundAddress(int fd);

}  // namespace sb
