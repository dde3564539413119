// Gateway: a socket handed over to a new process (docs/UPGRADE.md). The old
// gateway's export, through the state's encoding, adopted by another gateway
// on its own loop, goes on where the old one stopped: the frame cut between
// reads completes there, the queued frame is written once, and the old one
// neither closes the socket nor writes to it again.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/event_loop.h"
#include "common/tcp_listen.h"
#include "protocol/websocket.h"
#include "worker/gateway.h"
#include "worker/handoff_state.h"
#include "worker/worker_metrics.h"

namespace sb::worker {
namespace {

class FakeListener : public Gateway::Listener {
 public:
  void OnOpen(ConnId, std::optional<Identity>) override { ++opened; }
  void OnMessage(ConnId conn, bool, std::string_view payload) override {
    messages.push_back(std::to_string(conn) + " " + std::string(payload));
  }
  void OnClosed(ConnId) override { ++closed; }
  void OnApiRequest(ConnId, ApiRequest) override {}
  int opened = 0;
  int closed = 0;
  std::vector<std::string> messages;
};

// One process's side: a loop, a listening socket, a gateway.
struct Side {
  Side() : metrics("s0") {
    loop = std::move(EventLoop::Create()).value();
    listen = std::move(ListenTcp("127.0.0.1", 0, 16)).value();
    gateway = std::move(Gateway::Create(loop.get(), listen.get(), {}, &listener, &metrics)).value();
  }
  // Runs the loop until `done` or a second has passed.
  template <typename F>
  bool RunUntil(F done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      loop->RunOnce(std::chrono::milliseconds(10));
    }
    return done();
  }
  std::unique_ptr<EventLoop> loop;
  UniqueFd listen;
  FakeListener listener;
  WorkerMetrics metrics;
  std::unique_ptr<Gateway> gateway;
};

std::string ClientText(std::string_view payload) {
  std::string out;
  ws::AppendClientFrame(out, ws::Opcode::kText, payload, 0x12345678);
  return out;
}

std::string ServerText(std::string_view payload) {
  std::string out;
  ws::AppendFrameHeader(out, ws::Opcode::kText, payload.size());
  out += payload;
  return out;
}

void WriteAll(int fd, std::string_view bytes) {
  ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
}

// What the client can read now (non-blocking).
std::string ReadNow(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n <= 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

TEST(GatewayHandoffTest, AnAdoptedSocketGoesOnWhereTheOldGatewayStopped) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd client(pair[0]);
  Side old_side, new_side;

  handoff::Connection first;
  first.address = std::string(16, '\x01');
  first.last_rx_ms = 1;
  Result<ConnId> old_id = old_side.gateway->Adopt(UniqueFd(pair[1]), first);
  ASSERT_TRUE(old_id.ok()) << old_id.status().message();
  EXPECT_EQ(old_side.gateway->connections(), 1u);
  EXPECT_EQ(old_side.gateway->OpenConnections(), std::vector<ConnId>{*old_id});

  // One whole message and the start of the next, cut inside its frame.
  const std::string second = ClientText("two, a longer message");
  WriteAll(client.get(), ClientText("one") + second.substr(0, 9));
  ASSERT_TRUE(old_side.RunUntil([&] { return old_side.listener.messages.size() == 1; }));
  EXPECT_EQ(old_side.listener.messages[0], std::to_string(*old_id) + " one");
  old_side.gateway->Send(*old_id, false, "queued");  // not written yet

  handoff::Connection exported;
  const int fd = old_side.gateway->ExportConnection(*old_id, &exported);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(exported.id, *old_id);
  EXPECT_EQ(exported.address, first.address);
  EXPECT_EQ(exported.parser_tail, second.substr(0, 9));
  ASSERT_EQ(exported.outbound.size(), 1u);
  EXPECT_EQ(exported.outbound[0].bytes, ServerText("queued"));
  EXPECT_GT(exported.last_rx_ms, 1);
  Result<std::string> record = handoff::EncodeChunk(std::span(&exported, 1));
  ASSERT_TRUE(record.ok());
  Result<std::vector<handoff::Connection>> decoded = handoff::DecodeChunk(record.value(), 1);
  ASSERT_TRUE(decoded.ok());

  Result<ConnId> new_id = new_side.gateway->Adopt(UniqueFd(::dup(fd)), decoded.value()[0]);
  ASSERT_TRUE(new_id.ok()) << new_id.status().message();
  old_side.gateway->Release(*old_id);
  EXPECT_EQ(old_side.gateway->connections(), 0u);
  old_side.gateway->FlushAll();
  EXPECT_EQ(ReadNow(client.get()), "") << "the old gateway writes nothing more";

  handoff::Connection again;
  ASSERT_GE(new_side.gateway->ExportConnection(*new_id, &again), 0);
  again.id = exported.id;
  EXPECT_EQ(again, exported);

  new_side.gateway->FlushAll();
  EXPECT_EQ(ReadNow(client.get()), ServerText("queued"));
  WriteAll(client.get(), second.substr(9));
  ASSERT_TRUE(new_side.RunUntil([&] { return new_side.listener.messages.size() == 1; }));
  EXPECT_EQ(new_side.listener.messages[0], std::to_string(*new_id) + " two, a longer message");
  new_side.gateway->Send(*new_id, false, "reply");
  new_side.gateway->FlushAll();
  EXPECT_EQ(ReadNow(client.get()), ServerText("reply"));

  EXPECT_EQ(old_side.listener.messages.size(), 1u);
  EXPECT_EQ(old_side.listener.closed, 0);
  EXPECT_EQ(new_side.listener.closed, 0);
  EXPECT_EQ(old_side.listener.opened + new_side.listener.opened, 0);
}

TEST(GatewayHandoffTest, LeftoversThisGatewayCouldNotHaveLeftAreRefused) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd client(pair[0]);
  Side side;
  handoff::Connection bad;
  bad.parser_message = std::string((1 << 20) + 1, 'x');  // over --max-frame
  bad.in_message = true;
  EXPECT_FALSE(side.gateway->Adopt(UniqueFd(pair[1]), bad).ok());
  EXPECT_EQ(side.gateway->connections(), 0u);
  EXPECT_TRUE(side.gateway->OpenConnections().empty());
  // Its fd was closed: the client sees the end.
  char c;
  EXPECT_EQ(::read(client.get(), &c, 1), 0);
}

TEST(GatewayHandoffTest, AGatewayThatStoppedAcceptingLeavesConnectionsInTheBacklog) {
  Side side;
  side.gateway->StopAccepting();
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(side.listen.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
  UniqueFd client(::socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_EQ(::connect(client.get(), reinterpret_cast<sockaddr*>(&addr), len), 0);
  // Completed by the kernel, and still there for whoever accepts next.
  for (int i = 0; i < 5; ++i) side.loop->RunOnce(std::chrono::milliseconds(10));
  EXPECT_EQ(side.gateway->connections(), 0u);
  UniqueFd accepted(::accept4(side.listen.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
  EXPECT_TRUE(accepted.valid());
}

}  // namespace
}  // namespace sb::worker
