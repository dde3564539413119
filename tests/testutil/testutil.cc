#include "tests/testutil/testutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <utility>

#include "common/mono_time.h"

extern char** environ;

namespace sb::testutil {
namespace {

using Clock = MonoClock;

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

int RemainingMs(Clock::time_point deadline) {
  auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

}  // namespace

// ---- Files and time ----

TempDir::TempDir() {
  char tmpl[] = "/tmp/sb-XXXXXX";
  if (mkdtemp(tmpl) != nullptr) path_ = tmpl;
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  if (std::getenv("SB_KEEP_TMP") != nullptr) {
    std::fprintf(stderr, "SB_KEEP_TMP: kept %s\n", path_.c_str());
    return;
  }
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string TempDir::File(std::string_view name) const { return path_ + "/" + std::string(name); }

bool WaitUntil(const std::function<bool()>& cond, std::chrono::milliseconds deadline) {
  const auto end = Clock::now() + deadline;
  for (;;) {
    if (cond()) return true;
    const auto now = Clock::now();
    if (now >= end) return false;
    std::this_thread::sleep_for(std::min<Clock::duration>(std::chrono::milliseconds(5), end - now));
  }
}

double MonotonicNow() { return ToSeconds(MonoNow()); }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::vector<std::string> ReadLines(const std::string& path) {
  std::vector<std::string> lines;
  std::string content = ReadFile(path);
  size_t pos = 0;
  while (pos < content.size()) {
    size_t nl = content.find('\n', pos);
    if (nl == std::string::npos) nl = content.size();
    lines.push_back(content.substr(pos, nl - pos));
    pos = nl + 1;
  }
  return lines;
}

bool WriteFile(const std::string& path, std::string_view content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  out.close();
  return static_cast<bool>(out);
}

// ---- Processes ----

std::string BinDir() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? "" : exe.parent_path().string();
}

std::string BinPath(std::string_view program) { return BinDir() + "/" + std::string(program); }

Result<Process> Process::Start(const std::string& binary, SpawnOptions o) {
  // Everything the child needs is built before fork(): between fork and exec it may only make
  // async-signal-safe calls.
  std::vector<std::string> args{binary};
  args.insert(args.end(), o.args.begin(), o.args.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  std::vector<std::string> env_strings;
  std::set<std::string> replaced;
  for (const std::string& kv : o.env) replaced.insert(kv.substr(0, kv.find('=')));
  if (o.listen_env) {
    replaced.insert("LISTEN_FDS");
    replaced.insert("LISTEN_PID");
  }
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view kv(*e);
    if (!replaced.contains(std::string(kv.substr(0, kv.find('='))))) env_strings.emplace_back(kv);
  }
  env_strings.insert(env_strings.end(), o.env.begin(), o.env.end());
  size_t listen_pid_index = 0;
  if (o.listen_env) {
    env_strings.push_back("LISTEN_FDS=" + std::to_string(o.pass_fds.size()));
    listen_pid_index = env_strings.size();
    env_strings.push_back("LISTEN_PID=" + std::string(24, '\0'));  // digits written by the child
  }
  std::vector<char*> envp;
  for (std::string& kv : env_strings) envp.push_back(kv.data());
  envp.push_back(nullptr);
  char* listen_pid_digits = o.listen_env ? env_strings[listen_pid_index].data() + 11 : nullptr;

  auto open_out = [](const std::string& path) {
    return UniqueFd(path.empty()
                        ? open("/dev/null", O_WRONLY | O_CLOEXEC)
                        : open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  };
  UniqueFd in(open("/dev/null", O_RDONLY | O_CLOEXEC));
  UniqueFd out = open_out(o.output);
  UniqueFd err = o.stderr_output.empty() ? UniqueFd(fcntl(out.get(), F_DUPFD_CLOEXEC, 0))
                                         : open_out(o.stderr_output);
  if (!in.valid() || !out.valid() || !err.valid()) {
    return Status::IoError(Errno("unable to open output for " + binary));
  }
  int err_pipe[2];
  if (pipe2(err_pipe, O_CLOEXEC) != 0) return Status::IoError(Errno("pipe2"));
  UniqueFd err_read(err_pipe[0]), err_write(err_pipe[1]);

  const int n_pass = static_cast<int>(o.pass_fds.size());
  std::vector<int> sources{in.get(), out.get(), err.get()};
  sources.insert(sources.end(), o.pass_fds.begin(), o.pass_fds.end());
  std::vector<int> moved(sources.size(), -1);
  const pid_t parent = getpid();
  const char* cwd = o.cwd.empty() ? nullptr : o.cwd.c_str();

  pid_t pid = fork();
  if (pid < 0) return Status::IoError(Errno("fork"));
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) sigaction(sig, &dfl, nullptr);
    int e = 0;
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) e = errno;
    if (getppid() != parent) _exit(127);  // the test died before prctl took effect
    if (o.new_process_group) setpgid(0, 0);
    // Lift every source (and the error pipe) above the targets first, so no dup2 below clobbers
    // a later source.
    int report_fd = fcntl(err_pipe[1], F_DUPFD_CLOEXEC, 3 + n_pass);
    if (report_fd < 0) {
      e = errno;
      report_fd = err_pipe[1];
    }
    for (size_t i = 0; i < sources.size() && e == 0; ++i) {
      moved[i] = fcntl(sources[i], F_DUPFD_CLOEXEC, 3 + n_pass);
      if (moved[i] < 0) e = errno;
    }
    for (size_t i = 0; i < moved.size() && e == 0; ++i) {
      if (dup2(moved[i], static_cast<int>(i)) < 0) e = errno;
    }
    if (e == 0) close_range(3 + n_pass, ~0U, CLOSE_RANGE_CLOEXEC);
    if (e == 0 && cwd != nullptr && chdir(cwd) != 0) e = errno;
    if (e == 0 && listen_pid_digits != nullptr) {
      char digits[24];
      int len = 0;
      for (pid_t p = getpid(); p > 0; p /= 10) digits[len++] = static_cast<char>('0' + p % 10);
      for (int i = 0; i < len; ++i) listen_pid_digits[i] = digits[len - 1 - i];
      listen_pid_digits[len] = '\0';
    }
    if (e == 0) {
      execve(argv[0], argv.data(), envp.data());
      e = errno;
    }
    (void)!write(report_fd, &e, sizeof e);
    _exit(127);
  }
  err_write.Reset();
  int child_errno = 0;
  ssize_t n;
  do {
    n = read(err_read.get(), &child_errno, sizeof child_errno);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    return Status::IoError("unable to start " + binary + ": " + std::strerror(child_errno));
  }
  return Process(pid, o.new_process_group, o.output);
}

Process::Process(Process&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      group_(other.group_),
      output_(std::move(other.output_)),
      status_(other.status_) {}

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    Kill();
    pid_ = std::exchange(other.pid_, -1);
    group_ = other.group_;
    output_ = std::move(other.output_);
    status_ = other.status_;
  }
  return *this;
}

Process::~Process() { Kill(); }

void Process::Kill() {
  if (pid_ <= 0) return;
  // While any member of the group lives its id cannot be reused, so this is safe after reaping.
  if (group_) kill(-pid_, SIGKILL);
  if (!status_) {
    kill(pid_, SIGKILL);
    int st = 0;
    while (waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
    status_ = st;
  }
  pid_ = -1;
}

bool Process::Signal(int sig) { return pid_ > 0 && !status_ && kill(pid_, sig) == 0; }

bool Process::Running() {
  if (pid_ <= 0 || status_) return false;
  int st = 0;
  pid_t r = waitpid(pid_, &st, WNOHANG);
  if (r == pid_) status_ = st;
  return r == 0;
}

bool Process::WaitExit(std::chrono::milliseconds timeout, int* status) {
  bool exited = WaitUntil([this] { return pid_ > 0 && !Running(); }, timeout) && status_;
  if (exited && status != nullptr) *status = *status_;
  return exited;
}

std::string DescribeWaitStatus(int status) {
  auto name = [](int sig) {
    const char* abbrev = sigabbrev_np(sig);
    return abbrev ? "SIG" + std::string(abbrev) : "signal " + std::to_string(sig);
  };
  if (WIFEXITED(status)) return "exited " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return "killed by " + name(WTERMSIG(status)) + (WCOREDUMP(status) ? " (core dumped)" : "");
  }
  if (WIFSTOPPED(status)) return "stopped by " + name(WSTOPSIG(status));
  return "wait status " + std::to_string(status);
}

// ---- /proc ----

long RssKb(pid_t pid) {
  for (const std::string& line : ReadLines("/proc/" + std::to_string(pid) + "/status")) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

namespace {

// Parses the fields after "(comm)" in /proc/<pid>/stat: state, ppid. comm may contain spaces and
// parentheses, hence the last ')'.
// Entry names except "." and ".."; empty if the directory cannot be opened.
std::vector<std::string> ListDir(const std::string& path) {
  std::vector<std::string> out;
  DIR* dir = opendir(path.c_str());
  if (dir == nullptr) return out;
  while (dirent* d = readdir(dir)) {
    std::string_view name(d->d_name);
    if (name != "." && name != "..") out.emplace_back(name);
  }
  closedir(dir);
  return out;
}

bool StatOf(pid_t pid, char* state, pid_t* ppid) {
  std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  size_t close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return false;
  *state = stat[close + 2];
  *ppid = static_cast<pid_t>(std::strtol(stat.c_str() + close + 3, nullptr, 10));
  return true;
}

}  // namespace

int CountOpenFds(pid_t pid) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  if (access(dir.c_str(), R_OK) != 0) return -1;
  return static_cast<int>(ListDir(dir).size());
}

std::vector<pid_t> ChildrenOf(pid_t pid) {
  std::vector<pid_t> out;
  const std::string task_dir = "/proc/" + std::to_string(pid) + "/task";
  if (access((task_dir + "/" + std::to_string(pid) + "/children").c_str(), F_OK) == 0) {
    for (const std::string& task : ListDir(task_dir)) {
      std::istringstream in(ReadFile(task_dir + "/" + task + "/children"));
      for (pid_t child; in >> child;) out.push_back(child);
    }
    return out;
  }
  // Kernels without CONFIG_PROC_CHILDREN: scan every process's parent.
  for (const std::string& name : ListDir("/proc")) {
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    char state;
    pid_t ppid;
    pid_t candidate = static_cast<pid_t>(std::strtol(name.c_str(), nullptr, 10));
    if (StatOf(candidate, &state, &ppid) && ppid == pid) out.push_back(candidate);
  }
  return out;
}

std::vector<pid_t> DescendantsOf(pid_t pid) {
  std::vector<pid_t> out;
  std::deque<pid_t> queue{pid};
  while (!queue.empty()) {
    for (pid_t child : ChildrenOf(queue.front())) {
      out.push_back(child);
      queue.push_back(child);
    }
    queue.pop_front();
  }
  return out;
}

char ProcState(pid_t pid) {
  char state;
  pid_t ppid;
  return StatOf(pid, &state, &ppid) ? state : 0;
}

bool Alive(pid_t pid) {
  if (pid <= 0 || (kill(pid, 0) != 0 && errno != EPERM)) return false;
  char state = ProcState(pid);
  return state != 0 && state != 'Z' && state != 'X';
}

// ---- The daemon's events file ----

namespace {

std::optional<double> NumberOf(const boost::json::object& o, std::string_view key) {
  const boost::json::value* v = o.if_contains(key);
  if (v == nullptr) return std::nullopt;
  if (const double* d = v->if_double()) return *d;
  if (const int64_t* i = v->if_int64()) return static_cast<double>(*i);
  if (const uint64_t* u = v->if_uint64()) return static_cast<double>(*u);
  return std::nullopt;
}

std::string StringOf(const boost::json::object& o, std::string_view key) {
  const boost::json::value* v = o.if_contains(key);
  if (v == nullptr) return "";
  if (const boost::json::string* s = v->if_string()) return std::string(*s);
  if (v->is_null()) return "";
  return boost::json::serialize(*v);
}

// Boost.JSON stays behind this function: a bad line becomes false plus a message.
bool ParseEvent(std::string_view line, EventRecord* ev, std::string* why) {
  try {
    boost::system::error_code ec;
    boost::json::value v = boost::json::parse(line, ec);
    if (ec) {
      *why = ec.message();
      return false;
    }
    const boost::json::object* o = v.if_object();
    if (o == nullptr) {
      *why = "not a JSON object";
      return false;
    }
    ev->ts = NumberOf(*o, "ts").value_or(0);
    ev->event = StringOf(*o, "event");
    ev->id = StringOf(*o, "id");
    ev->pid = static_cast<int>(NumberOf(*o, "pid").value_or(0));
    if (auto status = NumberOf(*o, "status")) ev->status = static_cast<int>(*status);
    ev->signal = StringOf(*o, "signal");
    ev->reason = StringOf(*o, "reason");
    return true;
  } catch (const std::exception& e) {
    *why = e.what();
    return false;
  }
}

}  // namespace

std::vector<EventRecord> ReadEvents(const std::string& path, std::string* error) {
  std::vector<EventRecord> out;
  const std::string content = ReadFile(path);
  size_t pos = 0;
  int line_no = 0;
  while (pos < content.size()) {
    ++line_no;
    size_t nl = content.find('\n', pos);
    const bool complete = nl != std::string::npos;
    std::string_view line(content.data() + pos, (complete ? nl : content.size()) - pos);
    pos = complete ? nl + 1 : content.size();
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    EventRecord ev;
    std::string why;
    if (ParseEvent(line, &ev, &why)) {
      out.push_back(std::move(ev));
    } else if (complete && error != nullptr) {
      *error += path + ":" + std::to_string(line_no) + ": " + why + ": " + std::string(line) + "\n";
    }
  }
  return out;
}

std::vector<EventRecord> FilterEvents(const std::vector<EventRecord>& events, std::string_view id,
                                      std::string_view event) {
  std::vector<EventRecord> out;
  for (const EventRecord& ev : events) {
    if ((id.empty() || ev.id == id) && (event.empty() || ev.event == event)) out.push_back(ev);
  }
  return out;
}

// ---- sb-testchild's record file ----

std::vector<ChildRecord> ReadRecords(const std::string& path) {
  std::vector<ChildRecord> out;
  for (const std::string& line : ReadLines(path)) {
    std::istringstream in(line);
    ChildRecord r;
    if (!(in >> r.pid >> r.event)) continue;
    if (r.event == "grandchild" && !(in >> r.grandchild)) continue;
    if (!(in >> r.ts)) continue;
    for (std::string token; in >> token;) {
      size_t eq = token.find('=');
      if (eq != std::string::npos) r.fields[token.substr(0, eq)] = token.substr(eq + 1);
    }
    out.push_back(std::move(r));
  }
  return out;
}

// ---- Sockets ----

int FreePort() {
  int port = -1;
  UniqueFd fd = ListenTcp(&port, 1);
  return fd.valid() ? port : -1;
}

UniqueFd ListenTcp(int* port, int backlog) {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (!fd.valid() || bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      listen(fd.get(), backlog) != 0 ||
      getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return UniqueFd();
  }
  *port = ntohs(addr.sin_port);
  return fd;
}

namespace {

// One non-blocking connect attempt bounded by deadline; returns the connected fd or -1 with errno.
int ConnectOnce(const addrinfo* ai, Clock::time_point deadline) {
  UniqueFd fd(
      socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
  if (!fd.valid()) return -1;
  if (connect(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
    if (errno != EINPROGRESS) return -1;
    pollfd p{fd.get(), POLLOUT, 0};
    int r = poll(&p, 1, RemainingMs(deadline));
    if (r <= 0) {
      errno = r == 0 ? ETIMEDOUT : errno;
      return -1;
    }
    int so_error = 0;
    socklen_t len = sizeof so_error;
    getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &so_error, &len);
    if (so_error != 0) {
      errno = so_error;
      return -1;
    }
  }
  fcntl(fd.get(), F_SETFL, fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
  return fd.Release();
}

}  // namespace

int ConnectTcp(const std::string& host, int port, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0) return -1;
  int fd = -1;
  WaitUntil(
      [&] {
        for (const addrinfo* ai = res; ai != nullptr && fd < 0; ai = ai->ai_next) {
          fd = ConnectOnce(ai, deadline);
        }
        return fd >= 0;
      },
      std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()));
  freeaddrinfo(res);
  return fd;
}

std::string ReadAll(int fd, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::string out;
  char buf[4096];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    int r = poll(&p, 1, RemainingMs(deadline));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return out;
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

bool WriteAll(int fd, std::string_view data) {
  bool is_socket = true;
  while (!data.empty()) {
    ssize_t n = is_socket ? send(fd, data.data(), data.size(), MSG_NOSIGNAL)
                          : write(fd, data.data(), data.size());
    if (n < 0 && errno == ENOTSOCK && is_socket) {
      is_socket = false;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      poll(&p, 1, -1);
      continue;
    }
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

Result<NotifyReceiver> NotifyReceiver::Bind(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    return Status::InvalidConfig("notify socket path empty or too long: " + path);
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  const bool abstract = path[0] == '@';
  if (abstract) addr.sun_path[0] = '\0';
  auto len =
      static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + (abstract ? 0 : 1));
  UniqueFd fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd.valid() || bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    return Status::IoError(Errno("unable to bind notify socket " + path));
  }
  return NotifyReceiver(std::move(fd), path);
}

std::optional<std::string> NotifyReceiver::Receive(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  char buf[4096];
  for (;;) {
    pollfd p{fd_.get(), POLLIN, 0};
    int r = poll(&p, 1, RemainingMs(deadline));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return std::nullopt;
    ssize_t n = recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n >= 0) return std::string(buf, static_cast<size_t>(n));
    if (errno != EINTR && errno != EAGAIN) return std::nullopt;
  }
}

}  // namespace sb::testutil
