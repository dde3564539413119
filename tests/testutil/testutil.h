// Harness for Switchboard's cross-process tests: temp dirs, deadline waits, spawning real
// binaries, reading the daemon's events file and sb-testchild's record file, /proc probes and
// small TCP / notify-socket helpers.
//
// Owns: helper functions and RAII handles only; no gtest dependency (the calling tests assert).
// Nothing here sleeps a fixed time: every wait polls a condition until a deadline. Call from the
// test's main thread (Process relies on PR_SET_PDEATHSIG, which fires when the spawning thread
// exits). Failures are values (false, -1, empty, nullopt or a Status); nothing throws or aborts.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"
#include "common/unique_fd.h"

namespace sb::testutil {

// ---- Files and time ----

// A fresh directory /tmp/sb-XXXXXX, removed recursively on destruction unless the environment
// variable SB_KEEP_TMP is set (then its path is printed to stderr). path() is empty if mkdtemp
// failed.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path() + "/" + name; does not create anything.
  std::string File(std::string_view name) const;

 private:
  std::string path_;
};

// Polls cond every 5 ms until it returns true (-> true) or deadline has passed (-> false). cond is
// always evaluated at least once, and once more at the deadline.
bool WaitUntil(const std::function<bool()>& cond, std::chrono::milliseconds deadline);

// CLOCK_MONOTONIC in seconds: the clock of the events file and of sb-testchild's record file.
double MonotonicNow();

// Whole file, or "" if it cannot be read.
std::string ReadFile(const std::string& path);
// Lines without their '\n'; a last line without '\n' is included. Empty if unreadable.
std::vector<std::string> ReadLines(const std::string& path);
// Creates or truncates path; false on any error.
bool WriteFile(const std::string& path, std::string_view content);

// ---- Processes ----

// Directory of the running executable; tests and programs are all built into build/bin.
std::string BinDir();
// BinDir() + "/" + program.
std::string BinPath(std::string_view program);

struct SpawnOptions {
  std::vector<std::string> args;  // argv[1..]
  // "KEY=VALUE" entries added to the test's own environment, replacing same-named keys.
  std::vector<std::string> env;
  // File receiving stdout (appended, created if missing); "" = /dev/null.
  std::string output;
  // File receiving stderr; "" = same as output.
  std::string stderr_output;
  // Become fds 3, 4, ... in the child. Every other fd above them is closed on exec.
  std::vector<int> pass_fds;
  // Also set LISTEN_FDS=<pass_fds.size()> and LISTEN_PID=<child pid> (systemd socket passing).
  bool listen_env = false;
  // Put the child in a new process group (pgid == pid); the destructor then kills the group.
  bool new_process_group = false;
  std::string cwd;  // "" = the test's cwd
};

// One child process started by the test. Stdin is /dev/null; the child gets PR_SET_PDEATHSIG
// (SIGKILL), so a test that crashes does not leak it. The destructor SIGKILLs (its process group
// with new_process_group) and reaps it if the test has not. Move-only.
class Process {
 public:
  // Fails (IoError) when the output files cannot be opened, fork fails, or execve fails: exec
  // errors are reported here rather than as exit status 127.
  static Result<Process> Start(const std::string& binary, SpawnOptions options = {});

  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();

  pid_t pid() const { return pid_; }
  // kill(pid, sig); false once the child has been reaped (its pid may be reused) or on error.
  bool Signal(int sig);
  // Reaps the child if it exits within timeout; *status gets the raw wait status (WIFEXITED...).
  // Returns true at once, with the same status, if it was already reaped.
  bool WaitExit(std::chrono::milliseconds timeout, int* status = nullptr);
  // True until the child has exited (reaps it if it has).
  bool Running();
  // Raw wait status once reaped.
  std::optional<int> wait_status() const { return status_; }
  const std::string& output_path() const { return output_; }
  // Contents of the stdout file so far ("" with no output file).
  std::string Output() const { return ReadFile(output_); }

 private:
  Process(pid_t pid, bool group, std::string output)
      : pid_(pid), group_(group), output_(std::move(output)) {}
  void Kill();

  pid_t pid_ = -1;
  bool group_ = false;
  std::string output_;
  std::optional<int> status_;
};

// "exited 3", "killed by SIGKILL", "killed by SIGSEGV (core dumped)", "stopped by SIGSTOP".
std::string DescribeWaitStatus(int status);

// ---- /proc ----

// Entries in /proc/<pid>/fd (counting our own process includes the directory fd used to count).
// -1 if unreadable.
int CountOpenFds(pid_t pid);
// VmRSS in kB; -1 if gone or a zombie.
long RssKb(pid_t pid);
// Direct children, from /proc/<pid>/task/*/children (or a scan of /proc/*/stat without it).
std::vector<pid_t> ChildrenOf(pid_t pid);
// Children, grandchildren, ... in breadth-first order.
std::vector<pid_t> DescendantsOf(pid_t pid);
// State letter from /proc/<pid>/stat ('R', 'S', 'Z', ...); 0 if the process is gone.
char ProcState(pid_t pid);
// Exists (kill(pid, 0) succeeds or fails with EPERM) and is not a zombie.
bool Alive(pid_t pid);

// ---- The daemon's events file ----

// One line of the JSON-lines events file.
struct EventRecord {
  double ts = 0;  // CLOCK_MONOTONIC seconds
  std::string event;
  std::string id;
  int pid = 0;  // 0 when null or absent
  std::optional<int> status;
  std::string signal;  // "" when null or absent
  std::string reason;  // "" when null or absent
};

// Parses every line of path. A last line without its '\n' that does not parse is being written
// and is skipped silently; any other line that fails to parse is skipped and described in *error
// (when given). Missing file: empty result, no error.
std::vector<EventRecord> ReadEvents(const std::string& path, std::string* error = nullptr);
// The events matching id and event ("" matches any), in file order.
std::vector<EventRecord> FilterEvents(const std::vector<EventRecord>& events, std::string_view id,
                                      std::string_view event = "");

// ---- sb-testchild's record file ----

// One line "<pid> <event> <ts> [KEY=VALUE ...]", or "<pid> grandchild <gpid> <ts>".
// Events: start (fields LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES, NOTIFY_SOCKET when set), ready,
// term, grandchild, crash (field signal), exit (field code).
struct ChildRecord {
  pid_t pid = 0;
  std::string event;
  double ts = 0;
  pid_t grandchild = 0;  // for event "grandchild"
  std::map<std::string, std::string> fields;
};

// Unparsable lines are skipped.
std::vector<ChildRecord> ReadRecords(const std::string& path);

// ---- Sockets ----

// A port that was free a moment ago on 127.0.0.1 (bind port 0, read it, close); -1 on error.
// Prefer handing a bound socket over when the code under test accepts one.
int FreePort();
// A listening TCP socket on 127.0.0.1 with a kernel-chosen port, stored in *port.
UniqueFd ListenTcp(int* port, int backlog = 128);
// Connects to host:port (numeric address or name), retrying refused attempts every 5 ms until
// timeout. Returns a blocking, close-on-exec fd the caller closes, or -1.
int ConnectTcp(const std::string& host, int port, std::chrono::milliseconds timeout);
// Reads until EOF, an error or timeout; returns what arrived.
std::string ReadAll(int fd, std::chrono::milliseconds timeout);
// Writes all of data (MSG_NOSIGNAL on sockets); false on error.
bool WriteAll(int fd, std::string_view data);

// The supervisor's end of the systemd notify protocol, for tests that play the supervisor: a
// bound unix datagram socket whose path() is the value for NOTIFY_SOCKET.
class NotifyReceiver {
 public:
  // path is a filesystem path, or "@name" for the abstract namespace.
  static Result<NotifyReceiver> Bind(const std::string& path);
  const std::string& path() const { return path_; }
  // The next datagram, or nullopt if none arrives within timeout.
  std::optional<std::string> Receive(std::chrono::milliseconds timeout);

 private:
  NotifyReceiver(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  UniqueFd fd_;
  std::string path_;
};

}  // namespace sb::testutil
