// Gateway: a socket handed over to a new process (docs/UPGRADE.md). The old
// gateway's export, through the state's encoding, adopted by another gateway
// on its own loop, goes on where the old one stopped: the frame cut between
// reads completes there, the queued frame is written once, and the old one
// neither closes the socket nor writes to it again. HTTP connections too: a
// request cut between reads completes there, an idle keep-alive connection
// takes its next request there, an answer being written ends as it would have.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/event_loop.h"
#include "common/tcp_listen.h"
#include "protocol/websocket.h"
#include "worker/gateway.h"
#include "worker/handoff_state.h"
#include "worker/http_api.h"
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
  void OnApiRequest(ConnId conn, ApiRequest request) override {
    api.emplace_back(conn, std::move(request));
  }
  int opened = 0;
  std::vector<std::pair<ConnId, ApiRequest>> api;
  int closed = 0;
  std::vector<std::string> messages;
};

// One process's side: a loop, a listening socket, a gateway.
struct Side {
  explicit Side(GatewayOptions options = {}) : metrics("s0") {
    loop = std::move(EventLoop::Create()).value();
    listen = std::move(ListenTcp("127.0.0.1", 0, 16)).value();
    // As main gives it: a listening socket that says EAGAIN when empty.
    ::fcntl(listen.get(), F_SETFL, ::fcntl(listen.get(), F_GETFL) | O_NONBLOCK);
    gateway = std::move(Gateway::Create(loop.get(), listen.get(), std::move(options), &listener,
                                        &metrics))
                  .value();
  }
  // A client connected to this side's listening socket, once accepted.
  UniqueFd Connect() {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    EXPECT_EQ(::getsockname(listen.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
    UniqueFd client(::socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    EXPECT_EQ(::connect(client.get(), reinterpret_cast<sockaddr*>(&addr), len), 0);
    const size_t before = gateway->connections();
    EXPECT_TRUE(RunUntil([&] { return gateway->connections() == before + 1; }));
    return client;
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
  // As the new process takes a socket: prepared, then adopted.
  Result<ConnId> Adopt(UniqueFd fd, const handoff::Connection& state) {
    if (Status s = Gateway::PrepareAdoption(*loop, fd.get()); !s.ok()) return s;
    return gateway->Adopt(std::move(fd), state);
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

GatewayOptions WithApi() {
  GatewayOptions o;
  o.api_key = "secret";
  return o;
}

constexpr std::string_view kAuth = "Authorization: Bearer secret\r\n";

// The state of the one connection `side` would hand over, through the
// state's encoding as the new process reads it; its fd (still the side's).
int ExportOne(Side& side, handoff::Connection* out) {
  const std::vector<ConnId> ids = side.gateway->HandoffConnections();
  EXPECT_EQ(ids.size(), 1u);
  if (ids.size() != 1) return -1;
  handoff::Connection exported;
  const int fd = side.gateway->ExportConnection(ids[0], &exported);
  Result<std::string> record = handoff::EncodeChunk(std::span(&exported, 1));
  EXPECT_TRUE(record.ok()) << record.status().message();
  if (!record.ok()) return -1;
  Result<std::vector<handoff::Connection>> decoded = handoff::DecodeChunk(record.value(), 1);
  EXPECT_TRUE(decoded.ok()) << decoded.status().message();
  if (!decoded.ok()) return -1;
  *out = decoded.value()[0];
  return fd;
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
  Result<ConnId> old_id = old_side.Adopt(UniqueFd(pair[1]), first);
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

  Result<ConnId> new_id = new_side.Adopt(UniqueFd(::dup(fd)), decoded.value()[0]);
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

// Reads until `bytes` have come or a second has passed.
std::string ReadAtLeast(int fd, size_t bytes) {
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  while (out.size() < bytes && std::chrono::steady_clock::now() < deadline) {
    out += ReadNow(fd);
  }
  return out;
}

// Whether the client sees the connection's end within `wait` (what comes
// before it is read and dropped).
bool SeesEof(int fd, std::chrono::milliseconds wait = std::chrono::seconds(1)) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  char buf[4096];
  do {
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0) return true;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return false;
  } while (std::chrono::steady_clock::now() < deadline);
  return false;
}

TEST(GatewayHandoffTest, AnHttpRequestCutBetweenReadsCompletesInTheNewProcess) {
  Side old_side(WithApi()), new_side(WithApi());
  UniqueFd client = old_side.Connect();
  const std::string body = R"({"topic":"room:1","event":"e","payload":{"n":1}})";
  const std::string head =
      "POST /api/publish HTTP/1.1\r\nHost: x\r\n" + std::string(kAuth) +
      "Expect: 100-continue\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  // The header and the body's start: the parser has taken both, the old
  // gateway has said 100 Continue.
  WriteAll(client.get(), head + body.substr(0, 10));
  const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
  std::string got;
  EXPECT_TRUE(old_side.RunUntil([&] {
    old_side.gateway->FlushAll();
    got += ReadNow(client.get());
    return got.size() >= kContinue.size();
  }));
  EXPECT_EQ(got, kContinue);

  handoff::Connection state;
  const int fd = ExportOne(old_side, &state);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(state.http.has_value());
  EXPECT_EQ(state.http->received, head + body.substr(0, 10)) << "from the request's first byte";
  EXPECT_EQ(state.http->end, handoff::HttpEnd::kKeepAlive);
  EXPECT_TRUE(state.http->continued);
  EXPECT_EQ(state.http->requests, 0u);
  EXPECT_GT(state.http->deadline_ms, state.last_rx_ms);
  EXPECT_TRUE(state.outbound.empty());
  EXPECT_TRUE(state.channels.empty());

  Result<ConnId> id = new_side.Adopt(UniqueFd(::dup(fd)), state);
  ASSERT_TRUE(id.ok()) << id.status().message();
  old_side.gateway->Release(old_side.gateway->HandoffConnections().at(0));
  EXPECT_EQ(old_side.gateway->connections(), 0u);
  EXPECT_EQ(new_side.gateway->connections(), 1u);

  WriteAll(client.get(), body.substr(10));
  ASSERT_TRUE(new_side.RunUntil([&] { return new_side.listener.api.size() == 1; }));
  EXPECT_EQ(new_side.listener.api[0].first, *id);
  EXPECT_EQ(new_side.listener.api[0].second.topics, std::vector<std::string>{"room:1"});
  EXPECT_EQ(new_side.listener.api[0].second.payload, R"({"n":1})");
  EXPECT_TRUE(old_side.listener.api.empty());
  new_side.gateway->RespondApi(*id, ApiEndpoint::kPublish, 200, R"({"ok":true})");
  new_side.gateway->FlushAll();
  const std::string answer = ApiResponse(200, R"({"ok":true})", true);
  EXPECT_EQ(ReadAtLeast(client.get(), answer.size()), answer) << "no second 100 Continue";
  EXPECT_EQ(new_side.gateway->connections(), 1u) << "keep-alive goes on";
}

TEST(GatewayHandoffTest, AnIdleKeepAliveConnectionTakesItsNextRequestInTheNewProcess) {
  GatewayOptions options = WithApi();
  options.max_api_requests_per_connection = 2;
  Side old_side(options), new_side(options);
  UniqueFd client = old_side.Connect();
  const std::string request =
      "GET /api/presence?topic=room:1 HTTP/1.1\r\nHost: x\r\n" + std::string(kAuth) + "\r\n";
  WriteAll(client.get(), request);
  ASSERT_TRUE(old_side.RunUntil([&] { return old_side.listener.api.size() == 1; }));
  // Its answer is with the listener: it does not move yet.
  EXPECT_TRUE(old_side.gateway->AnswersPending());
  EXPECT_TRUE(old_side.gateway->HandoffConnections().empty());
  handoff::Connection none;
  EXPECT_EQ(old_side.gateway->ExportConnection(old_side.listener.api[0].first, &none), -1);
  old_side.gateway->RespondApi(old_side.listener.api[0].first, ApiEndpoint::kPresence, 200, "{}");
  old_side.gateway->FlushAll();
  EXPECT_FALSE(old_side.gateway->AnswersPending());
  const std::string first = ApiResponse(200, "{}", true);
  EXPECT_EQ(ReadAtLeast(client.get(), first.size()), first);

  handoff::Connection state;
  const int fd = ExportOne(old_side, &state);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(state.http.has_value());
  EXPECT_EQ(state.http->received, "");
  EXPECT_EQ(state.http->requests, 1u);
  EXPECT_EQ(state.http->end, handoff::HttpEnd::kKeepAlive);
  Result<ConnId> id = new_side.Adopt(UniqueFd(::dup(fd)), state);
  ASSERT_TRUE(id.ok()) << id.status().message();
  old_side.gateway->Release(old_side.listener.api[0].first);
  EXPECT_EQ(old_side.gateway->connections(), 0u);

  WriteAll(client.get(), request);
  ASSERT_TRUE(new_side.RunUntil([&] { return new_side.listener.api.size() == 1; }));
  new_side.gateway->RespondApi(*id, ApiEndpoint::kPresence, 200, "{}");
  new_side.gateway->FlushAll();
  // Its second request, counted from the old process's first: the last.
  const std::string last = ApiResponse(200, "{}", false);
  EXPECT_EQ(ReadAtLeast(client.get(), last.size()), last);
  EXPECT_TRUE(SeesEof(client.get()));
  EXPECT_EQ(old_side.listener.api.size(), 1u);
}

TEST(GatewayHandoffTest, AWholeRequestAmongTheBytesIsAnsweredOnTheFirstTurn) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd client(pair[0]);
  Side side(WithApi());
  handoff::Connection state{.id = 9, .last_rx_ms = 1};
  state.http = handoff::HttpPhase{.received = "GET /api/presence?topic=a HTTP/1.1\r\nHost: x\r\n" +
                                              std::string(kAuth) +
                                              "\r\nGET /api/presence?topic=b HTTP/1.1\r\n",
                                  .requests = 3,
                                  .deadline_ms = INT64_MAX};
  Result<ConnId> id = side.Adopt(UniqueFd(pair[1]), state);
  ASSERT_TRUE(id.ok()) << id.status().message();
  EXPECT_TRUE(side.listener.api.empty()) << "not during the adoption";
  side.loop->RunOnce(std::chrono::milliseconds(0));
  ASSERT_EQ(side.listener.api.size(), 1u);
  EXPECT_EQ(side.listener.api[0].second.topics, std::vector<std::string>{"a"});
  side.gateway->RespondApi(*id, ApiEndpoint::kPresence, 200, "{}");
  // The next request, cut in its header, completes as if nothing happened.
  WriteAll(client.get(), "Host: x\r\n" + std::string(kAuth) + "\r\n");
  ASSERT_TRUE(side.RunUntil([&] { return side.listener.api.size() == 2; }));
  EXPECT_EQ(side.listener.api[1].second.topics, std::vector<std::string>{"b"});
}

TEST(GatewayHandoffTest, AnAnswerBeingWrittenEndsAsTheOldProcessWouldHaveEndedIt) {
  // The old process answered for the last time and half-closed: the new
  // one waits for the client's EOF, then lets go.
  Side old_side(WithApi()), new_side(WithApi());
  UniqueFd client = old_side.Connect();
  WriteAll(client.get(), "GET /api/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" +
                             std::string(kAuth) + "\r\n");
  ASSERT_TRUE(old_side.RunUntil([&] {
    old_side.gateway->FlushAll();
    return SeesEof(client.get(), std::chrono::milliseconds(0));
  }));
  handoff::Connection state;
  const int fd = ExportOne(old_side, &state);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(state.http.has_value());
  EXPECT_EQ(state.http->end, handoff::HttpEnd::kLingering);
  Result<ConnId> id = new_side.Adopt(UniqueFd(::dup(fd)), state);
  ASSERT_TRUE(id.ok()) << id.status().message();
  old_side.gateway->Release(old_side.gateway->HandoffConnections().at(0));
  EXPECT_EQ(new_side.gateway->connections(), 1u);
  client.Reset();
  EXPECT_TRUE(new_side.RunUntil([&] { return new_side.gateway->connections() == 0; }));

  // A queue not all written, then closed: the new process writes the rest.
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd other(pair[0]);
  const std::string answer = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok";
  handoff::Connection closing{
      .id = 3, .last_rx_ms = 1, .written = 9, .outbound = {{.kind = 3, .bytes = answer}}};
  closing.http = handoff::HttpPhase{.end = handoff::HttpEnd::kClose, .deadline_ms = INT64_MAX};
  ASSERT_TRUE(new_side.Adopt(UniqueFd(pair[1]), closing).ok());
  new_side.gateway->FlushAll();
  EXPECT_EQ(ReadAtLeast(other.get(), answer.size() - 9), answer.substr(9));
  EXPECT_TRUE(SeesEof(other.get()));
  EXPECT_EQ(new_side.gateway->connections(), 0u);
}

TEST(GatewayHandoffTest, LeftoversThisGatewayCouldNotHaveLeftAreRefused) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd client(pair[0]);
  Side side;
  handoff::Connection bad;
  bad.parser_message = std::string((1 << 20) + 1, 'x');  // over --max-frame
  bad.in_message = true;
  EXPECT_FALSE(side.Adopt(UniqueFd(pair[1]), bad).ok());
  EXPECT_EQ(side.gateway->connections(), 0u);
  EXPECT_TRUE(side.gateway->OpenConnections().empty());
  // Its fd was closed: the client sees the end.
  char c;
  EXPECT_EQ(::read(client.get(), &c, 1), 0);
}

// The fds an epoll instance of this process watches ("tfd:" lines in its
// /proc fdinfo): the process has one loop here, so one eventpoll fd.
int WatchedFds() {
  int watched = -1;
  for (int fd = 0; fd < 1024; ++fd) {
    char link[64] = {};
    const std::string path = "/proc/self/fd/" + std::to_string(fd);
    if (::readlink(path.c_str(), link, sizeof link - 1) <= 0) continue;
    if (std::string_view(link) != "anon_inode:[eventpoll]") continue;
    std::ifstream info("/proc/self/fdinfo/" + std::to_string(fd));
    watched = 0;
    for (std::string line; std::getline(info, line);) watched += line.starts_with("tfd:");
  }
  return watched;
}

TEST(GatewayHandoffTest, ARefusedSocketIsNoLongerWatchedWhileTheOldProcessHoldsIt) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd client(pair[0]);
  UniqueFd old_copy(pair[1]);  // as the old process holds it until it exits
  Side side;
  const int before = WatchedFds();
  ASSERT_GE(before, 0);
  const int fd = ::dup(old_copy.get());
  ASSERT_TRUE(Gateway::PrepareAdoption(*side.loop, fd).ok());
  EXPECT_EQ(WatchedFds(), before + 1);
  handoff::Connection bad;
  bad.parser_message = std::string((1 << 20) + 1, 'x');  // over --max-frame
  bad.in_message = true;
  EXPECT_FALSE(side.gateway->Adopt(UniqueFd(fd), bad).ok());
  // Closing the fd alone would not have dropped it: the open file lives on
  // in old_copy, and epoll would report it under a number reused later.
  EXPECT_EQ(WatchedFds(), before);
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
