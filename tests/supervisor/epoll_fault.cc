// epoll_fault: an LD_PRELOAD library that makes the daemon's epoll registrations fail on demand,
// so integration tests can show what the real `switchboard run` does when its loop cannot watch
// a child's pidfd or output pipe (nothing else makes epoll_ctl fail on purpose: the real causes
// are a full fs.epoll.max_user_watches or kernel memory, which a test cannot set for one process).
//
// Owns: an epoll_ctl() wrapper. SB_FAULT_EPOLL_PIDFD=N fails the N-th EPOLL_CTL_ADD of a pidfd,
// SB_FAULT_EPOLL_PIPE=N the N-th of a pipe, both with ENOSPC (what a full max_user_watches
// gives); every other call goes to libc. Both counts start at 1 and fail once. At load it removes
// LD_PRELOAD and its own variables from the environment, so the daemon's children run
// unwrapped. Thread-safe (atomic counters); the daemon calls epoll_ctl from its loop thread.
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>

namespace {

using EpollCtl = int (*)(int, int, int, epoll_event*);

long fail_pidfd_at = 0;  // 0: never
long fail_pipe_at = 0;
std::atomic<long> pidfds_seen{0};
std::atomic<long> pipes_seen{0};

long ReadCount(const char* name) {
  const char* v = ::getenv(name);
  return v ? std::strtol(v, nullptr, 10) : 0;
}

__attribute__((constructor)) void Init() {
  fail_pidfd_at = ReadCount("SB_FAULT_EPOLL_PIDFD");
  fail_pipe_at = ReadCount("SB_FAULT_EPOLL_PIPE");
  ::unsetenv("SB_FAULT_EPOLL_PIDFD");
  ::unsetenv("SB_FAULT_EPOLL_PIPE");
  ::unsetenv("LD_PRELOAD");
}

// What /proc/self/fd/<fd> points at: "anon_inode:[pidfd]" ("pidfd:[...]" on kernels with
// pidfs), "pipe:[123]", ...
std::string Target(int fd) {
  char link[64];
  char buf[128];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = ::readlink(link, buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

bool Starts(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

}  // namespace

extern "C" int epoll_ctl(int epfd, int op, int fd, epoll_event* event) {
  static const auto real = reinterpret_cast<EpollCtl>(::dlsym(RTLD_NEXT, "epoll_ctl"));
  if (op == EPOLL_CTL_ADD && (fail_pidfd_at > 0 || fail_pipe_at > 0)) {
    const std::string target = Target(fd);
    bool fail = false;
    if (Starts(target, "anon_inode:[pidfd]") || Starts(target, "pidfd:")) {
      fail = ++pidfds_seen == fail_pidfd_at;
    }
    if (Starts(target, "pipe:")) fail = ++pipes_seen == fail_pipe_at;
    if (fail) {
      errno = ENOSPC;
      return -1;
    }
  }
  return real(epfd, op, fd, event);
}
