#include "tests/testutil/testutil.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace sb::testutil {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

TEST(TempDirTest, CreatesAndRemovesRecursively) {
  if (std::getenv("SB_KEEP_TMP") != nullptr) GTEST_SKIP() << "SB_KEEP_TMP keeps temp dirs";
  std::string path;
  {
    TempDir dir;
    path = dir.path();
    ASSERT_FALSE(path.empty());
    ASSERT_EQ(path.rfind("/tmp/sb-", 0), 0u) << path;
    ASSERT_TRUE(WriteFile(dir.File("a.txt"), "hello\n"));
    ASSERT_EQ(mkdir(dir.File("sub").c_str(), 0755), 0);
    ASSERT_TRUE(WriteFile(dir.File("sub/b.txt"), "x"));
    EXPECT_EQ(ReadFile(dir.File("a.txt")), "hello\n");
  }
  EXPECT_FALSE(Exists(path));
}

TEST(TempDirTest, TwoDirsDiffer) {
  TempDir a, b;
  EXPECT_NE(a.path(), b.path());
}

TEST(WaitUntilTest, TrueConditionReturnsAtOnce) {
  auto start = Clock::now();
  EXPECT_TRUE(WaitUntil([] { return true; }, milliseconds(10'000)));
  EXPECT_LT(Clock::now() - start, milliseconds(1000));
}

TEST(WaitUntilTest, FalseConditionHonoursDeadline) {
  int calls = 0;
  auto start = Clock::now();
  EXPECT_FALSE(WaitUntil(
      [&] {
        ++calls;
        return false;
      },
      milliseconds(100)));
  auto elapsed = Clock::now() - start;
  EXPECT_GE(elapsed, milliseconds(100));
  EXPECT_LT(elapsed, milliseconds(5000));
  EXPECT_GE(calls, 2);  // polled, not checked once and slept
}

TEST(WaitUntilTest, BecomesTrueLater) {
  auto until = Clock::now() + milliseconds(50);
  EXPECT_TRUE(WaitUntil([&] { return Clock::now() >= until; }, milliseconds(5000)));
}

TEST(FilesTest, ReadLinesKeepsUnterminatedLastLine) {
  TempDir dir;
  ASSERT_TRUE(WriteFile(dir.File("f"), "one\n\nthree\nfour"));
  EXPECT_EQ(ReadLines(dir.File("f")), (std::vector<std::string>{"one", "", "three", "four"}));
  EXPECT_TRUE(ReadLines(dir.File("missing")).empty());
  EXPECT_EQ(ReadFile(dir.File("missing")), "");
}

TEST(ReadEventsTest, ParsesNullsAndSkipsTruncatedLastLine) {
  TempDir dir;
  ASSERT_TRUE(WriteFile(
      dir.File("events.jsonl"),
      R"({"ts": 12.345678, "event": "started", "id": "shard.0", "pid": 123})"
      "\n"
      R"({"ts": 13, "event": "exited", "id": "shard.0", "pid": 123, "status": 1, "signal": null})"
      "\n"
      R"({"ts": 13.5, "event": "exited", "id": "shard.1", "pid": 124, "status": null, "signal": "SIGKILL"})"
      "\n"
      R"({"ts": 14.0, "event": "gave_up", "id": "root", "pid": null, "reason": "intensity 3/5s"})"
      "\n"
      R"({"ts": 15.0, "event": "daemon_exit", "id": "", "pid": nu)"));
  std::string error;
  auto events = ReadEvents(dir.File("events.jsonl"), &error);
  EXPECT_EQ(error, "");
  ASSERT_EQ(events.size(), 4u);
  EXPECT_DOUBLE_EQ(events[0].ts, 12.345678);
  EXPECT_EQ(events[0].event, "started");
  EXPECT_EQ(events[0].id, "shard.0");
  EXPECT_EQ(events[0].pid, 123);
  EXPECT_FALSE(events[0].status.has_value());
  EXPECT_DOUBLE_EQ(events[1].ts, 13.0);
  EXPECT_EQ(events[1].status, 1);
  EXPECT_EQ(events[1].signal, "");
  EXPECT_FALSE(events[2].status.has_value());
  EXPECT_EQ(events[2].signal, "SIGKILL");
  EXPECT_EQ(events[3].pid, 0);
  EXPECT_EQ(events[3].reason, "intensity 3/5s");

  EXPECT_EQ(FilterEvents(events, "shard.0").size(), 2u);
  EXPECT_EQ(FilterEvents(events, "", "exited").size(), 2u);
  EXPECT_EQ(FilterEvents(events, "shard.1", "exited")[0].pid, 124);
}

TEST(ReadEventsTest, ReportsBadCompleteLines) {
  TempDir dir;
  ASSERT_TRUE(WriteFile(dir.File("events.jsonl"),
                        "not json\n{\"ts\": 1, \"event\": \"started\", \"id\": \"a\"}\n"));
  std::string error;
  auto events = ReadEvents(dir.File("events.jsonl"), &error);
  EXPECT_EQ(events.size(), 1u);
  EXPECT_NE(error.find(":1:"), std::string::npos) << error;
  EXPECT_TRUE(ReadEvents(dir.File("missing")).empty());
}

TEST(ReadRecordsTest, ParsesTestchildLines) {
  TempDir dir;
  ASSERT_TRUE(WriteFile(dir.File("rec"),
                        "10 start 1.000001 LISTEN_FDS=1 NOTIFY_SOCKET=/tmp/x\n"
                        "10 grandchild 11 1.5\n"
                        "10 exit 2.25 code=3\n"));
  auto r = ReadRecords(dir.File("rec"));
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].pid, 10);
  EXPECT_EQ(r[0].event, "start");
  EXPECT_DOUBLE_EQ(r[0].ts, 1.000001);
  EXPECT_EQ(r[0].fields["LISTEN_FDS"], "1");
  EXPECT_EQ(r[0].fields["NOTIFY_SOCKET"], "/tmp/x");
  EXPECT_EQ(r[1].grandchild, 11);
  EXPECT_DOUBLE_EQ(r[1].ts, 1.5);
  EXPECT_EQ(r[2].fields["code"], "3");
}

TEST(ProcessTest, ReportsExitStatus) {
  auto p = Process::Start("/bin/sh", {.args = {"-c", "exit 3"}});
  ASSERT_TRUE(p.ok()) << p.status().message();
  int status = 0;
  ASSERT_TRUE(p->WaitExit(milliseconds(10'000), &status));
  ASSERT_TRUE(WIFEXITED(status)) << DescribeWaitStatus(status);
  EXPECT_EQ(WEXITSTATUS(status), 3);
  EXPECT_FALSE(p->Running());
  EXPECT_FALSE(p->Signal(SIGTERM));  // reaped: the pid is no longer ours
  EXPECT_EQ(DescribeWaitStatus(status), "exited 3");
}

TEST(ProcessTest, CapturesOutputAndEnvironment) {
  TempDir dir;
  auto p = Process::Start("/bin/sh", {.args = {"-c", "echo out $SB_X; echo err >&2"},
                                      .env = {"SB_X=42"},
                                      .output = dir.File("out"),
                                      .stderr_output = dir.File("err")});
  ASSERT_TRUE(p.ok()) << p.status().message();
  ASSERT_TRUE(p->WaitExit(milliseconds(10'000)));
  EXPECT_EQ(p->Output(), "out 42\n");
  EXPECT_EQ(ReadFile(dir.File("err")), "err\n");
}

TEST(ProcessTest, SignalAndRunning) {
  auto p = Process::Start("/bin/sleep", {.args = {"1000"}});
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_TRUE(p->Running());
  EXPECT_TRUE(Alive(p->pid()));
  EXPECT_NE(ProcState(p->pid()), 0);
  auto kids = ChildrenOf(getpid());
  EXPECT_NE(std::find(kids.begin(), kids.end(), p->pid()), kids.end());
  EXPECT_GT(CountOpenFds(p->pid()), 2);
  EXPECT_GT(RssKb(p->pid()), 0);
  ASSERT_TRUE(p->Signal(SIGTERM));
  int status = 0;
  ASSERT_TRUE(p->WaitExit(milliseconds(10'000), &status));
  EXPECT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(DescribeWaitStatus(status), "killed by SIGTERM");
  EXPECT_FALSE(Alive(p->pid()));
}

TEST(ProcessTest, ZombieIsNotAlive) {
  auto p = Process::Start("/bin/sh", {.args = {"-c", "exit 0"}});
  ASSERT_TRUE(p.ok()) << p.status().message();
  const pid_t pid = p->pid();
  ASSERT_TRUE(WaitUntil([&] { return ProcState(pid) == 'Z'; }, milliseconds(10'000)));
  EXPECT_FALSE(Alive(pid));
  ASSERT_TRUE(p->WaitExit(milliseconds(10'000)));
  EXPECT_EQ(ProcState(pid), 0);
}

TEST(ProcessTest, DestructorKillsAndReaps) {
  pid_t pid;
  {
    auto p = Process::Start("/bin/sleep", {.args = {"1000"}});
    ASSERT_TRUE(p.ok()) << p.status().message();
    pid = p->pid();
  }
  EXPECT_EQ(ProcState(pid), 0);
}

TEST(ProcessTest, ExecFailureIsAStatus) {
  auto p = Process::Start("/nonexistent/binary");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("No such file"), std::string::npos) << p.status().message();
}

TEST(ProcessTest, PassesFdsWithListenEnv) {
  TempDir dir;
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd mine(sv[0]), theirs(sv[1]);
  auto p = Process::Start("/bin/sh", {.args = {"-c",
                                               "echo \"$LISTEN_FDS $LISTEN_PID $$\"; echo hi >&3; "
                                               "ls /proc/self/fd | wc -l"},
                                      .output = dir.File("out"),
                                      .pass_fds = {theirs.get()},
                                      .listen_env = true});
  ASSERT_TRUE(p.ok()) << p.status().message();
  theirs.Reset();
  EXPECT_EQ(ReadAll(mine.get(), milliseconds(10'000)), "hi\n");
  ASSERT_TRUE(p->WaitExit(milliseconds(10'000)));
  auto lines = ReadLines(dir.File("out"));
  ASSERT_EQ(lines.size(), 2u);
  const std::string pid = std::to_string(p->pid());
  EXPECT_EQ(lines[0], "1 " + pid + " " + pid);
  // ls's stdin, stdout, stderr, fd 3 and the directory it reads: nothing leaked from the test.
  EXPECT_EQ(lines[1], "5");
}

TEST(ProcessTest, NewProcessGroupIsKilledAsAGroup) {
  TempDir dir;
  pid_t grandchild = 0;
  {
    auto p = Process::Start("/bin/sh", {.args = {"-c", "sleep 1000 & echo $!; wait"},
                                        .output = dir.File("out"),
                                        .new_process_group = true});
    ASSERT_TRUE(p.ok()) << p.status().message();
    EXPECT_EQ(getpgid(p->pid()), p->pid());
    ASSERT_TRUE(
        WaitUntil([&] { return !ReadLines(dir.File("out")).empty(); }, milliseconds(10'000)));
    grandchild = std::atoi(ReadLines(dir.File("out"))[0].c_str());
    ASSERT_TRUE(Alive(grandchild));
    EXPECT_EQ(DescendantsOf(p->pid()), std::vector<pid_t>{grandchild});
  }
  EXPECT_TRUE(WaitUntil([&] { return !Alive(grandchild); }, milliseconds(10'000)));
}

TEST(NetTest, ListenConnectReadAll) {
  int port = 0;
  UniqueFd listener = ListenTcp(&port);
  ASSERT_TRUE(listener.valid());
  ASSERT_GT(port, 0);
  UniqueFd client(ConnectTcp("127.0.0.1", port, milliseconds(10'000)));
  ASSERT_TRUE(client.valid());
  UniqueFd server(accept(listener.get(), nullptr, nullptr));
  ASSERT_TRUE(server.valid());
  ASSERT_TRUE(WriteAll(server.get(), "ping\n"));
  server.Reset();
  EXPECT_EQ(ReadAll(client.get(), milliseconds(10'000)), "ping\n");
}

TEST(NetTest, ConnectToClosedPortTimesOut) {
  const int port = FreePort();
  ASSERT_GT(port, 0);
  auto start = Clock::now();
  EXPECT_EQ(ConnectTcp("127.0.0.1", port, milliseconds(50)), -1);
  EXPECT_GE(Clock::now() - start, milliseconds(50));
}

TEST(NetTest, ReadAllStopsAtDeadline) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  ASSERT_TRUE(WriteAll(b.get(), "partial"));
  EXPECT_EQ(ReadAll(a.get(), milliseconds(50)), "partial");
}

TEST(NotifyReceiverTest, ReceivesDatagrams) {
  TempDir dir;
  auto rx = NotifyReceiver::Bind(dir.File("notify.sock"));
  ASSERT_TRUE(rx.ok()) << rx.status().message();
  EXPECT_FALSE(rx->Receive(milliseconds(20)).has_value());
  UniqueFd tx(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", rx->path().c_str());
  ASSERT_EQ(sendto(tx.get(), "READY=1", 7, 0, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 7);
  EXPECT_EQ(rx->Receive(milliseconds(10'000)), "READY=1");
}

TEST(BinDirTest, IsThisTestsDirectory) {
  const std::string dir = BinDir();
  ASSERT_FALSE(dir.empty());
  EXPECT_EQ(BinPath("testutil_test"), dir + "/testutil_test");
  EXPECT_TRUE(Exists(BinPath("testutil_test")));
}

}  // namespace
}  // namespace sb::testutil
