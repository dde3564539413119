// sb-testchild run directly, with the test playing the supervisor: it owns the notify socket, the
// listening sockets and the child's output files.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "tests/testutil/testutil.h"

namespace sb::testutil {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

constexpr milliseconds kWait{10'000};  // generous: only reached when something is broken
constexpr double kTsSlack = 2e-6;      // record timestamps keep 6 decimals, then become doubles

class TestChildTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    auto rx = NotifyReceiver::Bind(dir_.File("notify.sock"));
    ASSERT_TRUE(rx.ok()) << rx.status().message();
    notify_.emplace(std::move(rx).value());
  }

  // Starts sb-testchild with NOTIFY_SOCKET pointing at notify_, stdout in "out", stderr in "err".
  Result<Process> Start(std::vector<std::string> args, SpawnOptions options = {}) {
    options.args = std::move(args);
    options.env.push_back("NOTIFY_SOCKET=" + notify_->path());
    if (options.output.empty()) options.output = dir_.File("out");
    if (options.stderr_output.empty()) options.stderr_output = dir_.File("err");
    return Process::Start(BinPath("sb-testchild"), std::move(options));
  }

  std::string Record() const { return dir_.File("record"); }

  // The one record of `event` for pid; ts == -1 when absent.
  ChildRecord Find(pid_t pid, std::string_view event) const {
    for (const ChildRecord& r : ReadRecords(Record())) {
      if (r.pid == pid && r.event == event) return r;
    }
    return ChildRecord{.ts = -1};
  }

  std::vector<std::string> EventsOf(pid_t pid) const {
    std::vector<std::string> out;
    for (const ChildRecord& r : ReadRecords(Record())) {
      if (r.pid == pid) out.push_back(r.event);
    }
    return out;
  }

  TempDir dir_;
  std::optional<NotifyReceiver> notify_;
};

#define ASSERT_STARTED(p) ASSERT_TRUE((p).ok()) << (p).status().message()

TEST_F(TestChildTest, SendsReady) {
  auto p = Start({});
  ASSERT_STARTED(p);
  EXPECT_EQ(notify_->Receive(kWait), "READY=1");
  EXPECT_TRUE(p->Running());
}

TEST_F(TestChildTest, ReadyToAbstractSocket) {
  const std::string name = "@sb-testchild-" + std::to_string(getpid());
  auto rx = NotifyReceiver::Bind(name);
  ASSERT_TRUE(rx.ok()) << rx.status().message();
  auto p = Process::Start(BinPath("sb-testchild"), {.env = {"NOTIFY_SOCKET=" + name}});
  ASSERT_STARTED(p);
  EXPECT_EQ(rx->Receive(kWait), "READY=1");
}

TEST_F(TestChildTest, ReadyDelayDelaysReady) {
  const auto spawned = Clock::now();
  auto p = Start({"--ready-delay", "300", "--record", Record()});
  ASSERT_STARTED(p);
  EXPECT_EQ(notify_->Receive(kWait), "READY=1");
  EXPECT_GE(Clock::now() - spawned, milliseconds(300));
  const pid_t pid = p->pid();
  EXPECT_GE(Find(pid, "ready").ts - Find(pid, "start").ts, 0.3 - kTsSlack);
}

TEST_F(TestChildTest, NoReadyNeverNotifies) {
  auto p = Start({"--no-ready", "--exit-after", "50", "--code", "5"});
  ASSERT_STARTED(p);
  int status = 0;
  ASSERT_TRUE(p->WaitExit(kWait, &status));
  EXPECT_EQ(DescribeWaitStatus(status), "exited 5");
  EXPECT_FALSE(notify_->Receive(milliseconds(0)).has_value());  // it would be queued by now
}

TEST_F(TestChildTest, ExitAfterReadyWithCode) {
  auto p = Start({"--exit-after", "100", "--code", "7", "--record", Record()});
  ASSERT_STARTED(p);
  EXPECT_EQ(notify_->Receive(kWait), "READY=1");
  int status = 0;
  ASSERT_TRUE(p->WaitExit(kWait, &status));
  EXPECT_EQ(DescribeWaitStatus(status), "exited 7");
  const pid_t pid = p->pid();
  EXPECT_GE(Find(pid, "exit").ts - Find(pid, "ready").ts, 0.1 - kTsSlack);
  EXPECT_EQ(Find(pid, "exit").fields["code"], "7");
}

TEST_F(TestChildTest, ExitBeforeReady) {
  auto p = Start({"--exit-before-ready", "4", "--record", Record()});
  ASSERT_STARTED(p);
  int status = 0;
  ASSERT_TRUE(p->WaitExit(kWait, &status));
  EXPECT_EQ(DescribeWaitStatus(status), "exited 4");
  EXPECT_FALSE(notify_->Receive(milliseconds(0)).has_value());
  EXPECT_EQ(EventsOf(p->pid()), (std::vector<std::string>{"start", "exit"}));
}

TEST_F(TestChildTest, CrashDefaultsToSigkill) {
  auto p = Start({"--crash-after", "0"});
  ASSERT_STARTED(p);
  int status = 0;
  ASSERT_TRUE(p->WaitExit(kWait, &status));
  EXPECT_EQ(DescribeWaitStatus(status), "killed by SIGKILL");
}

TEST_F(TestChildTest, CrashSignalByNameWithoutCore) {
  auto p = Start({"--crash-after", "20", "--crash-signal", "SIGSEGV", "--record", Record()});
  ASSERT_STARTED(p);
  int status = 0;
  ASSERT_TRUE(p->WaitExit(kWait, &status));
  EXPECT_EQ(DescribeWaitStatus(status), "killed by SIGSEGV");
  EXPECT_EQ(Find(p->pid(), "crash").fields["signal"], "SIGSEGV");
}

TEST_F(TestChildTest, BadFlagIsUsageError) {
  auto p = Start({"--crash-signal", "NOPE"});
  ASSERT_STARTED(p);
  int status = 0;
  ASSERT_TRUE(p->WaitExit(kWait, &status));
  EXPECT_EQ(DescribeWaitStatus(status), "exited 2");
}

TEST_F(TestChildTest, TermExitsPromptly) {
  auto p = Start({"--record", Record()});
  ASSERT_STARTED(p);
  ASSERT_EQ(notify_->Receive(kWait), "READY=1");
  ASSERT_TRUE(p->Signal(SIGTERM));
  int status = 0;
  ASSERT_TRUE(p->WaitExit(kWait, &status));
  EXPECT_EQ(DescribeWaitStatus(status), "exited 0");
  EXPECT_EQ(EventsOf(p->pid()), (std::vector<std::string>{"start", "ready", "term", "exit"}));
}

TEST_F(TestChildTest, TermDelayKeepsRunning) {
  auto p = Start({"--term-delay", "300", "--record", Record()});
  ASSERT_STARTED(p);
  ASSERT_EQ(notify_->Receive(kWait), "READY=1");
  const auto signalled = Clock::now();
  ASSERT_TRUE(p->Signal(SIGTERM));
  int status = 0;
  ASSERT_TRUE(p->WaitExit(kWait, &status));
  EXPECT_GE(Clock::now() - signalled, milliseconds(300));
  EXPECT_EQ(DescribeWaitStatus(status), "exited 0");
  const pid_t pid = p->pid();
  EXPECT_GE(Find(pid, "exit").ts - Find(pid, "term").ts, 0.3 - kTsSlack);
}

TEST_F(TestChildTest, IgnoreTermSurvivesSigterm) {
  auto p = Start({"--ignore-term"});
  ASSERT_STARTED(p);
  ASSERT_EQ(notify_->Receive(kWait), "READY=1");
  ASSERT_TRUE(p->Signal(SIGTERM));
  // Proving a negative needs a bounded window; 200 ms is ample for a prompt exit to show up.
  EXPECT_FALSE(p->WaitExit(milliseconds(200)));
  ASSERT_TRUE(p->Signal(SIGKILL));
  int status = 0;
  ASSERT_TRUE(p->WaitExit(kWait, &status));
  EXPECT_EQ(DescribeWaitStatus(status), "killed by SIGKILL");
}

TEST_F(TestChildTest, PrintsLinesAfterReady) {
  auto p = Start({"--print", "hello", "--print", "two words", "--exit-after", "0"});
  ASSERT_STARTED(p);
  ASSERT_TRUE(p->WaitExit(kWait));
  EXPECT_EQ(p->Output(), "hello\ntwo words\n");
}

TEST_F(TestChildTest, FloodStdoutInLines) {
  auto p = Start({"--flood-stdout", "100000", "--exit-after", "0"});
  ASSERT_STARTED(p);
  int status = 0;
  ASSERT_TRUE(p->WaitExit(kWait, &status));
  EXPECT_EQ(DescribeWaitStatus(status), "exited 0");
  const auto lines = ReadLines(dir_.File("out"));
  ASSERT_EQ(lines.size(), 1000u);
  EXPECT_TRUE(std::all_of(lines.begin(), lines.end(),
                          [](const std::string& l) { return l == std::string(99, 'x'); }));
}

TEST_F(TestChildTest, FloodStderrWithoutNewline) {
  auto p = Start({"--flood-stderr", "250000", "--no-newline"});
  ASSERT_STARTED(p);
  ASSERT_TRUE(WaitUntil([&] { return ReadFile(dir_.File("err")).size() >= 250000; }, kWait));
  const std::string err = ReadFile(dir_.File("err"));
  EXPECT_EQ(err.size(), 250000u);
  EXPECT_EQ(err.find('\n'), std::string::npos);
  EXPECT_EQ(p->Output(), "");
  EXPECT_TRUE(p->Running());  // the flood is done, the child is not
}

TEST_F(TestChildTest, StalledReaderDoesNotBlockSigterm) {
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  // Reopening the pipe through /proc hands the child its write end as stdout; nobody reads it.
  auto p = Start({"--flood-stdout", "10000000"},
                 {.output = "/proc/self/fd/" + std::to_string(write_end.get())});
  ASSERT_STARTED(p);
  ASSERT_EQ(notify_->Receive(kWait), "READY=1");
  ASSERT_TRUE(p->Signal(SIGTERM));
  int status = 0;
  ASSERT_TRUE(p->WaitExit(kWait, &status));
  EXPECT_EQ(DescribeWaitStatus(status), "exited 0");
}

TEST_F(TestChildTest, ServesInheritedSocketIncludingBacklog) {
  int port = 0;
  UniqueFd listener = ListenTcp(&port);
  ASSERT_TRUE(listener.valid());
  // Connected before the child exists: the kernel queues it until the child accepts.
  UniqueFd early(ConnectTcp("127.0.0.1", port, kWait));
  ASSERT_TRUE(early.valid());
  auto p = Start({"--serve", "--record", Record()},
                 {.env = {"TESTCHILD_TAG=alpha", "LISTEN_FDNAMES=web"},
                  .pass_fds = {listener.get()},
                  .listen_env = true});
  ASSERT_STARTED(p);
  const std::string expected = "alpha " + std::to_string(p->pid()) + "\n";
  EXPECT_EQ(ReadAll(early.get(), kWait), expected);
  UniqueFd late(ConnectTcp("127.0.0.1", port, kWait));
  ASSERT_TRUE(late.valid());
  ASSERT_TRUE(
      WriteAll(late.get(), "GET / HTTP/1.0\r\n\r\n"));  // unread input must not eat the reply
  EXPECT_EQ(ReadAll(late.get(), kWait), expected);

  auto start = Find(p->pid(), "start");
  EXPECT_EQ(start.fields["LISTEN_FDS"], "1");
  EXPECT_EQ(start.fields["LISTEN_PID"], std::to_string(p->pid()));
  EXPECT_EQ(start.fields["LISTEN_FDNAMES"], "web");
  EXPECT_EQ(start.fields["NOTIFY_SOCKET"], notify_->path());
}

TEST_F(TestChildTest, ServeDefaultTagIsChild) {
  int port = 0;
  UniqueFd listener = ListenTcp(&port);
  ASSERT_TRUE(listener.valid());
  auto p = Start({"--serve"}, {.pass_fds = {listener.get()}, .listen_env = true});
  ASSERT_STARTED(p);
  UniqueFd c(ConnectTcp("127.0.0.1", port, kWait));
  ASSERT_TRUE(c.valid());
  EXPECT_EQ(ReadAll(c.get(), kWait), "child " + std::to_string(p->pid()) + "\n");
}

TEST_F(TestChildTest, ServeRefusesSocketsMeantForAnotherPid) {
  int port = 0;
  UniqueFd listener = ListenTcp(&port);
  ASSERT_TRUE(listener.valid());
  auto p =
      Start({"--serve"}, {.env = {"LISTEN_FDS=1", "LISTEN_PID=1"}, .pass_fds = {listener.get()}});
  ASSERT_STARTED(p);
  EXPECT_TRUE(WaitUntil(
      [&] {
        return ReadFile(dir_.File("err")).find("--serve: no LISTEN_FDS") != std::string::npos;
      },
      kWait));
}

TEST_F(TestChildTest, RecordsLifecycleWithMonotonicTimestamps) {
  const double before = MonotonicNow();
  auto p = Start({"--exit-after", "0", "--record", Record()});
  ASSERT_STARTED(p);
  ASSERT_TRUE(p->WaitExit(kWait));
  const double after = MonotonicNow();
  const auto records = ReadRecords(Record());
  ASSERT_EQ(records.size(), 3u) << ReadFile(Record());
  EXPECT_EQ(records[0].event, "start");
  EXPECT_EQ(records[1].event, "ready");
  EXPECT_EQ(records[2].event, "exit");
  EXPECT_EQ(records[0].fields.at("NOTIFY_SOCKET"), notify_->path());
  EXPECT_EQ(records[0].fields.count("LISTEN_FDS"), 0u);
  EXPECT_EQ(records[2].fields.at("code"), "0");
  double last = before - kTsSlack;
  for (const ChildRecord& r : records) {
    EXPECT_EQ(r.pid, p->pid());
    EXPECT_GE(r.ts, last);
    last = r.ts;
  }
  EXPECT_LE(last, after);
}

TEST_F(TestChildTest, ManyChildrenShareOneRecordFile) {
  std::vector<Process> children;
  for (int i = 0; i < 8; ++i) {
    auto p = Start({"--exit-after", "0", "--record", Record()});
    ASSERT_STARTED(p);
    children.push_back(std::move(p).value());
  }
  for (Process& c : children) ASSERT_TRUE(c.WaitExit(kWait));
  EXPECT_EQ(ReadLines(Record()).size(), 24u);
  for (Process& c : children) {
    EXPECT_EQ(EventsOf(c.pid()), (std::vector<std::string>{"start", "ready", "exit"}));
  }
}

TEST_F(TestChildTest, GrandchildSharesTheProcessGroup) {
  auto p = Start({"--spawn-grandchild", "--record", Record()}, {.new_process_group = true});
  ASSERT_STARTED(p);
  ASSERT_EQ(notify_->Receive(kWait), "READY=1");
  const pid_t pid = p->pid();
  const pid_t grandchild = Find(pid, "grandchild").grandchild;
  ASSERT_GT(grandchild, 0) << ReadFile(Record());
  EXPECT_TRUE(Alive(grandchild));
  EXPECT_EQ(ChildrenOf(pid), std::vector<pid_t>{grandchild});
  EXPECT_EQ(getpgid(grandchild), pid);

  ASSERT_EQ(kill(-pid, SIGTERM), 0);
  int status = 0;
  ASSERT_TRUE(p->WaitExit(kWait, &status));
  EXPECT_EQ(DescribeWaitStatus(status), "exited 0");
  EXPECT_TRUE(WaitUntil([&] { return !Alive(grandchild); }, kWait));
}

TEST_F(TestChildTest, ReapsItsGrandchild) {
  auto p = Start({"--spawn-grandchild", "--record", Record()}, {.new_process_group = true});
  ASSERT_STARTED(p);
  ASSERT_EQ(notify_->Receive(kWait), "READY=1");
  const pid_t grandchild = Find(p->pid(), "grandchild").grandchild;
  ASSERT_GT(grandchild, 0) << ReadFile(Record());
  ASSERT_EQ(kill(grandchild, SIGKILL), 0);
  // Gone entirely, not a zombie: the child waited for it.
  EXPECT_TRUE(WaitUntil([&] { return ProcState(grandchild) == 0; }, kWait));
  EXPECT_TRUE(p->Running());
}

}  // namespace
}  // namespace sb::testutil
