#include "supervisor/process_launcher.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

namespace sb::supervisor {

namespace {

Status Errno(const std::string& what) { return Status::IoError(what + ": " + strerror(errno)); }

// Everything the child needs, prepared before clone(): the child shares our
// memory (CLONE_VM) and must not allocate or take locks.
struct ChildArgs {
  const char* program;
  char** argv;
  char** envp;
  int out, err;
  const int* src_fds;
  size_t n_fds;
  char* listen_pid_slot;  // "LISTEN_PID=" + room for the digits
  pid_t parent;
  volatile int error = 0;  // set by the child when it cannot exec; read once it is gone
};

// Runs in the child between clone() and execve(); we are suspended meanwhile
// (CLONE_VFORK), exactly as posix_spawn works. Only raw system calls here.
int ChildMain(void* raw) {
  auto* a = static_cast<ChildArgs*>(raw);
  auto fail = [a](int err) {
    a->error = err;
    ::_exit(127);
  };
  // Die with the daemon; close the race where it died before prctl.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) fail(errno);
  if (::getppid() != a->parent) ::_exit(127);
  if (::setpgid(0, 0) < 0) fail(errno);
  // Restore what the daemon changed for itself (mask and dispositions are
  // per-process copies here: no CLONE_SIGHAND).
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int s : {SIGPIPE, SIGXFSZ, SIGTERM, SIGINT, SIGHUP, SIGCHLD}) ::signal(s, SIG_DFL);
  if (::dup2(a->out, STDOUT_FILENO) < 0) fail(errno);
  if (::dup2(a->err, STDERR_FILENO) < 0) fail(errno);
  int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
  if (a->n_fds > 0) {
    // Move the sockets out of the way first: a source fd may sit where a
    // target must go (3, 4, ...). F_DUPFD_CLOEXEC keeps the copies private.
    int high[64];
    size_t n = a->n_fds < 64 ? a->n_fds : 64;
    for (size_t i = 0; i < n; ++i) {
      high[i] = ::fcntl(a->src_fds[i], F_DUPFD_CLOEXEC, 100);
      if (high[i] < 0) fail(errno);
    }
    for (size_t i = 0; i < n; ++i) {
      if (::dup2(high[i], 3 + static_cast<int>(i)) < 0) fail(errno);  // dup2 clears CLOEXEC
    }
    // LISTEN_PID must be our own pid (sd_listen_fds checks it).
    char digits[16];
    int len = 0;
    for (pid_t p = ::getpid(); p > 0; p /= 10) digits[len++] = static_cast<char>('0' + p % 10);
    char* dst = a->listen_pid_slot + 11;  // strlen("LISTEN_PID=")
    while (len > 0) *dst++ = digits[--len];
    *dst = '\0';
  }
  ::execve(a->program, a->argv, a->envp);
  fail(errno);
  return 127;
}

}  // namespace

std::string ResolveProgram(const std::string& name, const std::string& path) {
  if (name.find('/') != std::string::npos) return name;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    std::string dir = path.substr(start, end - start);
    if (dir.empty()) dir = ".";
    std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return name;  // let execve report ENOENT
}

Result<LaunchedProcess> Launch(const LaunchRequest& req) {
  if (req.argv.empty()) return Status::InvalidConfig("empty command");

  // Prepare argv/envp before clone().
  std::string program = ResolveProgram(req.argv[0], req.path);
  std::vector<std::string> env_store;
  for (char** e = environ; *e; ++e) {
    std::string kv(*e);
    std::string key = kv.substr(0, kv.find('='));
    bool overridden = key == "NOTIFY_SOCKET" || key == "LISTEN_FDS" || key == "LISTEN_PID" ||
                      key == "LISTEN_FDNAMES";
    for (const auto& [k, v] : req.env) overridden |= (k == key);
    if (!overridden) env_store.push_back(std::move(kv));
  }
  for (const auto& [k, v] : req.env) env_store.push_back(k + "=" + v);
  if (!req.notify_socket.empty()) env_store.push_back("NOTIFY_SOCKET=" + req.notify_socket);
  std::string listen_pid_prefix = "LISTEN_PID=";
  if (!req.listen_fds.empty()) {
    env_store.push_back("LISTEN_FDS=" + std::to_string(req.listen_fds.size()));
    std::string names;
    for (const auto& [name, fd] : req.listen_fds) names += (names.empty() ? "" : ":") + name;
    env_store.push_back("LISTEN_FDNAMES=" + names);
    // Filled in by the child with its own pid (only it knows it before exec).
    env_store.push_back(listen_pid_prefix + std::string(16, '\0'));
  }
  std::vector<char*> argv;
  for (const std::string& a : req.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (std::string& e : env_store) envp.push_back(e.data());
  envp.push_back(nullptr);
  char* listen_pid_slot = req.listen_fds.empty() ? nullptr : envp[envp.size() - 2];
  std::vector<int> src_fds;
  for (const auto& [name, fd] : req.listen_fds) src_fds.push_back(fd);

  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) < 0) return Errno("pipe");
  UniqueFd out_r(out_pipe[0]), out_w(out_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC) < 0) return Errno("pipe");
  UniqueFd err_r(err_pipe[0]), err_w(err_pipe[1]);

  ChildArgs args;
  args.program = program.c_str();
  args.argv = argv.data();
  args.envp = envp.data();
  args.out = out_w.get();
  args.err = err_w.get();
  args.src_fds = src_fds.data();
  args.n_fds = src_fds.size();
  args.listen_pid_slot = listen_pid_slot;
  args.parent = ::getpid();
  // The child runs on this stack while we are suspended (CLONE_VFORK).
  std::vector<char> stack(64 * 1024);
  int pidfd = -1;
  pid_t pid = ::clone(ChildMain, stack.data() + stack.size(),
                      CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, &args, &pidfd);
  if (pid < 0) return Errno("clone");
  UniqueFd pidfd_owner(pidfd);
  if (args.error != 0) {
    // The child never exec'd: reap it here so nothing is left behind.
    int st;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return Status::IoError("unable to execute '" + req.argv[0] + "': " + strerror(args.error));
  }
  out_w.Reset();
  err_w.Reset();

  LaunchedProcess p;
  p.pid = pid;
  p.pidfd = std::move(pidfd_owner);
  ::fcntl(out_r.get(), F_SETFL, O_NONBLOCK);
  ::fcntl(err_r.get(), F_SETFL, O_NONBLOCK);
  p.out = std::move(out_r);
  p.err = std::move(err_r);
  return p;
}

}  // namespace sb::supervisor
