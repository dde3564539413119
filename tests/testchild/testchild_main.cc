// sb-testchild: a scriptable child process for supervisor integration tests and benchmarks.
//
// Owns: one process that behaves as its flags say: it becomes ready over the systemd notify
// protocol (or never does), exits, crashes, ignores or delays SIGTERM, floods its output, serves
// the sockets it inherits through LISTEN_FDS, plays either side of a token hand-off
// (docs/UPGRADE.md: a new process in SWITCHBOARD_HANDOFF=receive mode listens on
// SWITCHBOARD_HANDOFF_SOCKET, the old one sends a byte there on SIGUSR2) and appends its lifecycle
// to a shared record file.
// Single-threaded: one poll() loop over a signalfd, the inherited listening sockets and any
// pending output, so signal handling needs no async-signal-safe tricks. Depends on libc, the C++
// standard library and CLI11 only. The record format is parsed by tests/testutil (ReadRecords).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/mono_time.h"

namespace {

constexpr int64_t kNsPerMs = 1'000'000;

struct Options {
  int64_t ready_delay_ms = 0;
  bool no_ready = false;
  int64_t exit_after_ms = -1;  // -1: never
  int code = 0;
  int64_t crash_after_ms = -1;  // -1: never
  std::string crash_signal = "KILL";
  int exit_before_ready = -1;  // -1: not requested
  bool ignore_term = false;
  int64_t term_delay_ms = 0;
  int64_t flood_stdout = 0;
  int64_t flood_stderr = 0;
  bool no_newline = false;
  int line_length = 100;
  std::vector<std::string> print;
  bool serve = false;
  std::string record;
  bool spawn_grandchild = false;
  bool handoff = false;
  bool receive_no_ready = false;  // in receive mode only
  int receive_exit = -1;          // in receive mode only: exit with it instead of becoming ready
};

int64_t NowNs() { return sb::MonoNowNs(); }

std::string FormatTs(int64_t ns) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%lld.%06lld", static_cast<long long>(ns / 1'000'000'000),
                static_cast<long long>(ns % 1'000'000'000 / 1000));
  return buf;
}

void Warn(const std::string& msg) {
  std::string line = "sb-testchild: " + msg + "\n";
  (void)!write(STDERR_FILENO, line.data(), line.size());
}

bool WriteAll(int fd, const char* data, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, data, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

// Appends "<pid> <head> <ts>[ <tail>]\n" with one write() on an O_APPEND fd, so lines from many
// children sharing the file never interleave.
class Recorder {
 public:
  bool Open(const std::string& path) {
    if (path.empty()) return true;
    fd_ = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    return fd_ >= 0;
  }
  // ts_ns: the moment the event took effect, so timers and records agree exactly.
  void Record(const std::string& head, const std::string& tail = "",
              int64_t ts_ns = NowNs()) const {
    if (fd_ < 0) return;
    std::string line = std::to_string(getpid()) + " " + head + " " + FormatTs(ts_ns);
    if (!tail.empty()) line += " " + tail;
    line += "\n";
    (void)!write(fd_, line.data(), line.size());
  }

 private:
  int fd_ = -1;
};

std::string EnvTokens() {
  std::string out;
  for (const char* key : {"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET"}) {
    if (const char* v = getenv(key)) out += std::string(out.empty() ? "" : " ") + key + "=" + v;
  }
  return out;
}

// The client half of sd_notify(3): one datagram to $NOTIFY_SOCKET; '@' means abstract namespace.
void Notify(const char* msg) {
  const char* path = getenv("NOTIFY_SOCKET");
  if (path == nullptr || *path == '\0') return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  size_t len = strlen(path);
  if (len >= sizeof addr.sun_path) {
    Warn("NOTIFY_SOCKET path too long");
    return;
  }
  memcpy(addr.sun_path, path, len);
  bool abstract = path[0] == '@';
  if (abstract) addr.sun_path[0] = '\0';
  auto addr_len =
      static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len + (abstract ? 0 : 1));
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr),
                       addr_len) < 0) {
    Warn(std::string("unable to notify ") + path + ": " + strerror(errno));
  }
  if (fd >= 0) close(fd);
}

int ParseSignal(std::string name) {
  if (!name.empty() && name.find_first_not_of("0123456789") == std::string::npos) {
    return std::atoi(name.c_str());
  }
  for (char& c : name) c = static_cast<char>(toupper(static_cast<unsigned char>(c)));
  if (name.rfind("SIG", 0) == 0) name.erase(0, 3);
  for (int sig = 1; sig < NSIG; ++sig) {
    const char* abbrev = sigabbrev_np(sig);
    if (abbrev != nullptr && name == abbrev) return sig;
  }
  return -1;
}

[[noreturn]] void Exit(const Recorder& rec, int code) {
  rec.Record("exit", "code=" + std::to_string(code));
  std::exit(code);
}

[[noreturn]] void Crash(const Recorder& rec, int sig) {
  const char* abbrev = sigabbrev_np(sig);
  rec.Record("crash", std::string("signal=SIG") + (abbrev ? abbrev : "?"));
  rlimit no_core{0, 0};  // SEGV/ABRT must not litter the test directory with cores
  setrlimit(RLIMIT_CORE, &no_core);
  signal(sig, SIG_DFL);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  sigprocmask(SIG_UNBLOCK, &set, nullptr);
  raise(sig);
  raise(SIGKILL);  // the chosen signal was not fatal
  _exit(128 + sig);
}

// A sleeper in our process group that tests expect the supervisor to clean up with us. It keeps
// stdout/stderr (a real leaked helper would) but not the listening sockets or the record file.
void SpawnGrandchild(const Recorder& rec, const sigset_t& original_mask, bool ignore_term) {
  pid_t pid = fork();
  if (pid < 0) {
    Warn(std::string("fork: ") + strerror(errno));
    return;
  }
  if (pid == 0) {
    signal(SIGTERM, ignore_term ? SIG_IGN : SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    sigprocmask(SIG_SETMASK, &original_mask, nullptr);
    close_range(3, ~0U, 0);
    for (;;) pause();
  }
  rec.Record("grandchild " + std::to_string(pid));
}

// Output written as fast as the reader takes it, one chunk per POLLOUT so SIGTERM is still
// handled promptly when the reader stalls.
struct Flood {
  int fd = -1;
  int64_t left = 0;
  int64_t pos = 0;
  size_t chunk = 4096;
};

void StartFlood(Flood& f, int fd, int64_t bytes) {
  f.fd = fd;
  f.left = bytes;
  struct stat st;
  // A pipe that polled writable takes one page without blocking; a file takes anything.
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) f.chunk = 64 * 1024;
}

void PumpFlood(Flood& f, const std::string& pattern, size_t period) {
  size_t n = static_cast<size_t>(std::min<int64_t>(f.left, static_cast<int64_t>(f.chunk)));
  ssize_t w = write(f.fd, pattern.data() + f.pos % static_cast<int64_t>(period), n);
  if (w < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (w <= 0) {
    Warn(std::string("flood stopped: ") + strerror(errno));
    f.left = 0;
    return;
  }
  f.left -= w;
  f.pos += w;
}

void Answer(int listen_fd, const std::string& reply, std::vector<int>& serve_fds) {
  for (;;) {
    int c = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        Warn(std::string("accept: ") + strerror(errno) + "; no longer serving this fd");
        std::erase(serve_fds, listen_fd);
      }
      return;
    }
    (void)!send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
    // Drain what the client sent so close() sends FIN rather than a RST that could eat the reply.
    shutdown(c, SHUT_WR);
    char sink[512];
    while (recv(c, sink, sizeof sink, MSG_DONTWAIT) > 0) {
    }
    close(c);
  }
}

std::vector<int> ListenFds() {
  const char* fds = getenv("LISTEN_FDS");
  const char* pid = getenv("LISTEN_PID");
  if (fds == nullptr || pid == nullptr || std::atol(pid) != getpid()) return {};
  std::vector<int> out;
  for (int fd = 3; fd < 3 + std::atoi(fds); ++fd) {
    // Non-blocking: a sibling sharing the socket may win the race for a queued connection.
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    out.push_back(fd);
  }
  return out;
}

// The receiving side of a hand-off: a SOCK_SEQPACKET socket at `path`, as the contract says.
int ListenHandoff(const std::string& path) {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) {
    Warn("SWITCHBOARD_HANDOFF_SOCKET path too long");
    return -1;
  }
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  unlink(path.c_str());
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 ||
      chmod(path.c_str(), 0600) < 0 || listen(fd, 1) < 0) {
    Warn("hand-off socket " + path + ": " + strerror(errno));
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

// The sending side, on SIGUSR2: one byte, then wait for the receiver's one-byte acknowledgement.
bool SendHandoff(const std::string& path) {
  sockaddr_un addr{};
  if (path.empty() || path.size() >= sizeof addr.sun_path) return false;
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  char byte = 'h';
  bool ok = fd >= 0 && connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
            send(fd, &byte, 1, MSG_NOSIGNAL) == 1 && recv(fd, &byte, 1, 0) == 1;
  if (!ok) Warn("hand-off to " + path + " failed: " + strerror(errno) + "; still serving");
  if (fd >= 0) close(fd);
  return ok;
}

int Run(const Options& o) {
  const int64_t start = NowNs();
  signal(SIGPIPE, SIG_IGN);
  sigset_t mask, original_mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  if (o.handoff) sigaddset(&mask, SIGUSR2);
  if (o.ignore_term) {
    signal(SIGTERM, SIG_IGN);
  } else {
    sigaddset(&mask, SIGTERM);
  }
  sigprocmask(SIG_BLOCK, &mask, &original_mask);
  int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) {
    Warn(std::string("signalfd: ") + strerror(errno));
    return 1;
  }

  Recorder rec;
  if (!rec.Open(o.record)) {
    Warn("unable to open " + o.record + ": " + strerror(errno));
    return 1;
  }
  rec.Record("start", EnvTokens(), start);
  if (o.spawn_grandchild) SpawnGrandchild(rec, original_mask, o.ignore_term);
  if (o.exit_before_ready >= 0) Exit(rec, o.exit_before_ready);

  const char* handoff_env = getenv("SWITCHBOARD_HANDOFF");
  const bool receiving =
      o.handoff && handoff_env != nullptr && std::string(handoff_env) == "receive";
  const char* handoff_path_env = getenv("SWITCHBOARD_HANDOFF_SOCKET");
  const std::string handoff_path = handoff_path_env ? handoff_path_env : "";
  int handoff_fd = -1;
  if (receiving) {
    handoff_fd = ListenHandoff(handoff_path);
    if (handoff_fd < 0) Exit(rec, 1);
    rec.Record("handoff-listen");
    if (o.receive_exit >= 0) Exit(rec, o.receive_exit);
  }
  const bool no_ready = o.no_ready || (receiving && o.receive_no_ready);

  // A receiver serves only once it has taken over, as a shard does.
  std::vector<int> inherited;
  std::vector<int> serve_fds;
  if (o.serve) {
    inherited = ListenFds();
    if (inherited.empty()) Warn("--serve: no LISTEN_FDS for this process");
    if (!receiving) serve_fds = inherited;
  }
  const char* tag = getenv("TESTCHILD_TAG");
  const std::string reply =
      std::string(tag ? tag : "child") + " " + std::to_string(getpid()) + "\n";

  const size_t period = o.no_newline ? 1 : static_cast<size_t>(o.line_length);
  std::string pattern(64 * 1024 + period, 'x');
  if (!o.no_newline) {
    for (size_t i = period - 1; i < pattern.size(); i += period) pattern[i] = '\n';
  }
  Flood floods[2];

  const int64_t ready_at = start + o.ready_delay_ms * kNsPerMs;
  int64_t base = -1;  // when exit/crash timers start: ready, or start under --no-ready
  int64_t term_deadline = -1;
  for (;;) {
    int64_t now = NowNs();
    if (base < 0 && (no_ready || now >= ready_at)) {
      if (!no_ready) {
        // Recorded first: whoever sees READY=1 may read the record file at once.
        rec.Record("ready", "", now);
        Notify("READY=1");
      }
      base = no_ready ? start : now;
      std::string lines;
      for (const std::string& l : o.print) lines += l + "\n";
      WriteAll(STDOUT_FILENO, lines.data(), lines.size());
      StartFlood(floods[0], STDOUT_FILENO, o.flood_stdout);
      StartFlood(floods[1], STDERR_FILENO, o.flood_stderr);
    }
    const bool flooding = floods[0].left > 0 || floods[1].left > 0;
    const int64_t crash_at =
        base >= 0 && o.crash_after_ms >= 0 ? base + o.crash_after_ms * kNsPerMs : -1;
    const int64_t exit_at =
        base >= 0 && o.exit_after_ms >= 0 ? base + o.exit_after_ms * kNsPerMs : -1;
    if (crash_at >= 0 && now >= crash_at) Crash(rec, ParseSignal(o.crash_signal));
    if (exit_at >= 0 && now >= exit_at && !flooding) Exit(rec, o.code);
    if (term_deadline >= 0 && now >= term_deadline) Exit(rec, 0);

    int64_t wake = -1;
    for (int64_t t : {base < 0 ? ready_at : -1, crash_at, flooding ? -1 : exit_at, term_deadline}) {
      if (t >= 0 && (wake < 0 || t < wake)) wake = t;
    }
    int timeout_ms = wake < 0 ? -1 : static_cast<int>((wake - now + kNsPerMs - 1) / kNsPerMs);

    std::vector<pollfd> pfds{{sfd, POLLIN, 0}};
    if (handoff_fd >= 0) pfds.push_back({handoff_fd, POLLIN, 0});
    for (int fd : serve_fds) pfds.push_back({fd, POLLIN, 0});
    for (const Flood& f : floods) {
      if (f.left > 0) pfds.push_back({f.fd, POLLOUT, 0});
    }
    if (poll(pfds.data(), pfds.size(), timeout_ms) < 0 && errno != EINTR) {
      Warn(std::string("poll: ") + strerror(errno));
      return 1;
    }

    signalfd_siginfo si;
    while (read(sfd, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
      if (si.ssi_signo == SIGCHLD) {
        while (waitpid(-1, nullptr, WNOHANG) > 0) {
        }
      } else if (si.ssi_signo == SIGUSR2 && o.handoff) {
        rec.Record("handoff-send");
        if (SendHandoff(handoff_path)) Exit(rec, 0);
      } else if (si.ssi_signo == SIGTERM && term_deadline < 0) {
        const int64_t received = NowNs();
        rec.Record("term", "", received);
        if (o.term_delay_ms <= 0) Exit(rec, 0);
        term_deadline = received + o.term_delay_ms * kNsPerMs;
      }
    }
    for (size_t i = 1; i < pfds.size(); ++i) {
      if (pfds[i].revents == 0) continue;
      if (pfds[i].fd == handoff_fd) {
        int c = accept4(handoff_fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) continue;
        char byte = 0;
        // The one byte is the whole state; acknowledged, it is ours: serve and report.
        if (recv(c, &byte, 1, 0) == 1 && send(c, &byte, 1, MSG_NOSIGNAL) == 1) {
          rec.Record("handoff-received");
          close(handoff_fd);
          handoff_fd = -1;
          unlink(handoff_path.c_str());
          serve_fds = inherited;
          Notify("STATUS=upgraded connections=0 ms=1");
        }
        close(c);
        break;  // pfds refers to fds that may have changed
      }
      if (pfds[i].events == POLLIN) Answer(pfds[i].fd, reply, serve_fds);
      for (Flood& f : floods) {
        if (pfds[i].events == POLLOUT && f.fd == pfds[i].fd && f.left > 0) {
          PumpFlood(f, pattern, period);
          break;
        }
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Scriptable child process for Switchboard tests and benchmarks."};
  auto millis = [&app](const char* name, int64_t& into, const char* help) {
    app.add_option(name, into, help)->type_name("MS")->check(CLI::NonNegativeNumber);
  };
  millis("--ready-delay", o.ready_delay_ms, "Wait MS ms before sending READY=1");
  app.add_flag("--no-ready", o.no_ready, "Never send READY=1");
  millis("--exit-after", o.exit_after_ms,
         "Exit with --code MS ms after ready (after start with --no-ready), once any flood is "
         "written");
  app.add_option("--code", o.code, "Exit status for --exit-after")
      ->type_name("N")
      ->check(CLI::Range(0, 255));
  millis("--crash-after", o.crash_after_ms,
         "Die by --crash-signal MS ms after ready (after start with --no-ready)");
  app.add_option("--crash-signal", o.crash_signal, "Signal for --crash-after (default KILL)")
      ->type_name("NAME")
      ->check([](const std::string& s) {
        return ParseSignal(s) > 0 && ParseSignal(s) < NSIG ? "" : "unknown signal " + s;
      });
  app.add_option("--exit-before-ready", o.exit_before_ready,
                 "Exit with CODE at once, without notifying")
      ->type_name("CODE")
      ->check(CLI::Range(0, 255));
  app.add_flag("--ignore-term", o.ignore_term, "Ignore SIGTERM (the grandchild too)");
  millis("--term-delay", o.term_delay_ms, "On SIGTERM keep running MS ms, then exit 0");
  app.add_option("--flood-stdout", o.flood_stdout, "After ready, write BYTES to stdout")
      ->type_name("BYTES")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--flood-stderr", o.flood_stderr, "After ready, write BYTES to stderr")
      ->type_name("BYTES")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--no-newline", o.no_newline, "Flood without any newline");
  app.add_option("--line-length", o.line_length, "Flood line length, newline included (100)")
      ->type_name("N")
      ->check(CLI::Range(1, 4096));
  app.add_option("--print", o.print, "After ready, print LINE to stdout (repeatable)")
      ->type_name("LINE")
      ->allow_extra_args(false);
  app.add_flag("--serve", o.serve, "Answer '<TESTCHILD_TAG|child> <pid>' on each LISTEN_FDS fd");
  app.add_option("--record", o.record, "Append '<pid> <event> <ts> ...' lines to FILE")
      ->type_name("FILE");
  app.add_flag("--spawn-grandchild", o.spawn_grandchild,
               "Fork a sleeper in this process group and record its pid");
  app.add_flag("--handoff", o.handoff,
               "Take part in hand-offs: with SWITCHBOARD_HANDOFF=receive listen on "
               "SWITCHBOARD_HANDOFF_SOCKET before READY=1, take a byte, ack it, serve and report "
               "STATUS=upgraded; otherwise on SIGUSR2 send a byte there and exit 0 once acked");
  app.add_flag("--receive-no-ready", o.receive_no_ready,
               "With --handoff, in receive mode: never send READY=1");
  app.add_option("--receive-exit", o.receive_exit,
                 "With --handoff, in receive mode: exit with CODE once listening, before ready")
      ->type_name("CODE")
      ->check(CLI::Range(0, 255));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  return Run(o);
}
