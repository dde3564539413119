// The real switchboard-broker's peer socket (--peer-bind), reached by raw
// CURVE DEALERs: who completes a handshake, what is counted, and when the
// broker refuses to start (docs/SECURITY.md, Peer links).

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <cstring>
#include <map>
#include <optional>
#include <regex>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "common/curve.h"
#include "tests/supervisor/daemon_harness.h"
#include "tests/testutil/testutil.h"

namespace sb {
namespace {

using namespace std::chrono_literals;
namespace tu = testutil;

constexpr auto kDeadline = 10s;

class PeerSocketTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!zmq_has("curve")) GTEST_FAIL() << "libzmq without CURVE";
    key_file_ = tmp_.File("node1.key");
    auto keys = curve::Generate();
    ASSERT_TRUE(keys.ok());
    node_ = keys.value();
    ASSERT_TRUE(curve::WriteSecretFile(key_file_, node_.secret_key, false).ok());
    member_ = curve::Generate().value();
  }

  // Starts the broker with `args` (its shards' endpoint in the temp dir).
  void Start(std::vector<std::string> args) {
    log_ = tmp_.File("broker." + std::to_string(++starts_) + ".log");
    args.insert(args.end(), {"--bind", "ipc://" + tmp_.File("broker"), "--metrics", "127.0.0.1:0"});
    auto p = tu::Process::Start(tu::BinPath("switchboard-broker"), {.args = args, .output = log_});
    ASSERT_TRUE(p.ok()) << p.status().message();
    broker_.emplace(std::move(p).value());
  }
  // Waits for the broker's log to say where the peer socket and the
  // metrics are.
  void WaitServing() {
    static const std::regex kPeer(R"(peer socket on (tcp://\S+))");
    static const std::regex kMetrics(R"(metrics on 127\.0\.0\.1:(\d+))");
    std::smatch peer, metrics;
    std::string log;
    ASSERT_TRUE(tu::WaitUntil(
        [&] {
          log = tu::ReadFile(log_);
          return std::regex_search(log, peer, kPeer) && std::regex_search(log, metrics, kMetrics);
        },
        kDeadline))
        << log;
    peer_endpoint_ = peer[1];
    metrics_port_ = std::stoi(metrics[1]);
  }

  // A DEALER with `keys`, monitored, connected to the peer socket; the
  // first handshake event it sees (succeeded, or failed and why). Closed
  // on return unless `keep`.
  int Handshake(const curve::Keypair& keys, bool keep = false) {
    zmq::socket_t dealer(ctx_, zmq::socket_type::dealer);
    dealer.set(zmq::sockopt::linger, 0);
    dealer.set(zmq::sockopt::curve_publickey, keys.public_key);
    dealer.set(zmq::sockopt::curve_secretkey, keys.secret_key);
    dealer.set(zmq::sockopt::curve_serverkey, node_.public_key);
    const int events = ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                       ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL;
    const std::string monitor_ep = "inproc://peer-monitor-" + std::to_string(++dealers_);
    EXPECT_EQ(zmq_socket_monitor(dealer.handle(), monitor_ep.c_str(), events), 0);
    zmq::socket_t monitor(ctx_, zmq::socket_type::pair);
    monitor.connect(monitor_ep);
    dealer.connect(peer_endpoint_);
    int got = 0;
    zmq::pollitem_t item{monitor.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, std::chrono::milliseconds(kDeadline)) > 0) {
      zmq::message_t event, endpoint;
      if (monitor.recv(event) && event.more()) (void)monitor.recv(endpoint);
      uint16_t id = 0;
      if (event.size() >= 2) std::memcpy(&id, event.data(), sizeof id);
      got = id;
    }
    if (got == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
      EXPECT_TRUE(dealer.send(zmq::str_buffer("hello, peer"), zmq::send_flags::none));
    }
    (void)zmq_socket_monitor(dealer.handle(), nullptr, 0);
    if (keep) kept_.push_back(std::move(dealer));
    return got;
  }

  double Metric(std::string_view name, const std::map<std::string, std::string>& labels) {
    return tu::Sample(tu::Scrape(metrics_port_), name, labels).value_or(-1);
  }

  int WaitExitCode() {
    int status = 0;
    EXPECT_TRUE(broker_->WaitExit(kDeadline, &status));
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  tu::TempDir tmp_;
  std::string key_file_, log_, peer_endpoint_;
  int metrics_port_ = 0, dealers_ = 0, starts_ = 0;
  curve::Keypair node_, member_;
  std::optional<tu::Process> broker_;
  zmq::context_t ctx_;
  std::vector<zmq::socket_t> kept_;  // after ctx_: closed before it
};

TEST_F(PeerSocketTest, AMemberKeyGetsInAnUnknownKeyIsRefusedAndCounted) {
  Start({"--peer-bind", "tcp://127.0.0.1:0", "--curve-secret-file", key_file_, "--peer-key",
         "node2=" + member_.public_key});
  WaitServing();
  EXPECT_NE(tu::ReadFile(log_).find("CURVE, members only"), std::string::npos);
  const std::map<std::string, std::string> unknown = {{"reason", "unknown_key"}};
  EXPECT_EQ(Metric("switchboard_broker_peer_auth_failures_total", unknown), 0);

  EXPECT_EQ(Metric("switchboard_broker_peer_connections", {}), 0);

  EXPECT_EQ(Handshake(member_, /*keep=*/true), ZMQ_EVENT_HANDSHAKE_SUCCEEDED);
  // What a member sends is read and dropped for now, and counted.
  EXPECT_TRUE(tu::WaitUntil(
      [&] {
        return Metric("switchboard_broker_peer_messages_total", {{"result", "unhandled"}}) == 1;
      },
      kDeadline));
  EXPECT_EQ(Metric("switchboard_broker_peer_connections", {}), 1);

  EXPECT_EQ(Handshake(curve::Generate().value()), ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
  EXPECT_EQ(Metric("switchboard_broker_peer_auth_failures_total", unknown), 1);
  EXPECT_EQ(Handshake(member_), ZMQ_EVENT_HANDSHAKE_SUCCEEDED) << "and it goes on admitting";
  // The refused and the closed connections are gone; the kept one is open.
  EXPECT_TRUE(tu::WaitUntil(
      [&] {
        return Metric("switchboard_broker_peer_connections", {}) == 1 &&
               Metric("switchboard_broker_peer_messages_total", {{"result", "unhandled"}}) == 2;
      },
      kDeadline));
  kept_.clear();
  EXPECT_TRUE(tu::WaitUntil([&] { return Metric("switchboard_broker_peer_connections", {}) == 0; },
                            kDeadline));
  EXPECT_TRUE(broker_->Running());
}

TEST_F(PeerSocketTest, ANonLoopbackBindWithoutAKeyIsRefusedUnlessInsecure) {
  Start({"--peer-bind", "tcp://0.0.0.0:0"});
  EXPECT_EQ(WaitExitCode(), 2);
  const std::string log = tu::ReadFile(log_);
  EXPECT_NE(log.find("--peer-bind"), std::string::npos) << log;
  EXPECT_NE(log.find("--curve-secret-file"), std::string::npos) << log;
  EXPECT_EQ(log.find("peer socket on"), std::string::npos) << "nothing was bound";

  Start({"--peer-bind", "tcp://0.0.0.0:0", "--insecure"});
  WaitServing();
  EXPECT_NE(tu::ReadFile(log_).find("plain text, anyone"), std::string::npos);
  EXPECT_TRUE(broker_->Running());
}

TEST_F(PeerSocketTest, BadPeerFlagsAreUsageErrorsNamingTheFlag) {
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{"--peer-bind", "ipc:///tmp/peer"}, "--peer-bind"},
      {{"--peer-bind", "tcp://127.0.0.1:0", "--curve-secret-file", key_file_, "--peer-key",
        "node2=short"},
       "--peer-key"},
      {{"--peer-bind", "tcp://127.0.0.1:0", "--curve-secret-file", tmp_.File("missing")},
       "--curve-secret-file"},
      {{"--curve-secret-file", key_file_}, "--peer-bind"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.args[1]);
    Start(c.args);
    EXPECT_EQ(WaitExitCode(), 2);
    EXPECT_NE(tu::ReadFile(log_).find(c.says), std::string::npos) << tu::ReadFile(log_);
  }
}

}  // namespace
}  // namespace sb
