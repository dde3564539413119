#include "supervisor/supervisor_metrics.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "common/build_info.h"
#include "common/metric_names.h"

namespace sb::supervisor {
namespace {

using LabelSet = std::map<std::string, std::string>;

// The body of GET http://127.0.0.1:<port><path>, or "" on any failure.
std::string HttpGet(int port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
        static_cast<ssize_t>(request.size())) {
      char buf[4096];
      ssize_t n;
      while ((n = ::read(fd, buf, sizeof buf)) > 0) response.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  if (response.rfind("HTTP/1.1 200", 0) != 0 && response.rfind("HTTP/1.0 200", 0) != 0) return "";
  size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

struct Sample {
  std::string name;
  LabelSet labels;
  double value = 0;
};

// Minimal reader of the text format, enough for values without ',' or '"'.
std::vector<Sample> ParseSamples(const std::string& body) {
  std::vector<Sample> out;
  std::istringstream in(body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    Sample s;
    size_t brace = line.find('{');
    size_t space;
    if (brace != std::string::npos) {
      s.name = line.substr(0, brace);
      size_t close = line.find('}', brace);
      std::string labels = line.substr(brace + 1, close - brace - 1);
      std::istringstream ls(labels);
      std::string kv;
      while (std::getline(ls, kv, ',')) {
        size_t eq = kv.find('=');
        s.labels[kv.substr(0, eq)] = kv.substr(eq + 2, kv.size() - eq - 3);
      }
      space = close + 1;
    } else {
      space = line.find(' ');
      s.name = line.substr(0, space);
    }
    s.value = std::stod(line.substr(space + 1));
    out.push_back(std::move(s));
  }
  return out;
}

std::optional<double> Value(const std::string& body, std::string_view name,
                            const LabelSet& labels) {
  for (const Sample& s : ParseSamples(body)) {
    if (s.name == name && s.labels == labels) return s.value;
  }
  return std::nullopt;
}

std::string S(std::string_view v) { return std::string(v); }

TreeEvent Ev(EventKind kind, std::string id, std::optional<int> pid = std::nullopt,
             std::optional<int> status = std::nullopt, std::optional<int> signal = std::nullopt,
             std::string reason = "") {
  return TreeEvent{.kind = kind,
                   .id = std::move(id),
                   .pid = pid,
                   .status = status,
                   .signal = signal,
                   .reason = std::move(reason)};
}

const LabelSet kShard = {{"node", "node1"}, {"child", "shard.0"}, {"supervisor", "root/shards"}};

LabelSet With(LabelSet labels, const std::string& k, const std::string& v) {
  labels[k] = v;
  return labels;
}

// promtool from the Debian `prometheus` package: the reference parser and linter.
std::string FindPromtool() {
  const char* path = ::getenv("PATH");
  std::istringstream dirs(path ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    std::string candidate = (dir.empty() ? "." : dir) + "/promtool";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

class SupervisorMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = SupervisorMetrics::Create("127.0.0.1:0", "node1");
    ASSERT_TRUE(m.ok()) << m.status().message();
    metrics_ = std::move(m.value());
    ASSERT_GT(metrics_->port(), 0);
    metrics_->DeclareSupervisor("root", 3);
    metrics_->DeclareSupervisor("shards", 5, "root/shards");
    metrics_->DeclareChild("shard.0", "root/shards");
  }

  std::string Scrape() {
    std::string body = HttpGet(metrics_->port(), "/metrics");
    EXPECT_FALSE(body.empty()) << "no /metrics response on port " << metrics_->port();
    return body;
  }

  void Feed(const TreeEvent& ev, double ts) { metrics_->OnEvent(ev, ts); }

  std::unique_ptr<SupervisorMetrics> metrics_;
};

TEST_F(SupervisorMetricsTest, DeclaredChildStartsDownWithNoExit) {
  std::string body = Scrape();
  EXPECT_EQ(Value(body, metrics::kChildUp, kShard), 0);
  EXPECT_EQ(Value(body, metrics::kChildRestartsTotal, kShard), 0);
  EXPECT_EQ(Value(body, metrics::kChildLastExitStatus, kShard), -1);
  EXPECT_EQ(Value(body, S(metrics::kChildStartDurationSeconds) + "_count", kShard), 0);
  EXPECT_EQ(Value(body, metrics::kChildExitsTotal, With(kShard, "reason", "normal")), 0);
  EXPECT_EQ(Value(body, metrics::kChildExitsTotal, With(kShard, "reason", "abnormal")), 0);
  const LabelSet shards = {{"node", "node1"}, {"supervisor", "root/shards"}};
  EXPECT_EQ(Value(body, metrics::kSupervisorIntensity, shards), 5);
  EXPECT_EQ(Value(body, metrics::kSupervisorRestartsInWindow, shards), 0);
  EXPECT_EQ(Value(body, metrics::kSupervisorGaveUpTotal, shards), 0);
  EXPECT_EQ(Value(body, metrics::kSupervisorIntensity, {{"node", "node1"}, {"supervisor", "root"}}),
            3);
}

TEST_F(SupervisorMetricsTest, FollowsTheChildLifecycle) {
  Feed(Ev(EventKind::kStarted, "shard.0", 100), 10.0);
  EXPECT_EQ(Value(Scrape(), metrics::kChildUp, kShard), 0);
  Feed(Ev(EventKind::kReady, "shard.0", 100), 10.25);
  std::string body = Scrape();
  EXPECT_EQ(Value(body, metrics::kChildUp, kShard), 1);
  const std::string hist = S(metrics::kChildStartDurationSeconds);
  EXPECT_EQ(Value(body, hist + "_count", kShard), 1);
  EXPECT_DOUBLE_EQ(Value(body, hist + "_sum", kShard).value_or(-1), 0.25);
  EXPECT_EQ(Value(body, hist + "_bucket", With(kShard, "le", "0.1")), 0);
  EXPECT_EQ(Value(body, hist + "_bucket", With(kShard, "le", "0.25")), 1);
  EXPECT_EQ(Value(body, hist + "_bucket", With(kShard, "le", "0.0005")), 0);
  EXPECT_EQ(Value(body, hist + "_bucket", With(kShard, "le", "30")), 1);
  EXPECT_EQ(Value(body, hist + "_bucket", With(kShard, "le", "+Inf")), 1);

  Feed(Ev(EventKind::kExited, "shard.0", 100, std::nullopt, SIGKILL), 11.0);
  body = Scrape();
  EXPECT_EQ(Value(body, metrics::kChildUp, kShard), 0);
  EXPECT_EQ(Value(body, metrics::kChildLastExitStatus, kShard), 137);
  EXPECT_EQ(Value(body, metrics::kChildExitsTotal, With(kShard, "reason", "abnormal")), 1);
  EXPECT_EQ(Value(body, metrics::kChildExitsTotal, With(kShard, "reason", "normal")), 0);

  Feed(Ev(EventKind::kRestarting, "shard.0", std::nullopt, std::nullopt, std::nullopt,
          "killed by SIGKILL"),
       11.0);
  metrics_->SetRestartsInWindow("shards", 1);
  Feed(Ev(EventKind::kStarted, "shard.0", 101), 11.5);
  body = Scrape();
  EXPECT_EQ(Value(body, metrics::kChildRestartsTotal, kShard), 1);
  EXPECT_EQ(Value(body, metrics::kChildUp, kShard), 0);
  EXPECT_EQ(Value(body, metrics::kChildLastExitStatus, kShard), 137);  // kept while restarting
  EXPECT_EQ(Value(body, metrics::kSupervisorRestartsInWindow,
                  {{"node", "node1"}, {"supervisor", "root/shards"}}),
            1);
  Feed(Ev(EventKind::kReady, "shard.0", 101), 11.502);
  body = Scrape();
  EXPECT_EQ(Value(body, metrics::kChildUp, kShard), 1);
  EXPECT_EQ(Value(body, hist + "_count", kShard), 2);
  EXPECT_EQ(Value(body, hist + "_bucket", With(kShard, "le", "0.0025")), 1);
}

TEST_F(SupervisorMetricsTest, CountsUpgradesByResultAndStaysUpThroughAHandOff) {
  Feed(Ev(EventKind::kStarted, "shard.0", 100), 10.0);
  Feed(Ev(EventKind::kReady, "shard.0", 100), 10.1);
  std::string body = Scrape();
  EXPECT_EQ(Value(body, metrics::kChildUpgradesTotal, With(kShard, "result", "ok")), 0);
  EXPECT_EQ(Value(body, metrics::kChildUpgradesTotal, With(kShard, "result", "failed")), 0);
  Feed(Ev(EventKind::kUpgrading, "shard.0", 100), 11.0);
  Feed(Ev(EventKind::kUpgradeFailed, "shard.0", 100), 11.5);
  Feed(Ev(EventKind::kUpgrading, "shard.0", 100), 12.0);
  Feed(Ev(EventKind::kExited, "shard.0", 100, 0), 12.5);  // the old process, handed over
  Feed(Ev(EventKind::kUpgraded, "shard.0", 102), 12.5);
  body = Scrape();
  EXPECT_EQ(Value(body, metrics::kChildUpgradesTotal, With(kShard, "result", "ok")), 1);
  EXPECT_EQ(Value(body, metrics::kChildUpgradesTotal, With(kShard, "result", "failed")), 1);
  EXPECT_EQ(Value(body, metrics::kChildUp, kShard), 1);
  EXPECT_EQ(Value(body, metrics::kChildRestartsTotal, kShard), 0);
}

TEST_F(SupervisorMetricsTest, ClassifiesExitsLikeOtp) {
  metrics_->DeclareChild("job", "root", {3});
  const LabelSet job = {{"node", "node1"}, {"child", "job"}, {"supervisor", "root"}};
  auto exits = [&](const char* reason) {
    return Value(Scrape(), metrics::kChildExitsTotal, With(job, "reason", reason));
  };
  Feed(Ev(EventKind::kExited, "job", 1, 3), 1);  // a success_exit_codes entry
  EXPECT_EQ(exits("normal"), 1);
  Feed(Ev(EventKind::kExited, "job", 2, 1), 2);
  EXPECT_EQ(exits("abnormal"), 1);
  EXPECT_EQ(Value(Scrape(), metrics::kChildLastExitStatus, job), 1);
  // Stopped by its supervisor: SIGTERM is OTP's `shutdown`, a normal exit.
  Feed(Ev(EventKind::kStarted, "job", 3), 3);
  Feed(Ev(EventKind::kReady, "job", 3), 3);
  Feed(Ev(EventKind::kStopping, "job", 3), 4);
  Feed(Ev(EventKind::kExited, "job", 3, std::nullopt, SIGTERM), 4);
  Feed(Ev(EventKind::kStopped, "job", 3), 4);
  EXPECT_EQ(exits("normal"), 2);
  EXPECT_EQ(exits("abnormal"), 1);
  std::string body = Scrape();
  EXPECT_EQ(Value(body, metrics::kChildLastExitStatus, job), 128 + SIGTERM);
  EXPECT_EQ(Value(body, metrics::kChildUp, job), 0);
  // The next incarnation's crash is abnormal again.
  Feed(Ev(EventKind::kStarted, "job", 4), 5);
  Feed(Ev(EventKind::kExited, "job", 4, std::nullopt, SIGSEGV), 5);
  EXPECT_EQ(exits("abnormal"), 2);
  // A start that never became ready is not timed.
  EXPECT_EQ(Value(Scrape(), S(metrics::kChildStartDurationSeconds) + "_count", job), 1);
}

TEST_F(SupervisorMetricsTest, SubSupervisorDeclaredAsChild) {
  metrics_->DeclareChild("shards", "root");
  const LabelSet sub = {{"node", "node1"}, {"child", "shards"}, {"supervisor", "root"}};
  Feed(Ev(EventKind::kStarted, "shards"), 1);
  Feed(Ev(EventKind::kReady, "shards"), 2);
  EXPECT_EQ(Value(Scrape(), metrics::kChildUp, sub), 1);
  Feed(Ev(EventKind::kGaveUp, "shards", std::nullopt, std::nullopt, std::nullopt, "more than 5"),
       3);
  Feed(Ev(EventKind::kExited, "shards", std::nullopt, std::nullopt, std::nullopt, "gave up"), 3);
  std::string body = Scrape();
  EXPECT_EQ(Value(body, metrics::kChildUp, sub), 0);
  EXPECT_EQ(Value(body, metrics::kChildLastExitStatus, sub), -1);  // no process status
  EXPECT_EQ(Value(body, metrics::kChildExitsTotal, With(sub, "reason", "normal")), 1);
  EXPECT_EQ(Value(body, metrics::kSupervisorGaveUpTotal,
                  {{"node", "node1"}, {"supervisor", "root/shards"}}),
            1);
}

TEST_F(SupervisorMetricsTest, IgnoresUndeclaredIds) {
  Feed(Ev(EventKind::kStarted, "nobody", 5), 1);
  Feed(Ev(EventKind::kExited, "nobody", 5, 1), 2);
  Feed(Ev(EventKind::kGaveUp, "nobody"), 2);
  metrics_->SetRestartsInWindow("nobody", 4);
  Feed(Ev(EventKind::kDaemonExit, "root", std::nullopt, 0), 3);
  std::string body = Scrape();
  EXPECT_EQ(body.find("nobody"), std::string::npos);
}

TEST_F(SupervisorMetricsTest, ForgetRemovesEverySeries) {
  metrics_->DeclareChild("shard.1", "root/shards");
  Feed(Ev(EventKind::kStarted, "shard.1", 7), 1);
  Feed(Ev(EventKind::kReady, "shard.1", 7), 2);
  ASSERT_NE(Scrape().find("shard.1"), std::string::npos);
  metrics_->ForgetChild("shard.1");
  metrics_->ForgetChild("shard.1");  // twice is harmless
  std::string body = Scrape();
  EXPECT_EQ(body.find("shard.1"), std::string::npos);
  EXPECT_EQ(Value(body, metrics::kChildUp, kShard), 0);  // the others stay
  metrics_->ForgetSupervisor("shards");
  body = Scrape();
  const LabelSet shards = {{"node", "node1"}, {"supervisor", "root/shards"}};
  EXPECT_FALSE(Value(body, metrics::kSupervisorIntensity, shards).has_value());
  EXPECT_FALSE(Value(body, metrics::kSupervisorRestartsInWindow, shards).has_value());
  EXPECT_FALSE(Value(body, metrics::kSupervisorGaveUpTotal, shards).has_value());
  EXPECT_TRUE(
      Value(body, metrics::kSupervisorIntensity, {{"node", "node1"}, {"supervisor", "root"}})
          .has_value());
  // Declared again (scaled back up): fresh series.
  metrics_->DeclareChild("shard.1", "root/shards");
  EXPECT_EQ(Value(Scrape(), metrics::kChildLastExitStatus,
                  {{"node", "node1"}, {"child", "shard.1"}, {"supervisor", "root/shards"}}),
            -1);
}

TEST_F(SupervisorMetricsTest, MovedChildChangesItsSupervisorLabel) {
  metrics_->DeclareChild("shard.0", "root/other");
  std::string body = Scrape();
  EXPECT_FALSE(Value(body, metrics::kChildUp, kShard).has_value());
  EXPECT_EQ(Value(body, metrics::kChildUp, With(kShard, "supervisor", "root/other")), 0);
}

TEST_F(SupervisorMetricsTest, ReportsDaemonStats) {
  metrics_->UpdateDaemonStats(0.004);
  std::string body = Scrape();
  const LabelSet node = {{"node", "node1"}};
  EXPECT_GT(Value(body, metrics::kDaemonOpenFds, node).value_or(0), 3);
  EXPECT_GT(Value(body, metrics::kDaemonResidentMemoryBytes, node).value_or(0), 1 << 20);
  EXPECT_DOUBLE_EQ(Value(body, metrics::kEventLoopLagSeconds, node).value_or(-1), 0.004);
}

TEST_F(SupervisorMetricsTest, ReportsItsBuildInfo) {
  const LabelSet build = {
      {"node", "node1"}, {"version", S(BuildVersion())}, {"commit", S(BuildCommit())}};
  EXPECT_EQ(Value(Scrape(), metrics::kBuildInfo, build), 1);
}

TEST_F(SupervisorMetricsTest, CountsEventsTheEventsFileLost) {
  const LabelSet node = {{"node", "node1"}};
  EXPECT_EQ(Value(Scrape(), metrics::kEventsWriteFailuresTotal, node), 0);
  metrics_->CountEventsWriteFailure();
  metrics_->CountEventsWriteFailure();
  EXPECT_EQ(Value(Scrape(), metrics::kEventsWriteFailuresTotal, node), 2);
}

TEST_F(SupervisorMetricsTest, ReportsEachSocketsBalanceMode) {
  const LabelSet gateway = {{"node", "node1"}, {"socket", "gateway"}, {"mode", "round_robin"}};
  const LabelSet admin = {{"node", "node1"}, {"socket", "admin"}, {"mode", "shared"}};
  metrics_->SetSocketModes({{"gateway", "round_robin"}, {"admin", "shared"}});
  std::string body = Scrape();
  EXPECT_EQ(Value(body, metrics::kSocketBalanceInfo, gateway), 1);
  EXPECT_EQ(Value(body, metrics::kSocketBalanceInfo, admin), 1);
  // A reload removed admin and gateway fell back: no ghost series remain.
  metrics_->SetSocketModes({{"gateway", "reuseport_hash"}});
  body = Scrape();
  EXPECT_EQ(Value(body, metrics::kSocketBalanceInfo, gateway), std::nullopt);
  EXPECT_EQ(Value(body, metrics::kSocketBalanceInfo, admin), std::nullopt);
  EXPECT_EQ(Value(body, metrics::kSocketBalanceInfo, With(gateway, "mode", "reuseport_hash")), 1);
}

TEST_F(SupervisorMetricsTest, PromtoolAcceptsTheExposition) {
  const std::string promtool = FindPromtool();
  ASSERT_FALSE(promtool.empty())
      << "promtool not found in PATH; run tools/install-deps.sh (Debian package `prometheus`)";
  metrics_->DeclareChild("job", "root", {3});
  Feed(Ev(EventKind::kStarted, "shard.0", 100), 10.0);
  Feed(Ev(EventKind::kReady, "shard.0", 100), 10.01);
  Feed(Ev(EventKind::kExited, "shard.0", 100, std::nullopt, SIGKILL), 11.0);
  Feed(Ev(EventKind::kRestarting, "shard.0"), 11.0);
  Feed(Ev(EventKind::kExited, "job", 9, 3), 11.0);
  Feed(Ev(EventKind::kGaveUp, "shards"), 12.0);
  metrics_->SetRestartsInWindow("root", 2);
  metrics_->UpdateDaemonStats(0.0001);
  std::string body = Scrape();
  ASSERT_FALSE(body.empty());

  char dir[] = "/tmp/sb-promtool-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string input = std::string(dir) + "/metrics.txt";
  const std::string output = std::string(dir) + "/promtool.out";
  std::ofstream(input) << body;
  const std::string cmd = promtool + " check metrics < " + input + " > " + output + " 2>&1";
  int rc = std::system(cmd.c_str());
  std::stringstream out;
  out << std::ifstream(output).rdbuf();
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(WIFEXITED(rc)) << cmd;
  EXPECT_EQ(WEXITSTATUS(rc), 0) << "promtool check metrics:\n" << out.str() << "\ninput:\n" << body;
  EXPECT_EQ(out.str(), "") << "promtool lint findings:\n" << out.str();
}

TEST(SupervisorMetricsCreate, SecondListenerOnThePortFails) {
  auto first = SupervisorMetrics::Create("127.0.0.1:0", "node1");
  ASSERT_TRUE(first.ok()) << first.status().message();
  const std::string listen = "127.0.0.1:" + std::to_string(first.value()->port());
  auto second = SupervisorMetrics::Create(listen, "node1");
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), Status::Code::kIoError);
  EXPECT_EQ(second.status().message(),
            "unable to listen for metrics on " + listen + ": Address already in use");
  EXPECT_FALSE(HttpGet(first.value()->port(), "/metrics").empty());  // the first still serves
}

TEST(SupervisorMetricsCreate, StopsPromptlyAfterServing) {
  // civetweb's listener polls with a 2 s timeout; the destructor must not wait it out.
  auto m = SupervisorMetrics::Create("127.0.0.1:0", "node1");
  ASSERT_TRUE(m.ok()) << m.status().message();
  const int port = m.value()->port();
  ASSERT_FALSE(HttpGet(port, "/metrics").empty());
  auto start = std::chrono::steady_clock::now();
  m.value().reset();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  EXPECT_TRUE(HttpGet(port, "/metrics").empty());  // the port is closed
}

TEST(SupervisorMetricsCreate, RejectsMalformedAddresses) {
  for (const char* bad : {"", "9100", "127.0.0.1", "127.0.0.1:", "127.0.0.1:99999",
                          "127.0.0.1:http", "[::1:9100", "::1:9100"}) {
    auto m = SupervisorMetrics::Create(bad, "node1");
    ASSERT_FALSE(m.ok()) << bad;
    EXPECT_EQ(m.status().code(), Status::Code::kInvalidConfig) << bad;
    EXPECT_EQ(
        m.status().message().rfind(
            "unable to listen for metrics on " + std::string(bad) + ": expected host:port", 0),
        0u)
        << m.status().message();
  }
}

TEST(SupervisorMetricsCreate, UnassignableAddressNamesTheReason) {
  auto m = SupervisorMetrics::Create("192.0.2.1:9100", "node1");  // TEST-NET-1, not ours
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().message(),
            "unable to listen for metrics on 192.0.2.1:9100: Cannot assign requested address");
}

TEST(SupervisorMetricsCreate, EveryNewFdIsCloseOnExec) {
  // The daemon forks children; a leaked listener would keep the port alive.
  auto fds = [] {
    std::set<int> listed;
    for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
      listed.insert(std::stoi(e.path().filename().string()));
    }
    std::set<int> open;  // without the iterator's own fd, closed by now
    for (int fd : listed) {
      if (::fcntl(fd, F_GETFD) >= 0) open.insert(fd);
    }
    return open;
  };
  std::set<int> before = fds();
  auto m = SupervisorMetrics::Create("127.0.0.1:0", "node1");
  ASSERT_TRUE(m.ok()) << m.status().message();
  ASSERT_FALSE(HttpGet(m.value()->port(), "/metrics").empty());
  int new_fds = 0;
  for (int fd : fds()) {
    if (before.count(fd)) continue;
    int flags = ::fcntl(fd, F_GETFD);
    ++new_fds;
    EXPECT_TRUE(flags & FD_CLOEXEC) << "fd " << fd << " is inherited by children";
  }
  EXPECT_GE(new_fds, 1);
}

}  // namespace
}  // namespace sb::supervisor
