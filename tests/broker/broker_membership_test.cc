// The real switchboard-broker's membership flags: a static --peer list, and
// --membership etcd against a real etcd, seen in the broker's log and its
// /metrics (docs/CLUSTER.md, Membership).

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "tests/broker/etcd_server.h"
#include "tests/testutil/testutil.h"

namespace sb {
namespace {

using namespace std::chrono_literals;
namespace tu = testutil;

constexpr auto kDeadline = 10s;
constexpr char kKey[] = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";

class Broker {
 public:
  Broker(const tu::TempDir& tmp, const std::string& name, std::vector<std::string> args)
      : log_(tmp.File(name + ".log")) {
    std::vector<std::string> all = {"--bind", "ipc://" + tmp.path() + "/" + name, "--metrics",
                                    "127.0.0.1:0"};
    all.insert(all.end(), args.begin(), args.end());
    auto p = tu::Process::Start(tu::BinPath("switchboard-broker"), {.args = all, .output = log_});
    EXPECT_TRUE(p.ok()) << p.status().message();
    if (p.ok()) process_.emplace(std::move(p).value());
  }

  std::string log() const { return tu::ReadFile(log_); }
  bool LogHas(const std::string& s) const {
    return tu::WaitUntil([&] { return log().find(s) != std::string::npos; }, kDeadline);
  }
  tu::Process& process() { return *process_; }

  // The /metrics page, "" if it cannot be had.
  std::string Metrics() {
    if (port_ == 0) {
      std::smatch m;
      std::string text;
      if (!tu::WaitUntil(
              [&] {
                text = log();
                return std::regex_search(text, m, std::regex("metrics on 127\\.0\\.0\\.1:(\\d+)"));
              },
              kDeadline)) {
        return "";
      }
      port_ = std::stoi(m[1]);
    }
    int fd = tu::ConnectTcp("127.0.0.1", port_, 2s);
    if (fd < 0) return "";
    UniqueFd owned(fd);
    if (!tu::WriteAll(fd, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")) return "";
    return tu::ReadAll(fd, 2s);
  }
  // Polls /metrics until it holds the line `series value`.
  bool MetricIs(const std::string& series, const std::string& value) {
    return tu::WaitUntil(
        [&] { return Metrics().find("\n" + series + " " + value + "\n") != std::string::npos; },
        kDeadline);
  }

 private:
  std::string log_;
  std::optional<tu::Process> process_;
  int port_ = 0;
};

TEST(BrokerMembershipTest, StaticPeersAreTheMembers) {
  tu::TempDir tmp;
  Broker a(tmp, "a",
           {"--node", "a", "--peer", std::string("b=tcp://127.0.0.1:7001=") + kKey, "--peer",
            std::string("c=tcp://127.0.0.1:7002=") + kKey});
  EXPECT_TRUE(a.MetricIs("switchboard_broker_members", "2")) << a.log();
  EXPECT_TRUE(a.MetricIs("switchboard_broker_membership_changes_total{event=\"joined\"}", "2"));
  EXPECT_TRUE(a.LogHas("membership: b joined (broker tcp://127.0.0.1:7001, incarnation static)"));
  EXPECT_TRUE(a.LogHas("membership: c joined"));
  // Static membership has no etcd to be up or down.
  EXPECT_EQ(a.Metrics().find("switchboard_broker_etcd_up"), std::string::npos);
}

TEST(BrokerMembershipTest, BadMembershipFlagsAreUsageErrors) {
  tu::TempDir tmp;
  const std::string peer = std::string("b=tcp://127.0.0.1:7001=") + kKey;
  int i = 0;
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"--peer", peer},                                               // no --node
           {"--node", "a", "--peer", "b=tcp://127.0.0.1:7001=short"},      // not a key
           {"--node", "a", "--peer", peer, "--peer", peer},                // b twice
           {"--node", "a", "--peer", std::string("a=tcp://h:1=") + kKey},  // itself
           {"--node", "a", "--membership", "etcd"},                        // no --etcd
           {"--node", "a", "--etcd", "http://127.0.0.1:1"}}) {             // --etcd, static
    Broker b(tmp, "bad" + std::to_string(++i), args);                      // a log each
    int status = 0;
    ASSERT_TRUE(b.process().WaitExit(kDeadline, &status));
    EXPECT_EQ(tu::DescribeWaitStatus(status), "exited 2") << b.log();
    EXPECT_NE(b.log().find("switchboard-broker: fatal: unable to set up membership"),
              std::string::npos)
        << b.log();
  }
}

TEST(BrokerMembershipTest, BrokersFindEachOtherInEtcdAndAStoppedOneLeavesAtOnce) {
  const std::string binary = tu::FindEtcd();
  if (binary.empty()) {
    GTEST_SKIP() << "etcd is not installed (Debian: apt-get install etcd-server; "
                    "tools/install-deps.sh installs it)";
  }
  tu::EtcdServer etcd(binary);
  ASSERT_TRUE(etcd.Start()) << etcd.log();
  tu::TempDir tmp;
  auto etcd_args = [&](const std::string& node, int port) {
    return std::vector<std::string>{"--membership",   "etcd",
                                    "--etcd",         etcd.url(),
                                    "--cluster",      "t",
                                    "--node",         node,
                                    "--advertise",    "tcp://127.0.0.1:" + std::to_string(port),
                                    "--curve-public", kKey};
  };
  Broker a(tmp, "a", etcd_args("a", 7001));
  std::optional<Broker> b;
  b.emplace(tmp, "b", etcd_args("b", 7002));
  ASSERT_TRUE(a.LogHas("membership: b joined (broker tcp://127.0.0.1:7002")) << a.log();
  ASSERT_TRUE(b->LogHas("membership: a joined (broker tcp://127.0.0.1:7001")) << b->log();
  EXPECT_TRUE(a.MetricIs("switchboard_broker_etcd_up", "1"));
  EXPECT_TRUE(a.MetricIs("switchboard_broker_members", "1"));
  // A broker told to stop revokes its lease: the others see it leave well
  // before its TTL (10 s) would have run out.
  auto stopped = std::chrono::steady_clock::now();
  ASSERT_TRUE(b->process().Signal(SIGTERM));
  ASSERT_TRUE(b->process().WaitExit(kDeadline));
  ASSERT_TRUE(a.LogHas("membership: b left")) << a.log();
  EXPECT_LT(std::chrono::steady_clock::now() - stopped, 5s);
  EXPECT_TRUE(a.MetricIs("switchboard_broker_members", "0"));
  EXPECT_TRUE(a.MetricIs("switchboard_broker_membership_changes_total{event=\"left\"}", "1"));
}

}  // namespace
}  // namespace sb
