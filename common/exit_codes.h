// Exit codes shared by every Switchboard program, so scripts can rely on them.
//
// Owns: the numeric meaning of a program's exit status. 0 ok; 1 the root
// supervisor gave up / failed to start, or a request was refused; 2 usage or
// configuration error; 3 the daemon is not running (control client).
#pragma once

namespace sb {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // root supervisor gave up, or request refused
inline constexpr int kExitUsage = 2;    // bad command line or bad configuration
inline constexpr int kExitNotRunning = 3;

}  // namespace sb
