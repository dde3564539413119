// ZmqSocket: a real DEALER/ROUTER pair over ipc in a temporary directory:
// multipart messages both ways, "would block" and "no such peer" as values,
// the loop-driven reader (Watch, CheckReadable), and CURVE with the ZAP
// handler (ServeZap).

#include "common/zmq_socket.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/curve.h"
#include "common/testing/run_loop.h"
#include "common/unique_fd.h"
#include "common/zap_policy.h"

namespace sb {
namespace {

using std::chrono::milliseconds;

constexpr auto kDeadline = std::chrono::seconds(5);

using Frames = std::vector<std::string>;

Frames Copy(std::span<const std::string_view> frames) {
  return Frames(frames.begin(), frames.end());
}

bool Send(ZmqSocket& s, const std::vector<std::string_view>& frames) { return s.Send(frames); }

class ZmqSocketTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sb-zmq-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    endpoint_ = "ipc://" + dir_ + "/router";
    auto loop = EventLoop::Create();
    ASSERT_TRUE(loop.ok()) << loop.status().message();
    loop_ = std::move(loop).value();
    auto router = ZmqSocket::Create({.kind = ZmqSocket::Kind::kRouter});
    ASSERT_TRUE(router.ok()) << router.status().message();
    router_ = std::move(router).value();
    ASSERT_TRUE(router_->Bind(endpoint_).ok());
    auto dealer = ZmqSocket::Create({.kind = ZmqSocket::Kind::kDealer});
    ASSERT_TRUE(dealer.ok()) << dealer.status().message();
    dealer_ = std::move(dealer).value();
    ASSERT_TRUE(dealer_->Connect(endpoint_).ok());
  }
  void TearDown() override {
    dealer_.reset();
    router_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // Waits (bounded) until `cond` holds, for `s`'s fd to signal between checks.
  static bool WaitFor(const ZmqSocket& s, const std::function<bool()>& cond) {
    const MonoTime until = MonoNow() + kDeadline;
    while (!cond()) {
      if (MonoNow() >= until) return false;
      pollfd p{s.fd(), POLLIN, 0};
      ::poll(&p, 1, 10);
    }
    return true;
  }

  // Receives one message on `s` (bounded wait); empty if none came.
  static Frames RecvOne(ZmqSocket& s) {
    std::vector<std::string_view> frames;
    Frames out;
    WaitFor(s, [&] {
      if (s.Recv(&frames) != ZmqSocket::RecvResult::kMessage) return false;
      out = Copy(frames);
      return true;
    });
    return out;
  }

  // Sends from the dealer once its connection is complete: an immediate
  // DEALER refuses to queue before that.
  bool DealerSend(const std::vector<std::string_view>& frames) {
    return WaitFor(*dealer_, [&] { return Send(*dealer_, frames); });
  }

  bool RunUntil(const std::function<bool()>& cond) { return testing::RunLoopUntil(*loop_, cond); }

  std::string dir_, endpoint_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<ZmqSocket> router_, dealer_;
};

TEST_F(ZmqSocketTest, MultipartMessagesTravelWholeBothWays) {
  const std::string big(100 * 1024, 'b');  // past libzmq's inline size for small messages
  ASSERT_TRUE(DealerSend({"first", "", big, "last"}));
  Frames got = RecvOne(*router_);
  // A ROUTER puts the sender's routing id first.
  ASSERT_EQ(got.size(), 5u);
  EXPECT_FALSE(got[0].empty());
  EXPECT_EQ(got[1], "first");
  EXPECT_EQ(got[2], "");
  EXPECT_EQ(got[3], big);
  EXPECT_EQ(got[4], "last");

  const std::string id = got[0];
  ASSERT_TRUE(Send(*router_, {id, "reply", "two"}));
  EXPECT_EQ(RecvOne(*dealer_), (Frames{"reply", "two"}));
}

TEST_F(ZmqSocketTest, ReceivedViewsStayValidUntilTheNextRecv) {
  // Small frames are stored inside zmq_msg_t itself; the views must point
  // at the messages where they ended up, not where they were first read.
  std::vector<std::string_view> parts;
  std::vector<std::string> expected;
  for (int i = 0; i < 40; ++i) expected.push_back("part" + std::to_string(i));
  for (const std::string& e : expected) parts.push_back(e);
  ASSERT_TRUE(DealerSend(parts));
  std::vector<std::string_view> frames;
  ASSERT_TRUE(
      WaitFor(*router_, [&] { return router_->Recv(&frames) == ZmqSocket::RecvResult::kMessage; }));
  ASSERT_EQ(frames.size(), expected.size() + 1);
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(frames[i + 1], expected[i]);
}

TEST_F(ZmqSocketTest, NothingToReadIsWouldBlockAndClearsTheFrames) {
  std::vector<std::string_view> frames = {"stale"};
  EXPECT_EQ(router_->Recv(&frames), ZmqSocket::RecvResult::kWouldBlock);
  EXPECT_TRUE(frames.empty());
  EXPECT_EQ(dealer_->Recv(&frames), ZmqSocket::RecvResult::kWouldBlock);
  EXPECT_FALSE(router_->Readable());
}

TEST_F(ZmqSocketTest, SendingToAnUnknownPeerIsFalseNotAnException) {
  EXPECT_FALSE(Send(*router_, {"no-such-peer", "x"}));
}

TEST_F(ZmqSocketTest, ADealerWithNoConnectionRefusesToQueue) {
  auto lonely = ZmqSocket::Create({.kind = ZmqSocket::Kind::kDealer});
  ASSERT_TRUE(lonely.ok());
  EXPECT_FALSE(Send(*lonely.value(), {"x"}));  // not connected at all
  ASSERT_TRUE(lonely.value()->Connect("ipc://" + dir_ + "/nobody").ok());
  EXPECT_FALSE(Send(*lonely.value(), {"x"}));  // connected to nobody
}

TEST_F(ZmqSocketTest, BadEndpointsAreErrorsNamingThem) {
  auto s = ZmqSocket::Create({.kind = ZmqSocket::Kind::kRouter});
  ASSERT_TRUE(s.ok());
  Status bind = s.value()->Bind("nonsense://x");
  EXPECT_EQ(bind.code(), Status::Code::kIoError);
  EXPECT_EQ(bind.message().rfind("bind nonsense://x: ", 0), 0u) << bind.message();
  Status connect = s.value()->Connect("tcp://");
  EXPECT_EQ(connect.code(), Status::Code::kIoError);
  EXPECT_EQ(connect.message().rfind("connect tcp://: ", 0), 0u) << connect.message();
  // A TCP port another socket holds.
  auto holder = ZmqSocket::Create({.kind = ZmqSocket::Kind::kRouter});
  ASSERT_TRUE(holder.ok());
  ASSERT_TRUE(holder.value()->Bind("tcp://127.0.0.1:0").ok());
  const std::string taken = holder.value()->LastEndpoint();
  Status in_use = s.value()->Bind(taken);
  EXPECT_EQ(in_use.code(), Status::Code::kIoError);
  EXPECT_EQ(in_use.message().rfind("bind " + taken + ": ", 0), 0u) << in_use.message();
}

TEST_F(ZmqSocketTest, LastEndpointNamesThePortChosen) {
  auto s = ZmqSocket::Create({.kind = ZmqSocket::Kind::kRouter});
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE(s.value()->Bind("tcp://127.0.0.1:0").ok());
  const std::string ep = s.value()->LastEndpoint();
  ASSERT_EQ(ep.rfind("tcp://127.0.0.1:", 0), 0u) << ep;
  EXPECT_GT(std::stoi(ep.substr(ep.rfind(':') + 1)), 0) << ep;
  EXPECT_EQ(router_->LastEndpoint(), endpoint_);
}

TEST_F(ZmqSocketTest, WatchDeliversEveryMessageInOrderThroughTheLoop) {
  std::vector<Frames> got;
  ASSERT_TRUE(
      router_
          ->Watch(loop_.get(), 2,
                  [&](std::span<const std::string_view> frames) { got.push_back(Copy(frames)); })
          .ok());
  std::vector<std::string> bodies;
  for (int i = 0; i < 7; ++i) bodies.push_back("m" + std::to_string(i));
  ASSERT_TRUE(DealerSend({bodies[0]}));
  for (int i = 1; i < 7; ++i) ASSERT_TRUE(Send(*dealer_, {bodies[i]}));
  ASSERT_TRUE(RunUntil([&] { return got.size() == 7; })) << got.size();
  for (int i = 0; i < 7; ++i) {
    ASSERT_EQ(got[i].size(), 2u);
    EXPECT_EQ(got[i][1], bodies[i]);
  }
}

TEST_F(ZmqSocketTest, WatchReadsAtMostABatchPerWakeUp) {
  constexpr int kMessages = 50;
  ASSERT_TRUE(DealerSend({"m"}));
  for (int i = 1; i < kMessages; ++i) ASSERT_TRUE(Send(*dealer_, {"m"}));
  ASSERT_TRUE(Send(*dealer_, {"end"}));
  ASSERT_TRUE(WaitFor(*router_, [&] { return router_->Readable(); }));

  int delivered = 0, this_turn = 0, max_per_turn = 0;
  bool end = false;
  loop_->SetBeforeSleep([&] {
    max_per_turn = std::max(max_per_turn, this_turn);
    this_turn = 0;
  });
  ASSERT_TRUE(router_
                  ->Watch(loop_.get(), 3,
                          [&](std::span<const std::string_view> f) {
                            ++this_turn;
                            if (f.back() == "end") {
                              end = true;
                            } else {
                              ++delivered;
                            }
                          })
                  .ok());
  // Readable() may have consumed the fd's notification; CheckReadable
  // schedules the read either way.
  router_->CheckReadable();
  ASSERT_TRUE(RunUntil([&] { return end; }));
  EXPECT_EQ(delivered, kMessages);
  // A turn reads one batch on the wake-up and at most one more from the
  // zero timer that batch left; the rest waits for later turns.
  loop_->RunOnce(milliseconds(0));
  EXPECT_GT(max_per_turn, 0);
  EXPECT_LE(max_per_turn, 2 * 3);
}

TEST_F(ZmqSocketTest, CheckReadablePicksUpAnArrivalWhoseWakeUpWasConsumed) {
  std::vector<Frames> got;
  ASSERT_TRUE(
      router_
          ->Watch(loop_.get(), 16,
                  [&](std::span<const std::string_view> frames) { got.push_back(Copy(frames)); })
          .ok());
  ASSERT_TRUE(DealerSend({"hello"}));
  ASSERT_TRUE(RunUntil([&] { return got.size() == 1; }));
  const std::string id = got[0][0];

  // An arrival, then a send on the same socket before the loop looks: the
  // send processes libzmq's pending commands and with them the fd's only
  // notification of the arrival.
  ASSERT_TRUE(Send(*dealer_, {"second"}));
  ASSERT_TRUE(WaitFor(*router_, [&] { return router_->Readable(); }));
  ASSERT_TRUE(Send(*router_, {id, "ack"}));
  pollfd p{router_->fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 0), 0) << "the fd still signals; this test shows nothing";

  router_->CheckReadable();
  loop_->RunOnce(milliseconds(0));
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1][1], "second");
  EXPECT_EQ(RecvOne(*dealer_), (Frames{"ack"}));
}

TEST_F(ZmqSocketTest, DestroyingAWatchedSocketLeavesTheLoopClean) {
  int calls = 0;
  ASSERT_TRUE(
      router_->Watch(loop_.get(), 1, [&](std::span<const std::string_view>) { ++calls; }).ok());
  ASSERT_TRUE(DealerSend({"a"}));
  ASSERT_TRUE(Send(*dealer_, {"b"}));
  ASSERT_TRUE(Send(*dealer_, {"c"}));
  ASSERT_TRUE(RunUntil([&] { return calls >= 1; }));
  // With a batch of 1, a zero timer is pending for what is left; neither it
  // nor the fd may call into the destroyed socket.
  router_.reset();
  const int before = calls;
  for (int i = 0; i < 3; ++i) loop_->RunOnce(milliseconds(0));
  EXPECT_EQ(calls, before);
}

TEST_F(ZmqSocketTest, MonitorReportsEachConnectionAndASendFromTheReportGoesOverIt) {
  // A dealer of its own, monitored before it connects; the router restarts
  // under it (a new socket on the same endpoint), as a broker does.
  auto made = ZmqSocket::Create(
      {.kind = ZmqSocket::Kind::kDealer, .reconnect_ivl_ms = 2, .reconnect_ivl_max_ms = 2});
  ASSERT_TRUE(made.ok()) << made.status().message();
  std::unique_ptr<ZmqSocket> dealer = std::move(made).value();
  std::vector<std::string> seen;
  int ups = 0;
  ASSERT_TRUE(dealer
                  ->Watch(loop_.get(), 16,
                          [&](std::span<const std::string_view> f) {
                            seen.push_back("message " + std::string(f.back()));
                          })
                  .ok());
  ASSERT_TRUE(dealer
                  ->Monitor(loop_.get(),
                            [&] {
                              seen.push_back("up");
                              // An immediate DEALER refuses to queue without a
                              // connection: this send goes only if it has one.
                              const std::string n = std::to_string(++ups);
                              if (!Send(*dealer, {"hi " + n})) seen.push_back("send failed");
                            })
                  .ok());
  ASSERT_TRUE(dealer->Connect(endpoint_).ok());
  for (int round = 1; round <= 2; ++round) {
    SCOPED_TRACE(round);
    ASSERT_TRUE(RunUntil([&] { return ups == round; }));
    Frames hi = RecvOne(*router_);
    ASSERT_EQ(hi.size(), 2u);
    EXPECT_EQ(hi[1], "hi " + std::to_string(round));
    ASSERT_TRUE(Send(*router_, {hi[0], "welcome " + std::to_string(round)}));
    ASSERT_TRUE(
        RunUntil([&] { return seen.back() == "message welcome " + std::to_string(round); }));
    if (round == 1) {
      router_.reset();
      auto again = ZmqSocket::Create({.kind = ZmqSocket::Kind::kRouter});
      ASSERT_TRUE(again.ok());
      router_ = std::move(again).value();
      ASSERT_TRUE(router_->Bind(endpoint_).ok());
    }
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"up", "message welcome 1", "up", "message welcome 2"}));
  // Destroyed with the monitor still registered: the loop is left clean.
  dealer.reset();
  for (int i = 0; i < 3; ++i) loop_->RunOnce(milliseconds(0));
}

// A CURVE server on its own loop and clients with keys of their own: who
// completes the handshake, with the ZAP handler and without one.
class ZmqCurveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto loop = EventLoop::Create();
    ASSERT_TRUE(loop.ok());
    loop_ = std::move(loop).value();
    auto server_keys = curve::Generate();
    ASSERT_TRUE(server_keys.ok()) << server_keys.status().message();
    server_keys_ = server_keys.value();
    auto server = ZmqSocket::Create({.kind = ZmqSocket::Kind::kRouter,
                                     .curve_server = true,
                                     .curve_secret_key = server_keys_.secret_key,
                                     .zap_domain = "peer"});
    ASSERT_TRUE(server.ok()) << server.status().message();
    server_ = std::move(server).value();
  }
  void Serve() {
    ASSERT_TRUE(server_->Bind("tcp://127.0.0.1:0").ok());
    ASSERT_TRUE(server_
                    ->Watch(loop_.get(), 16,
                            [&](std::span<const std::string_view> f) {
                              received_.push_back(std::string(f.back()));
                              user_ids_.push_back(server_->Property("User-Id"));
                            })
                    .ok());
  }
  std::unique_ptr<ZmqSocket> Client(const curve::Keypair& keys) {
    auto c = ZmqSocket::Create({.kind = ZmqSocket::Kind::kDealer,
                                .curve_secret_key = keys.secret_key,
                                .curve_public_key = keys.public_key,
                                .curve_server_key = server_keys_.public_key});
    EXPECT_TRUE(c.ok()) << c.status().message();
    if (!c.ok()) return nullptr;
    EXPECT_TRUE(c.value()->Connect(server_->LastEndpoint()).ok());
    return std::move(c).value();
  }
  // Sends `text` from `client` once its handshake is done (an immediate
  // DEALER refuses to queue before), turning the loop meanwhile.
  bool SendWhenConnected(ZmqSocket& client, const std::string& text) {
    return testing::RunLoopUntil(*loop_, [&] { return Send(client, {text}); });
  }
  std::unique_ptr<EventLoop> loop_;
  curve::Keypair server_keys_;
  std::unique_ptr<ZmqSocket> server_;
  std::vector<std::string> received_;
  std::vector<std::string> user_ids_;  // each received message's "User-Id"
};

TEST_F(ZmqCurveTest, TheZapHandlerAdmitsMembersAndRefusesAnUnknownKey) {
  ZapPolicy policy;
  auto member = curve::Generate().value(), stranger = curve::Generate().value();
  ASSERT_TRUE(policy.Admit("node2", member.public_key).ok());
  std::vector<std::string> domains;
  ASSERT_TRUE(server_
                  ->ServeZap(loop_.get(),
                             [&](std::span<const std::string_view> request) {
                               if (request.size() > 2) domains.emplace_back(request[2]);
                               return policy.Decide(request);
                             })
                  .ok());
  Serve();
  std::unique_ptr<ZmqSocket> bad = Client(stranger);
  ASSERT_TRUE(testing::RunLoopUntil(
      *loop_, [&] { return policy.refused(ZapPolicy::Refusal::kUnknownKey) >= 1; }));
  std::unique_ptr<ZmqSocket> good = Client(member);
  ASSERT_TRUE(SendWhenConnected(*good, "from the member"));
  ASSERT_TRUE(testing::RunLoopUntil(*loop_, [&] { return !received_.empty(); }));
  EXPECT_EQ(received_, std::vector<std::string>{"from the member"});
  EXPECT_EQ(user_ids_, std::vector<std::string>{"node2"}) << "the name the handler admitted";
  EXPECT_FALSE(Send(*bad, {"from the stranger"})) << "its handshake never completed";
  EXPECT_EQ(policy.admitted(), 1u);
  ASSERT_FALSE(domains.empty());
  EXPECT_EQ(domains.front(), "peer");
  // Destroyed with the handler registered: the loop is left clean.
  server_.reset();
  for (int i = 0; i < 3; ++i) loop_->RunOnce(milliseconds(0));
}

TEST_F(ZmqCurveTest, WithoutAZapHandlerAnyKeyThatKnowsTheServerGetsIn) {
  // Why the broker serves ZAP: libzmq encrypts, but admits any client.
  Serve();
  std::unique_ptr<ZmqSocket> anyone = Client(curve::Generate().value());
  ASSERT_TRUE(SendWhenConnected(*anyone, "from anyone"));
  ASSERT_TRUE(testing::RunLoopUntil(*loop_, [&] { return !received_.empty(); }));
  EXPECT_EQ(received_, std::vector<std::string>{"from anyone"});
}

TEST_F(ZmqCurveTest, MonitorConnectionsCountsWhatIsOpenRefusalsIncluded) {
  ZapPolicy policy;
  auto member = curve::Generate().value();
  ASSERT_TRUE(policy.Admit("node2", member.public_key).ok());
  ASSERT_TRUE(server_
                  ->ServeZap(loop_.get(),
                             [&](std::span<const std::string_view> r) { return policy.Decide(r); })
                  .ok());
  int succeeded = 0, failed = 0, disconnected = 0;
  ASSERT_TRUE(server_
                  ->MonitorConnections(loop_.get(),
                                       [&](ZmqSocket::ConnectionEvent e) {
                                         switch (e) {
                                           case ZmqSocket::ConnectionEvent::kHandshakeSucceeded:
                                             ++succeeded;
                                             break;
                                           case ZmqSocket::ConnectionEvent::kHandshakeFailed:
                                             ++failed;
                                             break;
                                           case ZmqSocket::ConnectionEvent::kDisconnected:
                                             ++disconnected;
                                             break;
                                         }
                                       })
                  .ok());
  Serve();
  auto open = [&] { return succeeded + failed - disconnected; };
  std::unique_ptr<ZmqSocket> good = Client(member);
  ASSERT_TRUE(SendWhenConnected(*good, "from the member"));
  ASSERT_TRUE(testing::RunLoopUntil(*loop_, [&] { return succeeded == 1 && open() == 1; }));
  {
    std::unique_ptr<ZmqSocket> bad = Client(curve::Generate().value());
    ASSERT_TRUE(testing::RunLoopUntil(*loop_, [&] { return failed >= 1; }));
  }
  ASSERT_TRUE(testing::RunLoopUntil(*loop_, [&] { return open() == 1 && disconnected >= 1; }))
      << "the refused connection is reported closed as well";
  // A connection that closes before it speaks ZMTP: failed in its
  // handshake, and closed.
  const std::string ep = server_->LastEndpoint();
  const int port = std::stoi(ep.substr(ep.rfind(':') + 1));
  const int before = disconnected;
  {
    UniqueFd raw(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(raw.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  }
  ASSERT_TRUE(testing::RunLoopUntil(*loop_, [&] { return disconnected > before; }));
  EXPECT_EQ(open(), 1);
  EXPECT_EQ(succeeded, 1);
  good.reset();
  ASSERT_TRUE(testing::RunLoopUntil(*loop_, [&] { return open() == 0; }));
}

TEST_F(ZmqCurveTest, AnInvalidKeyFailsCreate) {
  EXPECT_FALSE(
      ZmqSocket::Create(
          {.kind = ZmqSocket::Kind::kRouter, .curve_server = true, .curve_secret_key = "short"})
          .ok());
}

}  // namespace
}  // namespace sb
