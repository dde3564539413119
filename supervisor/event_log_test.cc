#include "supervisor/event_log.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

namespace sb::supervisor {
namespace {

TEST(EventLog, EncodesAllFieldsWithNulls) {
  TreeEvent ev{.kind = EventKind::kExited, .id = "shard.0", .pid = 123, .signal = SIGKILL};
  std::string line = EncodeEventLine(12.3456789, ev);
  ASSERT_EQ(line.back(), '\n');
  auto v = boost::json::parse(line).as_object();
  EXPECT_NEAR(v["ts"].to_number<double>(), 12.345679, 1e-9);
  EXPECT_EQ(v["event"].as_string(), "exited");
  EXPECT_EQ(v["id"].as_string(), "shard.0");
  EXPECT_EQ(v["pid"].as_int64(), 123);
  EXPECT_TRUE(v["status"].is_null());
  EXPECT_EQ(v["signal"].as_string(), "SIGKILL");
  EXPECT_FALSE(v.contains("reason"));
}

TEST(EventLog, EscapesReason) {
  TreeEvent ev{.kind = EventKind::kGaveUp, .id = "root"};
  ev.reason = "quote \" and newline \n";
  auto v = boost::json::parse(EncodeEventLine(1.0, ev)).as_object();
  EXPECT_EQ(v["reason"].as_string(), "quote \" and newline \n");
  EXPECT_TRUE(v["pid"].is_null());
}

// Runs `body` in a child process whose file size limit is `limit` bytes (SIGXFSZ ignored, as the
// daemon does): a write that crosses the limit is cut short, the next one fails with EFBIG. The
// test process itself keeps its limits. Returns the child's exit status.
int WithFileSizeLimit(rlim_t limit, const std::function<int()>& body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    ::signal(SIGXFSZ, SIG_IGN);
    rlimit rl{limit, limit};
    ::_exit(::setrlimit(RLIMIT_FSIZE, &rl) == 0 ? body() : 100);
  }
  int status = 0;
  if (pid < 0 || ::waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(EventLog, LineThatDoesNotFitIsLostWholeAndTheNextOneStartsALine) {
  char dir[] = "/tmp/sb-eventlog-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/events";
  const std::string first = EncodeEventLine(1.0, TreeEvent{.kind = EventKind::kStarted, .id = "a"});
  const std::string second = EncodeEventLine(2.0, TreeEvent{.kind = EventKind::kReady, .id = "a"});
  const std::string third = EncodeEventLine(3.0, TreeEvent{.kind = EventKind::kExited, .id = "a"});
  // Room for the first line and 10 bytes of the second: its write is cut short.
  int rc = WithFileSizeLimit(first.size() + 10, [&] {
    auto log = EventLog::Open(path);
    if (!log.ok()) return 1;
    if (!log.value()->WriteLine(first).ok()) return 2;
    Status st = log.value()->WriteLine(second);
    if (st.ok()) return 3;
    if (st.message() != "write " + path + ": File too large") return 4;
    if (Slurp(path) != first) return 5;                // no fragment of the second line
    if (log.value()->WriteLine(third).ok()) return 6;  // full: nothing fits now
    return Slurp(path) == first ? 0 : 7;
  });
  EXPECT_EQ(rc, 0);
  // With room again (a new process, no limit), lines follow the last whole one.
  auto log = EventLog::Open(path);
  ASSERT_TRUE(log.ok());
  ASSERT_TRUE(log.value()->WriteLine(third).ok());
  EXPECT_EQ(Slurp(path), first + third);
  std::filesystem::remove_all(dir);
}

TEST(EventLog, OpensNoSymlinkAndNothingInADirectoryOthersCanWrite) {
  char dir[] = "/tmp/sb-eventlog-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string d = dir;
  std::ofstream(d + "/victim") << "precious\n";
  ASSERT_EQ(::symlink((d + "/victim").c_str(), (d + "/events").c_str()), 0);
  auto log = EventLog::Open(d + "/events");
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), Status::Code::kInvalidConfig);
  EXPECT_EQ(
      log.status().message(),
      "events file " + d + "/events is a symbolic link; the daemon does not follow one there");
  EXPECT_EQ(Slurp(d + "/victim"), "precious\n");

  // Not a file to append lines to: refused, and a FIFO without a reader does not block the open.
  log = EventLog::Open("/dev/null");
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().message(), "events file /dev/null is not a regular file");
  ASSERT_EQ(::mkfifo((d + "/fifo").c_str(), 0600), 0);
  EXPECT_FALSE(EventLog::Open(d + "/fifo").ok());

  ASSERT_EQ(::chmod(dir, 0777), 0);
  log = EventLog::Open(d + "/plain");
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().message(), "events file directory " + d +
                                        " is writable by its group or others (mode 0777); only "
                                        "its owner may write it (chmod go-w)");
  EXPECT_FALSE(std::filesystem::exists(d + "/plain"));
  ASSERT_EQ(::chmod(dir, 0700), 0);
  EXPECT_TRUE(EventLog::Open(d + "/plain").ok());
  std::filesystem::remove_all(dir);
}

// Users and tests read these spellings: they never change.
TEST(EventLog, EveryKindHasTheSpellingTheEventsFileAlwaysHad) {
  const std::vector<std::pair<EventKind, std::string>> expected = {
      {EventKind::kStarted, "started"},        {EventKind::kReady, "ready"},
      {EventKind::kExited, "exited"},          {EventKind::kRestarting, "restarting"},
      {EventKind::kStopping, "stopping"},      {EventKind::kStopped, "stopped"},
      {EventKind::kGaveUp, "gave_up"},         {EventKind::kUpgrading, "upgrading"},
      {EventKind::kUpgraded, "upgraded"},      {EventKind::kUpgradeFailed, "upgrade_failed"},
      {EventKind::kDaemonExit, "daemon_exit"},
  };
  ASSERT_EQ(expected.size(), kEventKindNames.size());
  for (const auto& [kind, name] : expected) {
    EXPECT_EQ(EventName(kind), name);
    EXPECT_EQ(ParseEventKind(name), kind) << name;
  }
  EXPECT_EQ(ParseEventKind("gave up"), std::nullopt);
  EXPECT_EQ(ParseEventKind(""), std::nullopt);
}

TEST(EventLog, UpgradedLineCarriesWhatTheNewProcessReported) {
  EXPECT_EQ(
      EncodeEventLine(
          1.0,
          TreeEvent{
              .kind = EventKind::kUpgraded, .id = "shard.0", .pid = 7, .connections = 12, .ms = 3}),
      "{\"ts\":1.000000,\"event\":\"upgraded\",\"id\":\"shard.0\",\"pid\":7,"
      "\"status\":null,\"signal\":null,\"connections\":12,\"ms\":3}\n");
  EXPECT_EQ(EncodeEventLine(1.0, TreeEvent{.kind = EventKind::kUpgraded, .id = "s", .pid = 7}),
            "{\"ts\":1.000000,\"event\":\"upgraded\",\"id\":\"s\",\"pid\":7,"
            "\"status\":null,\"signal\":null,\"connections\":null,\"ms\":null}\n");
}

TEST(EventLog, LineIsExactlyTheDocumentedForm) {
  EXPECT_EQ(
      EncodeEventLine(
          12.5,
          TreeEvent{.kind = EventKind::kExited, .id = "shard.0", .pid = 123, .signal = SIGKILL}),
      "{\"ts\":12.500000,\"event\":\"exited\",\"id\":\"shard.0\",\"pid\":123,"
      "\"status\":null,\"signal\":\"SIGKILL\"}\n");
  EXPECT_EQ(EncodeEventLine(3.0, TreeEvent{.kind = EventKind::kDaemonExit,
                                           .id = "root",
                                           .status = 1,
                                           .reason = "gave up"}),
            "{\"ts\":3.000000,\"event\":\"daemon_exit\",\"id\":\"root\",\"pid\":null,"
            "\"status\":1,\"signal\":null,\"reason\":\"gave up\"}\n");
}

}  // namespace
}  // namespace sb::supervisor
