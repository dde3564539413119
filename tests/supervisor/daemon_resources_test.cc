// Resources of the real `switchboard run` daemon, end to end with sb-testchild:
//  * listening sockets: handed over as LISTEN_FDS (fd 3) only to the children that name them,
//    held by the daemon across restarts (clients wait in the backlog, never refused) and while
//    no child runs;
//  * no leaks over 1,000 crash/restart cycles (fds, memory, zombies) and no CPU while idle;
//  * no orphans: children die with a SIGKILLed daemon, and a child's process group goes with it;
//  * child output: logged as `[id] line` / `[id:stderr] line`, over-long lines cut into 8 KiB
//    pieces, floods neither stall supervision nor grow the daemon's memory;
//  * the events file: one well-formed JSON object per line, replica ids and substitution;
//  * `switchboard check` / `run` on invalid input and CLI usage errors.
// Figures (cycle rate, fd counts, RSS, CPU ticks) are printed with a "[ figures ]" prefix.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "tests/supervisor/daemon_harness.h"
#include "tests/testutil/testutil.h"

namespace sb::testutil {
namespace {

// True once `pid` sleeps in nanosleep (sleep(1) has finished starting: the
// dynamic loader has closed the libraries it opened), from /proc/<pid>/syscall.
bool SleepingInNanosleep(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/syscall");
  long nr = -1;
  if (!(in >> nr)) return false;
  return nr == SYS_clock_nanosleep || nr == SYS_nanosleep;
}

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

#if defined(__SANITIZE_ADDRESS__)
// ASan's quarantine and shadow memory make RSS meaningless as a leak signal: memory bounds are
// printed but not asserted in sanitizer builds.
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

constexpr long kMiB = 1024;  // RssKb() counts KiB

std::string Replace(std::string s, const std::string& from, const std::string& to) {
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size())) {
    s.replace(pos, from.size(), to);
  }
  return s;
}

// WaitUntil with a coarser period, for conditions that read large files or /proc.
bool PollUntil(const std::function<bool()>& cond, milliseconds deadline,
               milliseconds every = milliseconds(20)) {
  const auto end = Clock::now() + deadline;
  for (;;) {
    if (cond()) return true;
    if (Clock::now() >= end) return false;
    std::this_thread::sleep_for(every);
  }
}

// One connect() to 127.0.0.1:port, without ConnectTcp's retries: a refusal is a result here.
// Returns the connected fd, or an invalid one with *err set to errno.
UniqueFd ConnectOnce(int port, int* err) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (!fd.valid() ||
      ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    *err = errno;
    return UniqueFd();
  }
  *err = 0;
  return fd;
}

// Target of /proc/<pid>/fd/<fd> ("socket:[123]", "pipe:[45]", a path), or "".
std::string FdTarget(pid_t pid, const std::string& fd) {
  std::error_code ec;
  auto target = std::filesystem::read_symlink("/proc/" + std::to_string(pid) + "/fd/" + fd, ec);
  return ec ? "" : target.string();
}

// fd number -> target for every fd pid holds.
std::map<int, std::string> FdTargets(pid_t pid) {
  std::map<int, std::string> out;
  std::error_code ec;
  for (const auto& entry :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    const std::string name = entry.path().filename().string();
    out[std::stoi(name)] = FdTarget(pid, name);
  }
  return out;
}

// The kinds of fds pid holds, sorted: "pipe", "socket", "anon_inode:[pidfd]", a path...; inode
// numbers are dropped so that two snapshots of the same state compare equal.
std::vector<std::string> FdKinds(pid_t pid) {
  std::vector<std::string> out;
  for (auto& [fd, target] : FdTargets(pid)) {
    // Closed between the listing and its readlink: a spawn in progress
    // (the census is taken while children come and go).
    if (target.empty()) continue;
    std::string kind = target;
    size_t bracket = kind.find(":[");
    if (bracket != std::string::npos && bracket + 2 < kind.size() &&
        std::isdigit(static_cast<unsigned char>(kind[bracket + 2]))) {
      kind.resize(bracket);
    }
    out.push_back(kind);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string Join(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

// utime + stime of pid in clock ticks (fields 14 and 15 of /proc/<pid>/stat); -1 if unreadable.
long CpuTicks(pid_t pid) {
  std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  size_t close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return -1;
  std::istringstream in(stat.substr(close + 2));
  std::vector<std::string> fields;  // fields[0] is field 3, the state
  for (std::string f; in >> f;) fields.push_back(f);
  if (fields.size() < 13) return -1;
  return std::stol(fields[11]) + std::stol(fields[12]);
}

// CPU ticks pid uses while the test sleeps `window` (a measurement window, not a wait).
long IdleTicks(pid_t pid, milliseconds window) {
  long before = CpuTicks(pid);
  std::this_thread::sleep_for(window);
  long after = CpuTicks(pid);
  return before < 0 || after < 0 ? -1 : after - before;
}

std::optional<double> JsonNumber(const boost::json::value* v) {
  if (v == nullptr) return std::nullopt;
  if (v->is_double()) return v->get_double();
  if (v->is_int64()) return static_cast<double>(v->get_int64());
  if (v->is_uint64()) return static_cast<double>(v->get_uint64());
  return std::nullopt;
}

std::string JsonString(const boost::json::object& o, std::string_view key) {
  const boost::json::value* v = o.if_contains(key);
  return v != nullptr && v->is_string() ? std::string(v->get_string()) : "";
}

// Follows the daemon's events file as it grows, parsing only the lines appended since the last
// Poll(): cheap enough to call in a loop while thousands of events are written.
class EventTail {
 public:
  explicit EventTail(std::string path) : path_(std::move(path)) {}

  void Poll() {
    std::ifstream in(path_, std::ios::binary);
    if (!in) return;
    in.seekg(static_cast<std::streamoff>(offset_));
    const std::string chunk{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    size_t pos = 0;
    for (size_t nl; (nl = chunk.find('\n', pos)) != std::string::npos; pos = nl + 1) {
      boost::system::error_code ec;
      boost::json::value v = boost::json::parse(std::string_view(chunk).substr(pos, nl - pos), ec);
      if (ec || !v.is_object()) continue;
      const boost::json::object& o = v.get_object();
      EventRecord e;
      e.ts = JsonNumber(o.if_contains("ts")).value_or(0);
      e.event = JsonString(o, "event");
      e.id = JsonString(o, "id");
      e.pid = static_cast<int>(JsonNumber(o.if_contains("pid")).value_or(0));
      events_.push_back(std::move(e));
    }
    offset_ += pos;  // a partial last line is read again next time
  }

  const std::vector<EventRecord>& events() const { return events_; }

  size_t Count(std::string_view id, std::string_view event) const {
    return static_cast<size_t>(std::count_if(events_.begin(), events_.end(), [&](const auto& e) {
      return e.id == id && e.event == event;
    }));
  }

  // The pid of the latest `started` event of id, or 0.
  int LatestPid(std::string_view id) const {
    for (auto it = events_.rbegin(); it != events_.rend(); ++it) {
      if (it->id == id && it->event == "started") return it->pid;
    }
    return 0;
  }

 private:
  std::string path_;
  size_t offset_ = 0;
  std::vector<EventRecord> events_;
};

// Lines of the daemon's log that carry output of child `tag` ("blob", "talker:stderr"): what
// follows "[tag] ", one entry per log line.
std::vector<std::string> ChildLines(const std::string& log, const std::string& tag) {
  std::vector<std::string> out;
  const std::string marker = "[" + tag + "] ";
  for (size_t pos = log.find(marker); pos != std::string::npos; pos = log.find(marker, pos)) {
    size_t start = pos + marker.size();
    size_t nl = log.find('\n', start);
    if (nl == std::string::npos) nl = log.size();
    out.push_back(log.substr(start, nl - start));
    pos = nl;
  }
  return out;
}

// Number of log lines carrying output of `tag`, without copying them.
size_t CountChildLines(const std::string& log, const std::string& tag) {
  const std::string marker = "[" + tag + "] ";
  size_t n = 0;
  for (size_t pos = log.find(marker); pos != std::string::npos;
       pos = log.find(marker, pos + marker.size())) {
    ++n;
  }
  return n;
}

// The grandchild that child `parent` recorded in `record_file`, or 0.
pid_t GrandchildOf(const std::string& record_file, pid_t parent) {
  for (const ChildRecord& r : ReadRecords(record_file)) {
    if (r.pid == parent && r.event == "grandchild") return r.grandchild;
  }
  return 0;
}

std::optional<ChildRecord> StartRecordOf(const std::string& record_file, pid_t pid) {
  for (const ChildRecord& r : ReadRecords(record_file)) {
    if (r.pid == pid && r.event == "start") return r;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// 1. Listening sockets

TEST(DaemonResourcesTest, ListeningSocketGoesToFd3OfTheChildrenThatNameIt) {
  const int port = FreePort();
  ASSERT_GT(port, 0);
  DaemonHarness d(Replace(R"(
sockets:
  - {name: gw, listen: "127.0.0.1:PORT"}
supervisor:
  children:
    - id: server
      command: ["{{bin}}/sb-testchild", --serve, --record, "{{dir}}/rec"]
      sockets: [gw]
    - id: plain
      command: ["{{bin}}/sb-testchild", --record, "{{dir}}/rec"]
    - id: bare
      ready: exec
      command: [sleep, "1000"]
    - id: bare-socket
      ready: exec
      command: [sleep, "1000"]
      sockets: [gw]
)",
                          "PORT", std::to_string(port)));
  ASSERT_TRUE(d.WaitReady()) << d.log();
  const pid_t server = d.PidOf("server");
  const pid_t plain = d.PidOf("plain");
  const pid_t bare = d.PidOf("bare");
  const pid_t bare_socket = d.PidOf("bare-socket");
  ASSERT_GT(server, 0);
  ASSERT_GT(plain, 0);

  // The systemd protocol, as the child saw its environment.
  auto server_start = StartRecordOf(d.dir().File("rec"), server);
  ASSERT_TRUE(server_start.has_value());
  EXPECT_EQ(server_start->fields["LISTEN_FDS"], "1");
  EXPECT_EQ(server_start->fields["LISTEN_PID"], std::to_string(server));
  EXPECT_EQ(server_start->fields["LISTEN_FDNAMES"], "gw");
  EXPECT_FALSE(server_start->fields["NOTIFY_SOCKET"].empty());
  auto plain_start = StartRecordOf(d.dir().File("rec"), plain);
  ASSERT_TRUE(plain_start.has_value());
  EXPECT_FALSE(plain_start->fields.contains("LISTEN_FDS"));
  EXPECT_FALSE(plain_start->fields.contains("LISTEN_PID"));
  EXPECT_FALSE(plain_start->fields.contains("LISTEN_FDNAMES"));
  EXPECT_FALSE(plain_start->fields["NOTIFY_SOCKET"].empty());

  // fd 3 of the server is the daemon's own listening socket (same inode), and no other child fd
  // refers to it.
  const std::string socket = FdTarget(server, "3");
  ASSERT_EQ(socket.rfind("socket:[", 0), 0u) << socket;
  int in_daemon = 0;
  for (const auto& [fd, target] : FdTargets(d.pid())) in_daemon += target == socket;
  EXPECT_EQ(in_daemon, 1) << "the daemon must hold the listening socket " << socket;
  for (const auto& [fd, target] : FdTargets(server)) {
    if (fd != 3) {
      EXPECT_NE(target, socket) << "server fd " << fd;
    }
  }
  for (const auto& [fd, target] : FdTargets(plain)) {
    EXPECT_NE(target, socket) << "the socket leaked into a child without `sockets:` at fd " << fd;
  }

  // A program that opens nothing shows exactly what it inherited: stdin, the two output pipes
  // and its sockets from fd 3 on; none of the daemon's own fds.
  ASSERT_TRUE(WaitUntil([&] { return SleepingInNanosleep(bare); }, seconds(10)));
  ASSERT_TRUE(WaitUntil([&] { return SleepingInNanosleep(bare_socket); }, seconds(10)));
  std::map<int, std::string> inherited = FdTargets(bare);
  EXPECT_EQ(inherited.size(), 3u);
  EXPECT_EQ(inherited[0], "/dev/null");
  EXPECT_EQ(inherited[1].rfind("pipe:[", 0), 0u) << inherited[1];
  EXPECT_EQ(inherited[2].rfind("pipe:[", 0), 0u) << inherited[2];
  inherited = FdTargets(bare_socket);
  EXPECT_EQ(inherited.size(), 4u);
  EXPECT_EQ(inherited[3], socket);

  int err = 0;
  UniqueFd conn = ConnectOnce(port, &err);
  ASSERT_TRUE(conn.valid()) << std::strerror(err);
  EXPECT_EQ(ReadAll(conn.get(), seconds(10)), "child " + std::to_string(server) + "\n");
}

TEST(DaemonResourcesTest, ClientsWaitInTheBacklogWhileTheServerRestarts) {
  const int port = FreePort();
  ASSERT_GT(port, 0);
  DaemonHarness d(Replace(R"(
sockets:
  - {name: gw, listen: "127.0.0.1:PORT"}
supervisor:
  intensity: 100
  period: 10s
  children:
    - id: server
      command: ["{{bin}}/sb-testchild", --serve, --ready-delay, "300"]
      sockets: [gw]
)",
                          "PORT", std::to_string(port)));
  ASSERT_TRUE(d.WaitReady()) << d.log();
  constexpr int kRounds = 4;
  for (int round = 1; round <= kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    ASSERT_TRUE(d.WaitFor("server", "ready", static_cast<size_t>(round)));
    const pid_t old_pid = d.PidOf("server");
    ASSERT_GT(old_pid, 0);
    ASSERT_EQ(::kill(old_pid, SIGKILL), 0);
    // At once, before the daemon has even noticed the crash: the connection must be queued on the
    // socket the daemon keeps open, not refused.
    int err = 0;
    UniqueFd conn = ConnectOnce(port, &err);
    ASSERT_TRUE(conn.valid()) << "connect right after the crash: " << std::strerror(err);
    const std::string reply = ReadAll(conn.get(), seconds(15));
    ASSERT_TRUE(d.WaitFor("server", "started", static_cast<size_t>(round + 1)));
    const pid_t new_pid = d.PidOf("server");
    EXPECT_NE(new_pid, old_pid);
    EXPECT_EQ(reply, "child " + std::to_string(new_pid) + "\n");
  }
  EXPECT_EQ(d.Stop(), std::optional<int>(0));
}

TEST(DaemonResourcesTest, DaemonKeepsThePortOpenWhileNoChildRuns) {
  const int port = FreePort();
  ASSERT_GT(port, 0);
  DaemonHarness d(Replace(R"(
sockets:
  - {name: gw, listen: "127.0.0.1:PORT"}
supervisor:
  children:
    - id: server
      restart: temporary
      command: ["{{bin}}/sb-testchild", --serve, --exit-after, "100"]
      sockets: [gw]
)",
                          "PORT", std::to_string(port)));
  ASSERT_TRUE(d.WaitFor("server", "exited")) << d.log();
  ASSERT_TRUE(WaitUntil([&] { return ChildrenOf(d.pid()).empty(); }, seconds(10)));
  ASSERT_TRUE(d.process().Running());

  int err = 0;
  UniqueFd conn = ConnectOnce(port, &err);
  ASSERT_TRUE(conn.valid()) << "no child runs, the port must still accept: " << std::strerror(err);
  EXPECT_EQ(ReadAll(conn.get(), milliseconds(200)), "") << "nobody is there to answer";

  // The socket lives exactly as long as the daemon.
  ASSERT_EQ(d.Stop(), std::optional<int>(0));
  UniqueFd after = ConnectOnce(port, &err);
  EXPECT_FALSE(after.valid());
  EXPECT_EQ(err, ECONNREFUSED) << std::strerror(err);
}

// ---------------------------------------------------------------------------------------------
// 2. No leaks, no polling

// Splits FdKinds() into what belongs to live children (their pidfd and the read ends of their two
// output pipes) and everything else, which must not change while children come and go.
struct FdCensus {
  std::vector<std::string> own;  // the daemon's own fds: sockets, files, epoll, signalfd...
  size_t pidfds = 0;
  size_t pipes = 0;
};

FdCensus TakeFdCensus(pid_t pid) {
  FdCensus c;
  for (std::string& kind : FdKinds(pid)) {
    if (kind == "anon_inode:[pidfd]") {
      ++c.pidfds;
    } else if (kind == "pipe") {
      ++c.pipes;
    } else {
      c.own.push_back(std::move(kind));
    }
  }
  return c;
}

// `crasher` crashes (SIGKILL) as soon as it has reported ready, 1,000 times: its supervisor `loop`
// allows exactly 1,000 restarts (intensity 1000 in 1h), gives up on the next crash and, being
// temporary, is not restarted. That ends the loop by itself in a known state: only `idle` runs.
TEST(DaemonResourcesTest, ThousandCrashRestartCyclesLeakNoFdMemoryOrZombie) {
  constexpr size_t kWarmUp = 50;
  // Observed: 80-120 cycles/s on an idle 2-core machine, 20 under heavy load; with ASan 9, or 2
  // under heavy load (every sb-testchild incarnation pays ASan's start-up). Sanitizer builds look
  // for memory errors on the same paths, which 200 cycles cover; the RSS bound is theirs to skip.
  constexpr size_t kCycles = kSanitized ? 200 : 1000;
  DaemonHarness d(Replace(R"(
supervisor:
  children:
    - id: idle
      command: ["{{bin}}/sb-testchild"]
    - id: loop
      type: supervisor
      restart: temporary
      intensity: CYCLES
      period: 1h
      children:
        - id: crasher
          command: ["{{bin}}/sb-testchild", --crash-after, "0"]
)",
                          "CYCLES", std::to_string(kCycles)));
  ASSERT_TRUE(d.WaitFor("crasher", "started")) << d.log();
  const pid_t daemon = d.pid();
  const pid_t idle = d.PidOf("idle");
  ASSERT_GT(idle, 0);

  EventTail tail(d.events_path());
  size_t max_crashers = 0;  // crasher incarnations alive or unreaped at one sample
  size_t max_fds = 0;
  auto restarts_reach = [&](size_t n) {
    tail.Poll();
    std::vector<pid_t> children = ChildrenOf(daemon);
    max_crashers = std::max(max_crashers,
                            static_cast<size_t>(std::count_if(children.begin(), children.end(),
                                                              [&](pid_t c) { return c != idle; })));
    max_fds = std::max(max_fds, static_cast<size_t>(std::max(0, CountOpenFds(daemon))));
    return tail.Count("crasher", "restarting") >= n;
  };
  const auto loop_start = Clock::now();
  ASSERT_TRUE(PollUntil([&] { return restarts_reach(kWarmUp); }, seconds(60)))
      << "restarts: " << tail.Count("crasher", "restarting") << "\n"
      << d.log();
  const long rss_warm = RssKb(daemon);
  const FdCensus warm = TakeFdCensus(daemon);
  ASSERT_TRUE(PollUntil([&] { return restarts_reach(kCycles); }, seconds(kSanitized ? 300 : 120)))
      << "restarts: " << tail.Count("crasher", "restarting");
  const long rss_loop = RssKb(daemon);
  ASSERT_TRUE(PollUntil(
      [&] {
        restarts_reach(kCycles);
        return tail.Count("loop", "stopped") + tail.Count("loop", "exited") > 0;
      },
      seconds(30)))
      << "the loop supervisor should give up after " << kCycles << " restarts";
  const double wall = std::chrono::duration<double>(Clock::now() - loop_start).count();
  // The crasher is reaped before its supervisor reports: the rest is at rest.
  ASSERT_TRUE(
      WaitUntil([&] { return ChildrenOf(daemon) == std::vector<pid_t>{idle}; }, seconds(10)));

  const size_t cycles = tail.Count("crasher", "restarting");
  double first_ts = 0, last_ts = 0;
  for (const EventRecord& e : tail.events()) {
    if (e.id != "crasher" || e.event != "restarting") continue;
    if (first_ts == 0) first_ts = e.ts;
    last_ts = e.ts;
  }
  const long rss_end = RssKb(daemon);
  const FdCensus end = TakeFdCensus(daemon);
  const long idle_ticks = IdleTicks(daemon, seconds(1));

  std::printf(
      "[ figures ] %zu crash/restart cycles in %.2f s (events) / %.2f s (wall): %.0f cycles/s\n",
      cycles, last_ts - first_ts, wall, (cycles - 1) / std::max(1e-9, last_ts - first_ts));
  std::printf(
      "[ figures ] RSS: %ld KiB after %zu cycles, %ld KiB after %zu, %ld KiB at rest (%s)\n",
      rss_warm, kWarmUp, rss_loop, kCycles, rss_end, kSanitized ? "ASan" : "plain");
  std::printf(
      "[ figures ] fds after %zu cycles: %zu own + %zu pidfds + %zu pipes; at rest: %zu own + %zu "
      "pidfds + %zu pipes; at most %zu during the loop; own: %s\n",
      kWarmUp, warm.own.size(), warm.pidfds, warm.pipes, end.own.size(), end.pidfds, end.pipes,
      max_fds, Join(end.own).c_str());
  std::printf(
      "[ figures ] at most %zu crasher process(es) at once; idle daemon: %ld CPU ticks in "
      "1 s\n",
      max_crashers, idle_ticks);

  EXPECT_EQ(cycles, kCycles) << "intensity N: exactly N restarts, then give up";
  EXPECT_EQ(tail.Count("loop", "gave_up"), 1u);
  // The daemon's own fds are the same after 1,000 cycles, and the only child fds left are those
  // of `idle`. At most: `idle`'s three, plus a spawn in progress (both ends of two pipes and the
  // pidfd; the crashed incarnation's fds are closed before the restart). A leak of one fd per
  // cycle would show ~1,000 more.
  EXPECT_EQ(end.own, warm.own) << "after " << kWarmUp << ": " << Join(warm.own)
                               << "\nat rest: " << Join(end.own);
  EXPECT_EQ(end.pidfds, 1u);
  EXPECT_EQ(end.pipes, 2u);
  EXPECT_LE(max_fds, end.own.size() + 3 + 5);
  EXPECT_LE(max_crashers, 1u) << "a crashed incarnation must be reaped before the next spawn";
  // Nothing the daemon keeps grows per cycle (the events file is appended, not held). Observed:
  // no growth at all between cycle 50 and the end; 2 MiB would be 2 KiB per cycle.
  if (!kSanitized) {
    EXPECT_LT(std::max(rss_loop, rss_end) - rss_warm, 2 * kMiB);
  }
  // No zombie and no stray process: exactly `idle` is left.
  EXPECT_EQ(ChildrenOf(daemon), std::vector<pid_t>{idle});
  EXPECT_EQ(DescendantsOf(daemon), std::vector<pid_t>{idle});
  EXPECT_EQ(ProcState(idle), 'S');
  // Exit detection and timers are event-driven: an idle daemon does not wake up.
  EXPECT_GE(idle_ticks, 0);
  EXPECT_LE(idle_ticks, 2);
  EXPECT_EQ(d.Stop(), std::optional<int>(0));
}

// ---------------------------------------------------------------------------------------------
// 3. No orphans

TEST(DaemonResourcesTest, ChildrenDieWhenTheDaemonIsKilled) {
  DaemonHarness d(R"(
supervisor:
  children:
    - id: plain
      command: ["{{bin}}/sb-testchild"]
    - id: parent
      command: ["{{bin}}/sb-testchild", --spawn-grandchild, --record, "{{dir}}/rec"]
)");
  ASSERT_TRUE(d.WaitReady()) << d.log();
  const pid_t plain = d.PidOf("plain");
  const pid_t parent = d.PidOf("parent");
  pid_t grandchild = 0;
  ASSERT_TRUE(WaitUntil(
      [&] { return (grandchild = GrandchildOf(d.dir().File("rec"), parent)) > 0; }, seconds(10)));
  ASSERT_TRUE(Alive(plain));
  ASSERT_TRUE(Alive(parent));
  ASSERT_TRUE(Alive(grandchild));
  ASSERT_EQ(::getpgid(grandchild), parent) << "the grandchild is in its parent's process group";

  ASSERT_TRUE(d.process().Signal(SIGKILL));
  ASSERT_TRUE(d.WaitExit().has_value());
  // Promised (PR_SET_PDEATHSIG): the daemon's direct children die with it.
  EXPECT_TRUE(WaitUntil([&] { return !Alive(plain) && !Alive(parent); }, seconds(10)))
      << "plain " << (Alive(plain) ? "alive" : "gone") << ", parent "
      << (Alive(parent) ? "alive" : "gone");

  // Not promised: PDEATHSIG covers direct children only, and nobody is left to signal the group
  // of a SIGKILLed daemon. Report what happens, then clean up.
  const bool grandchild_died = WaitUntil([&] { return !Alive(grandchild); }, seconds(1));
  std::printf("[ figures ] after SIGKILL of the daemon, grandchild %d %s\n", grandchild,
              grandchild_died ? "died" : "survived (reparented; not covered by PDEATHSIG)");
  RecordProperty("grandchild_survives_daemon_sigkill", grandchild_died ? "no" : "yes");
  if (!grandchild_died && ::getpgid(grandchild) == parent) ::kill(grandchild, SIGKILL);
}

TEST(DaemonResourcesTest, ChildProcessGroupGoesWithTheChild) {
  DaemonHarness d(R"(
supervisor:
  intensity: 10
  period: 10s
  children:
    - id: leaver
      restart: temporary
      command: ["{{bin}}/sb-testchild", --spawn-grandchild, --exit-after, "100", --record, "{{dir}}/rec"]
    - id: parent
      command: ["{{bin}}/sb-testchild", --spawn-grandchild, --record, "{{dir}}/rec"]
    - id: stubborn
      shutdown: 300ms
      command: ["{{bin}}/sb-testchild", --spawn-grandchild, --ignore-term, --record, "{{dir}}/rec"]
)");
  const std::string rec = d.dir().File("rec");
  ASSERT_TRUE(d.WaitReady()) << d.log();
  std::vector<pid_t> grandchildren;
  auto grandchild_of = [&](const std::string& id) {
    pid_t child = d.PidOf(id);
    pid_t g = 0;
    EXPECT_TRUE(WaitUntil([&] { return (g = GrandchildOf(rec, child)) > 0; }, seconds(10))) << id;
    grandchildren.push_back(g);
    return g;
  };

  // A child that exits normally: the rest of its group is killed before it is reaped.
  const pid_t g_leaver = grandchild_of("leaver");
  ASSERT_TRUE(d.WaitFor("leaver", "exited"));
  EXPECT_TRUE(WaitUntil([&] { return !Alive(g_leaver); }, seconds(10)));

  // A crash of the leader alone (SIGKILL to its pid, not its group).
  const pid_t g_parent = grandchild_of("parent");
  ASSERT_EQ(::kill(d.PidOf("parent"), SIGKILL), 0);
  ASSERT_TRUE(d.WaitFor("parent", "ready", 2));
  EXPECT_TRUE(WaitUntil([&] { return !Alive(g_parent); }, seconds(10)));

  // A stop: SIGTERM to the group; the stubborn group ignores it and gets SIGKILL at the deadline.
  const pid_t g_restarted = grandchild_of("parent");
  const pid_t g_stubborn = grandchild_of("stubborn");
  ASSERT_TRUE(Alive(g_restarted));
  ASSERT_TRUE(Alive(g_stubborn));
  EXPECT_EQ(d.Stop(), std::optional<int>(0));
  EXPECT_TRUE(WaitUntil([&] { return !Alive(g_restarted) && !Alive(g_stubborn); }, seconds(10)));

  for (pid_t g : grandchildren) {  // never leave one behind, even when an expectation failed
    if (g > 0 && Alive(g)) ::kill(g, SIGKILL);
  }
}

// ---------------------------------------------------------------------------------------------
// 4. Output capture

TEST(DaemonResourcesTest, ChildOutputIsLoggedLineByLineWithItsId) {
  DaemonHarness d(R"(
supervisor:
  children:
    - id: talker
      command: ["{{bin}}/sb-testchild", --print, "hello world", --print, "second line", --flood-stderr, "300", --line-length, "50"]
)");
  ASSERT_TRUE(d.WaitReady()) << d.log();
  const std::vector<std::string> want_out = {"hello world", "second line"};
  const std::vector<std::string> want_err(6, std::string(49, 'x'));
  EXPECT_TRUE(WaitUntil(
      [&] {
        const std::string log = d.log();
        return ChildLines(log, "talker") == want_out &&
               ChildLines(log, "talker:stderr") == want_err;
      },
      seconds(10)))
      << d.log();
}

TEST(DaemonResourcesTest, StdoutFloodNeitherStallsSupervisionNorGrowsMemory) {
  constexpr long kFlood = 50'000'000;  // 500,000 lines of 100 bytes
  DaemonHarness d(R"(
supervisor:
  intensity: 1000
  period: 1s
  children:
    - id: flooder
      restart: temporary
      command: ["{{bin}}/sb-testchild", --flood-stdout, "50000000", --exit-after, "0"]
    - id: crasher
      command: ["{{bin}}/sb-testchild", --crash-after, "20"]
)");
  long max_rss = 0;
  ASSERT_TRUE(PollUntil(
      [&] {
        if (!FilterEvents(d.Events(), "root", "started").empty()) {
          max_rss = std::max(max_rss, RssKb(d.pid()));
        }
        return !FilterEvents(d.Events(), "flooder", "exited").empty();
      },
      seconds(150)))
      << "the flood did not end";
  const auto events = d.Events();
  const double flood_start = FilterEvents(events, "flooder", "ready").at(0).ts;
  const double flood_end = FilterEvents(events, "flooder", "exited").at(0).ts;
  size_t restarts_during = 0;
  double worst_gap = 0;
  double crashed_at = -1;
  for (const EventRecord& e : FilterEvents(events, "crasher")) {
    if (e.ts > flood_end) break;
    if (e.event == "exited") crashed_at = e.ts;
    if (e.event == "started" && crashed_at >= 0) {
      ++restarts_during;
      worst_gap = std::max(worst_gap, e.ts - crashed_at);
      crashed_at = -1;
    }
  }
  std::printf(
      "[ figures ] %ld-byte flood logged in %.2f s; crasher restarted %zu times meanwhile "
      "(worst crash-to-start %.1f ms); daemon RSS at most %ld KiB (%s)\n",
      kFlood, flood_end - flood_start, restarts_during, worst_gap * 1000, max_rss,
      kSanitized ? "ASan" : "plain");
  // Starvation would push every restart after the flood; the daemon must interleave them.
  EXPECT_GE(restarts_during, 3u);
  if (!kSanitized) {
    EXPECT_LT(max_rss, 64 * kMiB);
  }
  // And nothing of the flood is lost.
  EXPECT_EQ(CountChildLines(d.log(), "flooder"), static_cast<size_t>(kFlood / 100));
  EXPECT_EQ(d.Stop(), std::optional<int>(0));
}

TEST(DaemonResourcesTest, OutputWithoutNewlinesIsCutInto8KiBPieces) {
  constexpr size_t kFlood = 16 * 1024 * 1024;
  constexpr size_t kMaxLine = 8192;
  DaemonHarness d(R"(
supervisor:
  children:
    - id: blob
      restart: temporary
      command: ["{{bin}}/sb-testchild", --flood-stdout, "16777216", --no-newline, --exit-after, "0"]
)");
  long min_rss = -1, max_rss = 0;
  ASSERT_TRUE(PollUntil(
      [&] {
        if (!FilterEvents(d.Events(), "root", "started").empty()) {
          long rss = RssKb(d.pid());
          if (rss > 0 && (min_rss < 0 || rss < min_rss)) min_rss = rss;
          max_rss = std::max(max_rss, rss);
        }
        return !FilterEvents(d.Events(), "blob", "exited").empty();
      },
      seconds(60), milliseconds(5)));
  const std::vector<std::string> pieces = ChildLines(d.log(), "blob");
  size_t total = 0;
  size_t unmarked = 0;
  size_t too_long = 0;
  for (const std::string& line : pieces) {
    std::string_view piece(line);
    const std::string_view mark = " [...]";
    const bool cut = piece.ends_with(mark);
    if (cut) piece.remove_suffix(mark.size());
    unmarked += !cut;
    too_long += piece.size() > kMaxLine;
    total += piece.size();
  }
  std::printf(
      "[ figures ] %zu bytes without newline -> %zu log lines; daemon RSS %ld..%ld KiB (%s)\n",
      kFlood, pieces.size(), min_rss, max_rss, kSanitized ? "ASan" : "plain");
  EXPECT_EQ(total, kFlood);
  EXPECT_EQ(pieces.size(), kFlood / kMaxLine);
  EXPECT_EQ(too_long, 0u);
  EXPECT_EQ(unmarked, 0u) << "every piece of an over-long line is marked ' [...]'";
  // The daemon holds at most one unfinished line per stream: memory must not follow the flood.
  if (!kSanitized) {
    EXPECT_LT(max_rss - min_rss, 4 * kMiB);
  }
}

// ---------------------------------------------------------------------------------------------
// 5. The events file

TEST(DaemonResourcesTest, EveryEventLineIsWellFormedJson) {
  const double t_before = MonotonicNow();
  DaemonHarness d(R"(
supervisor:
  intensity: 50
  period: 1s
  children:
    - id: shards
      type: supervisor
      children:
        - id: shard
          replicas: 3
          env: {SHARD_TAG: "t{{replica}}"}
          command: [sh, -c, "echo env=$SHARD_TAG; exec {{bin}}/sb-testchild --print arg={{replica}}"]
    - id: crasher
      command: ["{{bin}}/sb-testchild", --crash-after, "300"]
    - id: quitter
      command: ["{{bin}}/sb-testchild", --exit-after, "300", --code, "3"]
    - id: fragile
      type: supervisor
      restart: temporary
      intensity: 0
      children:
        - id: once
          command: ["{{bin}}/sb-testchild", --exit-after, "100", --code, "1"]
)");
  ASSERT_TRUE(d.WaitFor("crasher", "restarting", 2)) << d.log();
  ASSERT_TRUE(d.WaitFor("quitter", "restarting", 2)) << d.log();
  ASSERT_TRUE(d.WaitFor("fragile", "gave_up")) << d.log();
  ASSERT_EQ(d.Stop(), std::optional<int>(0));
  const double t_after = MonotonicNow();

  const std::set<std::string> kNames = {"started",  "ready",   "exited",  "restarting",
                                        "stopping", "stopped", "gave_up", "daemon_exit"};
  const std::set<std::string> kSupervisors = {"root", "shards", "fragile"};
  const std::set<std::string> kWorkers = {"shard.0", "shard.1", "shard.2",
                                          "crasher", "quitter", "once"};
  const std::set<std::string> kKeys = {"ts", "event", "id", "pid", "status", "signal", "reason"};

  const std::vector<std::string> lines = ReadLines(d.events_path());
  ASSERT_FALSE(lines.empty());
  std::set<std::string> names_seen, ids_seen;
  std::map<int, std::string> id_of_pid;
  std::map<std::string, std::vector<std::string>>
      exits;  // worker id -> "status 3", "signal SIGKILL"
  double last_ts = t_before - 0.001;
  for (size_t i = 0; i < lines.size(); ++i) {
    SCOPED_TRACE("line " + std::to_string(i + 1) + ": " + lines[i]);
    boost::system::error_code ec;
    boost::json::value v = boost::json::parse(lines[i], ec);
    ASSERT_FALSE(ec) << ec.message();
    ASSERT_TRUE(v.is_object());
    const boost::json::object& o = v.get_object();
    for (const auto& kv : o) EXPECT_TRUE(kKeys.contains(std::string(kv.key()))) << kv.key();
    for (const char* key : {"ts", "event", "id", "pid", "status", "signal"}) {
      EXPECT_TRUE(o.contains(key)) << key;
    }
    // ts: CLOCK_MONOTONIC seconds, non-decreasing, within the test's own readings.
    std::optional<double> ts = JsonNumber(o.if_contains("ts"));
    ASSERT_TRUE(ts.has_value());
    EXPECT_GE(*ts, last_ts);
    EXPECT_LE(*ts, t_after + 0.001);
    last_ts = *ts;

    const std::string event = JsonString(o, "event");
    const std::string id = JsonString(o, "id");
    EXPECT_TRUE(kNames.contains(event)) << event;
    EXPECT_TRUE(kSupervisors.contains(id) || kWorkers.contains(id)) << id;
    names_seen.insert(event);
    ids_seen.insert(id);
    const boost::json::value* pid = o.if_contains("pid");
    const boost::json::value* status = o.if_contains("status");
    const boost::json::value* signal = o.if_contains("signal");
    if (!pid || !status || !signal) continue;
    if (o.contains("reason")) {
      EXPECT_TRUE(o.at("reason").is_string());
    }

    // pid: a process's, or null for supervisors and events about no process.
    const bool about_process = kWorkers.contains(id) && event != "restarting";
    if (about_process) {
      ASSERT_TRUE(pid->is_int64()) << "a worker's " << event << " names its pid";
      EXPECT_GT(pid->get_int64(), 0);
    } else {
      EXPECT_TRUE(pid->is_null());
    }
    if (event == "started" && pid->is_int64()) {
      auto [it, fresh] = id_of_pid.emplace(static_cast<int>(pid->get_int64()), id);
      EXPECT_TRUE(fresh || it->second == id) << "pid shared by " << it->second << " and " << id;
    }

    // status / signal: set only where they mean something.
    if (event == "exited" && kWorkers.contains(id)) {
      EXPECT_NE(status->is_null(), signal->is_null()) << "exactly one of status and signal";
      if (!status->is_null()) {
        ASSERT_TRUE(status->is_int64());
        EXPECT_GE(status->get_int64(), 0);
        EXPECT_LE(status->get_int64(), 255);
      }
      if (!signal->is_null()) {
        ASSERT_TRUE(signal->is_string());
        const std::string name(signal->get_string());
        EXPECT_TRUE(name.size() > 3 && name.rfind("SIG", 0) == 0 &&
                    std::all_of(name.begin() + 3, name.end(),
                                [](char c) { return std::isupper(c) || std::isdigit(c); }))
            << name;
      }
      exits[id].push_back(status->is_int64() ? "status " + std::to_string(status->get_int64())
                                             : "signal " + JsonString(o, "signal"));
    } else if (event == "daemon_exit") {
      EXPECT_EQ(id, "root");
      ASSERT_TRUE(status->is_int64());
      EXPECT_EQ(status->get_int64(), 0);
      EXPECT_TRUE(signal->is_null());
      EXPECT_EQ(i, lines.size() - 1) << "daemon_exit is the last line";
    } else {
      EXPECT_TRUE(status->is_null());
      EXPECT_TRUE(signal->is_null());
    }
  }
  EXPECT_EQ(names_seen, kNames);
  // Each exit as the child made it; the last one of a permanent child may be its SIGTERM at stop.
  auto expect_exits = [&](const std::string& id, const std::string& crash, size_t at_least) {
    const std::vector<std::string>& seen = exits[id];
    EXPECT_GE(seen.size(), at_least) << id;
    for (size_t i = 0; i < seen.size(); ++i) {
      if (i + 1 == seen.size() && seen[i] == "status 0") continue;
      EXPECT_EQ(seen[i], crash) << id << " exit #" << i;
    }
  };
  expect_exits("crasher", "signal SIGKILL", 2);
  expect_exits("quitter", "status 3", 2);
  EXPECT_EQ(exits["once"], std::vector<std::string>{"status 1"});
  std::set<std::string> all_ids = kSupervisors;
  all_ids.insert(kWorkers.begin(), kWorkers.end());
  EXPECT_EQ(ids_seen, all_ids) << "a replica set of 3 is shard.0, shard.1, shard.2 (no 'shard')";

  // {{replica}} is substituted in the command and in env values, per replica.
  const std::string log = d.log();
  for (int i = 0; i < 3; ++i) {
    const std::string id = "shard." + std::to_string(i);
    const std::vector<std::string> lines_of = ChildLines(log, id);
    EXPECT_EQ(std::count(lines_of.begin(), lines_of.end(), "env=t" + std::to_string(i)), 1) << id;
    EXPECT_EQ(std::count(lines_of.begin(), lines_of.end(), "arg=" + std::to_string(i)), 1) << id;
  }
}

// ---------------------------------------------------------------------------------------------
// 6. `switchboard check`, `switchboard run` on bad input, CLI usage

struct BadConfig {
  std::string name;
  std::string yaml;
  std::string location;  // "line:col", or "" when only the format is checked
  std::string key;       // "key '...'" part, or a word the message must contain
};

std::vector<BadConfig> BadConfigs() {
  return {
      {"unknown_strategy", R"(supervisor:
  strategy: one_for_none
  children:
    - id: a
      command: [sleep, "1"]
)",
       "2:13", "key 'supervisor.strategy': unknown strategy 'one_for_none'"},
      {"duplicate_id", R"(supervisor:
  children:
    - id: web
      command: [sleep, "1"]
    - id: web
      command: [sleep, "1"]
)",
       "5:11", "key 'supervisor.children[1].id': duplicate id 'web'"},
      {"undeclared_socket", R"(sockets:
  - {name: gw, listen: "127.0.0.1:0"}
supervisor:
  children:
    - id: a
      command: [sleep, "1"]
      sockets: [gw, nope]
)",
       "7:21", "key 'supervisor.children[0].sockets[1]': socket 'nope'"},
      {"duration_without_unit", R"(supervisor:
  intensity: 3
  period: 5
  children: []
)",
       "3:11", "key 'supervisor.period': duration needs a unit"},
      {"unknown_key", R"(supervisor:
  children:
    - id: a
      command: [sleep, "1"]
      restrat: permanent
)",
       "5:7", "key 'supervisor.children[0].restrat': unknown key 'restrat'"},
      {"yaml_syntax", R"(supervisor:
  children: [
    - id: a
)",
       "", ""},
  };
}

TEST(DaemonResourcesTest, CheckAcceptsAValidFile) {
  TempDir dir;
  const std::string path = dir.File("good.yaml");
  ASSERT_TRUE(WriteFile(path, R"(sockets:
  - {name: gw, listen: "127.0.0.1:0"}
supervisor:
  strategy: one_for_all
  intensity: 3
  period: 5s
  children:
    - id: a
      command: [sleep, "1"]
      sockets: [gw]
)"));
  std::string out;
  EXPECT_EQ(RunSwitchboard({"check", path}, &out), 0) << out;
  EXPECT_NE(out.find(path + ": ok"), std::string::npos) << out;
}

TEST(DaemonResourcesTest, CheckReportsFileLineColumnAndKey) {
  for (const BadConfig& bad : BadConfigs()) {
    SCOPED_TRACE(bad.name);
    TempDir dir;
    const std::string path = dir.File(bad.name + ".yaml");
    ASSERT_TRUE(WriteFile(path, bad.yaml));
    std::string out;
    EXPECT_EQ(RunSwitchboard({"check", path}, &out), 2) << out;
    if (!bad.location.empty()) {
      EXPECT_NE(out.find(path + ":" + bad.location + ": " + bad.key), std::string::npos) << out;
    } else {
      // A YAML syntax error has a position but no key.
      const size_t at = out.find(path + ":");
      ASSERT_NE(at, std::string::npos) << out;
      int line = 0, col = 0;
      EXPECT_EQ(std::sscanf(out.c_str() + at + path.size(), ":%d:%d: ", &line, &col), 2) << out;
      EXPECT_GT(line, 0);
      EXPECT_GT(col, 0);
    }
    EXPECT_EQ(out.find(": ok"), std::string::npos) << out;
  }
}

TEST(DaemonResourcesTest, RunRefusesAnInvalidFileBeforeStartingAnything) {
  for (const BadConfig& bad : BadConfigs()) {
    SCOPED_TRACE(bad.name);
    TempDir dir;
    // The node section goes last so that the positions in the message stay those of BadConfigs();
    // the child that would record its start comes first.
    const std::string yaml = Replace(
        bad.yaml, "command: [sleep, \"1\"]",
        "command: [\"" + BinPath("sb-testchild") + "\", --record, \"" + dir.File("rec") + "\"]");
    const std::string path = dir.File(bad.name + ".yaml");
    ASSERT_TRUE(WriteFile(path, yaml + "node: {name: bad, control: " + dir.File("ctl.sock") +
                                    ", events: " + dir.File("events") + "}\n"));
    std::string check_out, run_out;
    ASSERT_EQ(RunSwitchboard({"check", path}, &check_out), 2) << check_out;
    EXPECT_EQ(RunSwitchboard({"run", path}, &run_out), 2) << run_out;
    EXPECT_EQ(run_out, check_out) << "run reports the same error as check";
    EXPECT_FALSE(std::filesystem::exists(dir.File("events"))) << "no events file";
    EXPECT_FALSE(std::filesystem::exists(dir.File("rec"))) << "no child started";
  }
}

TEST(DaemonResourcesTest, BadUsageAndMissingFilesExitWith2) {
  std::string out;
  EXPECT_EQ(RunSwitchboard({}, &out), 2) << out;
  EXPECT_EQ(RunSwitchboard({"check"}, &out), 2) << out;
  EXPECT_EQ(RunSwitchboard({"run"}, &out), 2) << out;
  EXPECT_EQ(RunSwitchboard({"frobnicate", "x.yaml"}, &out), 2) << out;

  TempDir dir;
  const std::string missing = dir.File("missing.yaml");
  for (const char* command : {"check", "run"}) {
    SCOPED_TRACE(command);
    EXPECT_EQ(RunSwitchboard({command, missing}, &out), 2) << out;
    EXPECT_NE(out.find(missing), std::string::npos) << out;
    EXPECT_NE(out.find("No such file or directory"), std::string::npos) << out;
  }
}

}  // namespace
}  // namespace sb::testutil
