// The real `switchboard run` when its environment fails it or cannot be trusted: epoll
// registrations that fail (forced with the epoll_fault preload library), an events file that
// cannot take a whole line, runtime directories another user owns or can write, a symlinked
// events file. Failures after start-up: supervision goes on and the failure is visible (an
// event, a log line or a metric). Untrusted paths: the daemon refuses to start (exit 2).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "tests/supervisor/daemon_harness.h"
#include "tests/testutil/testutil.h"

namespace sb::testutil {
namespace {

using std::chrono::milliseconds;

constexpr milliseconds kWait{20'000};

bool Contains(std::string_view s, std::string_view part) {
  return s.find(part) != std::string_view::npos;
}

int ExitCode(const std::optional<int>& status) {
  return status && WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
}

// "event:id" of `id`'s events after the root's first `ready`.
std::vector<std::string> TraceAfterReady(const std::vector<EventRecord>& events,
                                         std::string_view id) {
  std::vector<std::string> out;
  bool ready = false;
  for (const EventRecord& e : events) {
    if (ready && e.id == id) out.push_back(e.event + ":" + e.id);
    ready |= e.id == "root" && e.event == "ready";
  }
  return out;
}

// The daemon's environment for a run under the epoll fault library: `fault` is
// "SB_FAULT_EPOLL_PIDFD=N" or "SB_FAULT_EPOLL_PIPE=N".
std::vector<std::string> EpollFault(const std::string& fault) {
  // A sanitizer runtime wants to be first in the library list; the preload comes first here.
  const char* asan = std::getenv("ASAN_OPTIONS");
  return {"LD_PRELOAD=" SB_EPOLL_FAULT_LIB, fault,
          "ASAN_OPTIONS=" + std::string(asan ? asan : "") + (asan ? ":" : "") +
              "verify_asan_link_order=0"};
}

// Pids of `pid`'s children (every thread's), from /proc: zombies included.
std::set<int> ChildrenOf(pid_t pid) {
  std::set<int> out;
  std::error_code ec;
  const std::string task = "/proc/" + std::to_string(pid) + "/task";
  for (const auto& t : std::filesystem::directory_iterator(task, ec)) {
    std::string list = ReadFile(t.path().string() + "/children");
    size_t pos = 0;
    while (pos < list.size()) {
      size_t end = list.find(' ', pos);
      if (end == std::string::npos) end = list.size();
      if (end > pos) out.insert(std::atoi(list.substr(pos, end - pos).c_str()));
      pos = end + 1;
    }
  }
  return out;
}

using DaemonFaultsTest = DaemonTest;

// ---- epoll registration failures -------------------------------------------------------------

TEST_F(DaemonFaultsTest, ChildWhosePidfdCannotBeWatchedIsKilledAndItsStartFails) {
  // The second pidfd (a's first restart) cannot be watched: without it no exit of that process
  // would ever be seen. The daemon kills it, the start fails and is retried like any other.
  DaemonHarness& h = Start(R"(
supervisor:
  intensity: 5
  children:
    - {id: a, command: ["{{bin}}/sb-testchild"]}
)",
                           EpollFault("SB_FAULT_EPOLL_PIDFD=2"));
  ASSERT_TRUE(h.started());
  ASSERT_TRUE(h.WaitReady(kWait));
  const int first = h.PidOf("a");
  ASSERT_EQ(kill(first, SIGKILL), 0);
  ASSERT_TRUE(h.WaitFor("a", "ready", 2, kWait));

  auto events = h.Events();
  EXPECT_EQ(TraceAfterReady(events, "a"),
            (std::vector<std::string>{"exited:a", "restarting:a", "restarting:a", "started:a",
                                      "ready:a"}));
  auto restarting = FilterEvents(events, "a", "restarting");
  ASSERT_EQ(restarting.size(), 2u);
  EXPECT_EQ(restarting[1].reason, "retrying failed start");
  EXPECT_TRUE(Contains(h.log(),
                       "child 'a' failed to start: unable to watch its exit: "
                       "epoll_ctl add: No space left on device"))
      << h.log();
  // The unwatched process is gone and reaped: the daemon's only child is a's current one.
  EXPECT_EQ(ChildrenOf(h.pid()), (std::set<int>{h.PidOf("a")}));
  EXPECT_EQ(ExitCode(h.Stop()), 0);
}

TEST_F(DaemonFaultsTest, OutputPipeThatCannotBeWatchedIsClosedSoTheChildDoesNotHang) {
  // The first pipe (loud's stdout) cannot be watched. Unread, it would fill and block the flood
  // for good; closed, the child's next write fails at once (sb-testchild ignores SIGPIPE, so it
  // sees EPIPE), the flood ends and the child exits as asked.
  DaemonHarness& h = Start(R"(
supervisor:
  children:
    - id: loud
      restart: temporary
      command: ["{{bin}}/sb-testchild", --flood-stdout, "1000000", --exit-after, "0", --code, "7"]
    - {id: b, command: ["{{bin}}/sb-testchild"]}
)",
                           EpollFault("SB_FAULT_EPOLL_PIPE=1"));
  ASSERT_TRUE(h.started());
  ASSERT_TRUE(h.WaitReady(kWait));
  ASSERT_TRUE(h.WaitFor("loud", "exited", 1, kWait));
  auto exited = FilterEvents(h.Events(), "loud", "exited");
  ASSERT_EQ(exited.size(), 1u);
  EXPECT_EQ(exited[0].status, 7);
  const std::string log = h.log();
  EXPECT_TRUE(Contains(log,
                       "child 'loud': unable to watch its stdout: epoll_ctl add: No space "
                       "left on device; closed it"))
      << log;
  EXPECT_TRUE(Contains(log, "[loud:stderr] sb-testchild: flood stopped: Broken pipe")) << log;
  EXPECT_TRUE(Alive(h.PidOf("b")));
  EXPECT_EQ(ExitCode(h.Stop()), 0);
}

// ---- the events file -----------------------------------------------------------------------

// Sets the soft file size limit (RLIMIT_FSIZE) of process `pid`; the hard one stays unlimited.
bool SetFileSizeLimit(pid_t pid, rlim_t soft) {
  rlimit rl{soft, RLIM_INFINITY};
  return ::prlimit(pid, RLIMIT_FSIZE, &rl, nullptr) == 0;
}

TEST_F(DaemonFaultsTest, EventsFileThatCannotTakeALineLosesItWholeCountsItAndResumes) {
  const int port = FreePort();
  ASSERT_GT(port, 0);
  DaemonHarness& h = Start(R"(
node:
  name: test
  control: {{dir}}/ctl.sock
  events: {{dir}}/events
  metrics: "127.0.0.1:)" + std::to_string(port) +
                           R"("
supervisor:
  intensity: 10
  children:
    - {id: a, command: ["{{bin}}/sb-testchild"]}
)");
  ASSERT_TRUE(h.started());
  ASSERT_TRUE(h.WaitReady(kWait));
  const std::map<std::string, std::string> node = {{"node", "test"}};
  auto failures = [&] {
    return Sample(Scrape(port), "switchboard_events_write_failures_total", node);
  };
  ASSERT_TRUE(WaitUntil([&] { return failures() == 0.0; }, kWait));
  const std::string before = ReadFile(h.events_path());
  const int first = h.PidOf("a");

  // The file is "full" 10 bytes further on: the next line is cut short, the ones after it fail.
  ASSERT_TRUE(SetFileSizeLimit(h.pid(), before.size() + 10));
  ASSERT_EQ(kill(first, SIGKILL), 0);
  // exited, restarting, started, ready: four events, none in the file, no part of any.
  ASSERT_TRUE(WaitUntil([&] { return failures() == 4.0; }, kWait)) << failures().value_or(-1);
  EXPECT_EQ(ReadFile(h.events_path()), before);

  // Room again: the next events are whole lines, right after the last one that fit.
  ASSERT_TRUE(SetFileSizeLimit(h.pid(), RLIM_INFINITY));
  std::string out;
  ASSERT_EQ(RunSwitchboard({"restart", "a", "--control", h.dir().File("ctl.sock")}, &out), 0)
      << out;
  ASSERT_TRUE(h.WaitFor("a", "ready", 2, kWait));
  std::string error;
  auto events = ReadEvents(h.events_path(), &error);
  EXPECT_EQ(error, "");
  EXPECT_TRUE(ReadFile(h.events_path()).starts_with(before));
  EXPECT_EQ(
      TraceAfterReady(events, "a"),
      (std::vector<std::string>{"stopping:a", "exited:a", "stopped:a", "started:a", "ready:a"}));
  EXPECT_EQ(failures(), 4.0);
  // The limit held for the daemon's log file too, so the error line may be lost with the events;
  // the recovery line says what was lost.
  const std::string log = h.log();
  EXPECT_TRUE(Contains(log, "events: writing " + h.events_path() + " again (4 events lost)"))
      << log;
  EXPECT_EQ(ExitCode(h.Stop()), 0);
}

// ---- runtime directories it will not trust -----------------------------------------------------

// A config whose control socket (and so lock and notify socket) lives in `run_dir` and whose
// events go to `events` ("{{dir}}/events" is the harness's events_path()).
std::string NodeIn(const std::string& run_dir, const std::string& events) {
  return "node:\n  name: test\n  control: " + run_dir + "/ctl.sock\n  events: " + events + "\n" +
         R"(supervisor:
  children:
    - {id: a, command: ["{{bin}}/sb-testchild"]}
)";
}

constexpr uid_t kNobody = 65534;

// Waits for the daemon to exit by itself; returns its exit code (-1 if it did not) and its log.
int RunToExit(DaemonHarness& h, std::string* log) {
  std::optional<int> status = h.WaitExit(kWait);
  *log = h.log();
  return ExitCode(status);
}

TEST_F(DaemonFaultsTest, RefusesARuntimeDirectoryOwnedByAnotherUser) {
  TempDir place;
  const std::string run = place.File("run");
  ASSERT_EQ(::mkdir(run.c_str(), 0700), 0);
  // Someone else made it first (after a reboot, say). Only root can set this up.
  ASSERT_EQ(::chown(run.c_str(), kNobody, kNobody), 0)
      << "this test runs as root (CI does): " << strerror(errno);
  DaemonHarness& h = Start(NodeIn(run, "{{dir}}/events"));
  ASSERT_TRUE(h.started());
  std::string log;
  EXPECT_EQ(RunToExit(h, &log), 2) << log;
  EXPECT_TRUE(Contains(
      log, "switchboard: fatal: unable to start node: runtime directory " + run +
               " is owned by uid 65534; only " +
               (::geteuid() == 0
                    ? std::string("root may own it")
                    : "this user (uid " + std::to_string(::geteuid()) + ") or root may own it")))
      << log;
  // Nothing of ours went in there, and nothing started.
  EXPECT_TRUE(std::filesystem::is_empty(run));
  EXPECT_FALSE(std::filesystem::exists(h.events_path()));
}

TEST_F(DaemonFaultsTest, RefusesARuntimeDirectoryItsGroupOrOthersCanWrite) {
  for (mode_t mode : {0770, 0703, 01777}) {
    SCOPED_TRACE(mode);
    TempDir place;
    const std::string run = place.File("run");
    ASSERT_EQ(::mkdir(run.c_str(), 0700), 0);
    ASSERT_EQ(::chmod(run.c_str(), mode), 0);
    DaemonHarness h(NodeIn(run, "{{dir}}/events"));
    ASSERT_TRUE(h.started());
    std::string log;
    EXPECT_EQ(RunToExit(h, &log), 2) << log;
    char octal[8];
    std::snprintf(octal, sizeof octal, "%04o", static_cast<unsigned>(mode));
    EXPECT_TRUE(Contains(log, "switchboard: fatal: unable to start node: runtime directory " + run +
                                  " is writable by its group or others (mode " + octal +
                                  "); only its owner may write it (chmod go-w)"))
        << log;
    EXPECT_TRUE(std::filesystem::is_empty(run));
  }
}

TEST_F(DaemonFaultsTest, RefusesAnEventsFileThatIsASymlink) {
  TempDir place;
  const std::string victim = place.File("victim");
  WriteFile(victim, "precious\n");
  ASSERT_EQ(::symlink(victim.c_str(), place.File("events").c_str()), 0);
  DaemonHarness& h = Start(NodeIn(place.File("run"), place.File("events")));
  ASSERT_TRUE(h.started());
  std::string log;
  EXPECT_EQ(RunToExit(h, &log), 2) << log;
  EXPECT_TRUE(Contains(log, "switchboard: fatal: unable to start node: events file " +
                                place.File("events") +
                                " is a symbolic link; the daemon does not follow one there"))
      << log;
  EXPECT_EQ(ReadFile(victim), "precious\n");
}

TEST_F(DaemonFaultsTest, CreatesItsRuntimeDirectoryForItselfOnlyAndRunsInATrustedOne) {
  TempDir place;
  const std::string fresh = place.File("fresh/run");  // missing: created 0700
  {
    DaemonHarness h(NodeIn(fresh, "{{dir}}/events"));
    ASSERT_TRUE(h.started());
    ASSERT_TRUE(h.WaitReady(kWait)) << h.log();
    struct stat st {};
    ASSERT_EQ(::stat(fresh.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0700u);
    EXPECT_EQ(st.st_uid, ::geteuid());
    EXPECT_EQ(ExitCode(h.Stop()), 0);
  }
  // An existing one of ours (the next start, or one made by hand with mode 0755) is used.
  ASSERT_EQ(::chmod(fresh.c_str(), 0755), 0);
  DaemonHarness h(NodeIn(fresh, "{{dir}}/events"));
  ASSERT_TRUE(h.started());
  ASSERT_TRUE(h.WaitReady(kWait)) << h.log();
  EXPECT_EQ(ExitCode(h.Stop()), 0);
}

}  // namespace
}  // namespace sb::testutil
