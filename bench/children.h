// Children: the processes a bench program starts, and how they all end with
// it. Every child is tracked from fork to reap, so an interrupt (SIGINT,
// SIGTERM) or the --max-seconds backstop (SIGALRM) kills them all before the
// bench exits; PR_SET_PDEATHSIG covers the bench dying any other way.
//
// Owns: the table of live children (fixed size, written by the main thread,
// read by the signal handler) and the fork set-up both kinds of child share.
// Does not: reap (each bench waits for its children its own way, then calls
// Untrack) or read what children report. Single-threaded benches only.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

namespace sb::bench {

// Remembers `pid` for KillChildren. Children beyond kMaxChildren alive at
// once are not tracked (PR_SET_PDEATHSIG still ends them with the bench).
inline constexpr int kMaxChildren = 512;
void Track(pid_t pid);
// After reaping `pid`: the number may be reused by an unrelated process.
void Untrack(pid_t pid);
// SIGKILLs every tracked child. Async-signal-safe.
void KillChildren();

// From now on SIGINT, SIGTERM and SIGALRM kill every tracked child, write
// "`program`: `why`\n" to stderr and _exit(128 + signal); SIGPIPE is
// ignored. Both strings must outlive the program (literals).
void KillChildrenOnSignal(const char* program, const char* why);

// A forked child that runs `body` and exits with its result, and the
// parent's end of a socketpair to it; the child's end is `body`'s argument
// (fd 3, the only fd it keeps). The child dies with the parent and takes the
// default action for SIGINT and SIGTERM. pid -1 and ctl -1 if it could not
// be started.
struct Forked {
  pid_t pid = -1;
  int ctl = -1;
};
Forked ForkWithControl(const std::function<int(int ctl)>& body);

// Starts `exe` with `args` (argv[1]...), its stdout and stderr written to
// `log` (truncated first), no other fds, default signal dispositions, dying
// with the parent. The pid, tracked, or -1.
pid_t SpawnProgram(const std::string& exe, const std::vector<std::string>& args,
                   const std::string& log);

}  // namespace sb::bench
