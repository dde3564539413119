#include "bench/children.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

namespace sb::bench {

namespace {

// Read by the signal handler: plain volatile slots, no allocation. A slot
// of 0 is free (its child was reaped).
volatile pid_t g_pids[kMaxChildren];
volatile sig_atomic_t g_used = 0;  // slots [0, g_used) have been written
const char* g_program = "bench";
const char* g_why = "interrupted";

void OnSignal(int sig) {
  KillChildren();
  const char* parts[] = {g_program, ": ", g_why, "\n"};
  for (const char* p : parts) (void)!::write(2, p, std::strlen(p));
  _exit(128 + sig);
}

// In the child, right after fork: die with the parent (and at once if it is
// already gone), and leave the bench's own signal handling behind.
void BecomeChild(pid_t parent) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) _exit(1);
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  signal(SIGALRM, SIG_IGN);
}

}  // namespace

void Track(pid_t pid) {
  for (int i = 0; i < g_used; ++i) {
    if (g_pids[i] == 0) {
      g_pids[i] = pid;
      return;
    }
  }
  if (g_used < kMaxChildren) {
    g_pids[g_used] = pid;
    g_used = g_used + 1;
  }
}

void Untrack(pid_t pid) {
  for (int i = 0; i < g_used; ++i) {
    if (g_pids[i] == pid) g_pids[i] = 0;
  }
}

void KillChildren() {
  for (int i = 0; i < g_used; ++i) {
    if (g_pids[i] > 0) ::kill(g_pids[i], SIGKILL);
  }
}

void KillChildrenOnSignal(const char* program, const char* why) {
  g_program = program;
  g_why = why;
  signal(SIGPIPE, SIG_IGN);
  signal(SIGINT, OnSignal);
  signal(SIGTERM, OnSignal);
  signal(SIGALRM, OnSignal);
}

Forked ForkWithControl(const std::function<int(int ctl)>& body) {
  Forked f;
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return f;
  const pid_t parent = ::getpid();
  // Buffered output would otherwise be written twice, once by each process.
  std::fflush(stdout);
  std::fflush(stderr);
  f.pid = ::fork();
  if (f.pid == 0) {
    BecomeChild(parent);
    // Only our end: siblings' control sockets would hide the parent's EOF.
    if (::dup2(sv[1], 3) < 0) _exit(1);
    ::close_range(4, ~0U, 0);
    _exit(body(3));
  }
  ::close(sv[1]);
  if (f.pid < 0) {
    ::close(sv[0]);
    return f;
  }
  f.ctl = sv[0];
  Track(f.pid);
  return f;
}

pid_t SpawnProgram(const std::string& exe, const std::vector<std::string>& args,
                   const std::string& log) {
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    BecomeChild(parent);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGALRM, SIG_DFL);
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || ::dup2(fd, 1) < 0 || ::dup2(fd, 2) < 0) _exit(127);
    ::close_range(3, ~0U, 0);
    std::vector<char*> argv{const_cast<char*>(exe.c_str())};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(exe.c_str(), argv.data());
    std::fprintf(stderr, "exec %s: %s\n", exe.c_str(), std::strerror(errno));
    _exit(127);
  }
  if (pid > 0) Track(pid);
  return pid;
}

}  // namespace sb::bench
