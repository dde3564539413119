// Tests of the control socket: ControlServer on a real EventLoop with real unix sockets in a temp
// dir, ControlCall/FollowEvents against it, and the CLI's output and exit codes. The loop runs in
// the test thread (Pump); a blocking client runs in a std::thread only while the test thread
// pumps, and the two share nothing but the socket.
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <thread>

#include "common/event_loop.h"
#include "common/exit_codes.h"
#include "supervisor/control_cli.h"
#include "supervisor/control_client.h"
#include "supervisor/control_server.h"

namespace sb::supervisor {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

json::object Obj(std::string_view text) { return json::parse(text).as_object(); }

json::object Parse(std::string_view line) {
  json::error_code ec;
  json::value v = json::parse(line, ec);
  if (ec || !v.is_object()) return {};
  return v.get_object();
}

std::string Code(const json::object& reply) {
  const json::value* c = reply.if_contains("code");
  return c && c->is_string() ? std::string(c->get_string()) : "";
}

bool IsOk(const json::object& reply) {
  const json::value* ok = reply.if_contains("ok");
  return ok && ok->is_bool() && ok->get_bool();
}

// A blocking connect, then non-blocking: the test thread must never block on it.
UniqueFd RawConnect(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) return UniqueFd();
  ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) | O_NONBLOCK);
  return fd;
}

// Appends what is readable now. False once the peer has closed (or reset).
bool ReadSome(int fd, std::string& into) {
  char buf[65536];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      into.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return n < 0 && errno == EAGAIN;
  }
}

size_t CountLines(std::string_view s) {
  return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

class ControlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sb-control-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/node1.sock";
    auto loop = EventLoop::Create();
    ASSERT_TRUE(loop.ok());
    loop_ = std::move(loop.value());
  }
  void TearDown() override {
    server_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  void Start(ControlServer::Handler handler, ControlServerOptions options = {}) {
    auto s = ControlServer::Create(*loop_, path_, std::move(handler), options);
    ASSERT_TRUE(s.ok()) << s.status().message();
    server_ = std::move(s.value());
  }

  // A handler that answers {"ok":true,"echo":<request>} at once and counts calls.
  void StartEcho(ControlServerOptions options = {}) {
    Start(
        [this](const json::object& req, ControlServer::Reply reply) {
          ++handled_;
          json::object r;
          r["ok"] = true;
          r["echo"] = req;
          reply(std::move(r));
        },
        options);
  }

  // Runs the loop until cond holds; false after `limit`.
  bool Pump(const std::function<bool()>& cond, std::chrono::milliseconds limit = 5s) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (!cond()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      loop_->RunOnce(5ms);
    }
    return true;
  }

  // Runs a blocking client call in a thread while this thread runs the loop.
  template <typename F>
  auto WithLoop(F f) -> decltype(f()) {
    std::atomic<bool> done{false};
    std::optional<decltype(f())> result;
    std::thread t([&] {
      result.emplace(f());
      done = true;
    });
    bool finished = Pump([&] { return done.load(); }, 20s);
    t.join();
    EXPECT_TRUE(finished) << "client call did not finish";
    return std::move(*result);
  }

  // Reads from a raw client until a full line (returned without '\n') or EOF (nullopt).
  std::optional<std::string> ReadLine(int fd, std::string& buf) {
    bool open = true;
    Pump([&] {
      open = ReadSome(fd, buf) && open;
      return buf.find('\n') != std::string::npos || !open;
    });
    size_t nl = buf.find('\n');
    if (nl == std::string::npos) return std::nullopt;
    std::string line = buf.substr(0, nl);
    buf.erase(0, nl + 1);
    return line;
  }

  // True once the raw client sees the server close.
  bool WaitEof(int fd) {
    std::string sink;
    return Pump([&] { return !ReadSome(fd, sink); });
  }

  json::object RawRequest(std::string_view bytes) {
    UniqueFd fd = RawConnect(path_);
    EXPECT_TRUE(fd.valid());
    EXPECT_EQ(::send(fd.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()));
    std::string buf;
    auto line = ReadLine(fd.get(), buf);
    EXPECT_TRUE(line.has_value());
    EXPECT_TRUE(WaitEof(fd.get()));
    return line ? Parse(*line) : json::object{};
  }

  std::string dir_, path_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<ControlServer> server_;
  int handled_ = 0;
};

// ---- Codec and validation (no sockets) ----

TEST(ControlCodecTest, DoublesInShortestPlainForm) {
  json::object o;
  o["a"] = 12.3;
  o["b"] = 5.0;
  o["c"] = nullptr;
  o["d"] = "q\"\n";
  o["e"] = json::array{1, -2, true};
  EXPECT_EQ(EncodeControlLine(o),
            "{\"a\":12.3,\"b\":5.0,\"c\":null,\"d\":\"q\\\"\\n\",\"e\":[1,-2,true]}\n");
  EXPECT_EQ(EncodeControlLine(json::value(std::numeric_limits<double>::infinity())), "null\n");
}

TEST(ControlCodecTest, ValidatesCommandsAndArguments) {
  EXPECT_EQ(ValidateControlRequest(Obj(R"({"cmd":"status"})")), "");
  EXPECT_EQ(ValidateControlRequest(Obj(R"({"cmd":"stop","id":"broker","extra":1})")), "");
  EXPECT_EQ(ValidateControlRequest(Obj(R"({"cmd":"scale","id":"shard","n":0})")), "");
  EXPECT_EQ(ValidateControlRequest(Obj(R"({"cmd":"scale","id":"shard","n":10000})")), "");
  EXPECT_NE(ValidateControlRequest(Obj(R"({})")), "");
  EXPECT_NE(ValidateControlRequest(Obj(R"({"cmd":7})")), "");
  EXPECT_NE(ValidateControlRequest(Obj(R"({"cmd":"explode"})")), "");
  EXPECT_NE(ValidateControlRequest(Obj(R"({"cmd":"stop"})")), "");
  EXPECT_NE(ValidateControlRequest(Obj(R"({"cmd":"restart","id":""})")), "");
  EXPECT_EQ(ValidateControlRequest(Obj(R"({"cmd":"upgrade","id":"shard.0"})")), "");
  EXPECT_EQ(ValidateControlRequest(Obj(R"({"cmd":"upgrade"})")), "'upgrade' needs a string \"id\"");
  EXPECT_NE(ValidateControlRequest(Obj(R"({"cmd":"scale","id":"shard"})")), "");
  EXPECT_NE(ValidateControlRequest(Obj(R"({"cmd":"scale","id":"shard","n":-1})")), "");
  EXPECT_NE(ValidateControlRequest(Obj(R"({"cmd":"scale","id":"shard","n":2.5})")), "");
  EXPECT_NE(ValidateControlRequest(Obj(R"({"cmd":"scale","id":"shard","n":"4"})")), "");
  EXPECT_NE(ValidateControlRequest(Obj(R"({"cmd":"scale","id":"shard","n":4294967296})")), "");
  // The daemon's cap, said by the layer that checks requests (docs/CONTROL.md).
  EXPECT_EQ(ValidateControlRequest(Obj(R"({"cmd":"scale","id":"shard","n":10001})")),
            "'scale' needs an integer \"n\" between 0 and 10000");
}

// ---- Server: requests and replies ----

TEST_F(ControlTest, RoundTrip) {
  StartEcho();
  auto r = WithLoop([&] { return ControlCall(path_, Obj(R"({"cmd":"stop","id":"broker"})"), 5s); });
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE(IsOk(*r));
  EXPECT_EQ(json::serialize((*r)["echo"]), R"({"cmd":"stop","id":"broker"})");
  EXPECT_EQ(handled_, 1);
  EXPECT_TRUE(Pump([&] { return server_->connections() == 0; }));
}

TEST_F(ControlTest, AsyncReplyComesLater) {
  ControlServer::Reply stored;
  Start([&](const json::object&, ControlServer::Reply reply) { stored = std::move(reply); });
  std::atomic<bool> done{false};
  std::optional<Result<json::object>> result;
  std::thread t([&] {
    result.emplace(ControlCall(path_, Obj(R"({"cmd":"restart","id":"broker"})"), 5s));
    done = true;
  });
  ASSERT_TRUE(Pump([&] { return stored != nullptr; }));
  // Still waiting: the daemon has not answered yet.
  loop_->RunOnce(20ms);
  EXPECT_FALSE(done.load());
  loop_->AddTimer(10ms, [&] { stored(json::object{{"ok", true}, {"later", 1}}); });
  EXPECT_TRUE(Pump([&] { return done.load(); }));
  t.join();
  ASSERT_TRUE(result->ok()) << result->status().message();
  EXPECT_EQ(json::serialize(result->value()), R"({"ok":true,"later":1})");
}

TEST_F(ControlTest, ClientGoneBeforeReplyIsHarmless) {
  ControlServer::Reply stored;
  Start([&](const json::object&, ControlServer::Reply reply) { stored = std::move(reply); });
  {
    UniqueFd fd = RawConnect(path_);
    std::string req = "{\"cmd\":\"restart\",\"id\":\"broker\"}\n";
    ASSERT_EQ(::send(fd.get(), req.data(), req.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(req.size()));
    ASSERT_TRUE(Pump([&] { return stored != nullptr; }));
  }  // the client closes here
  ASSERT_TRUE(Pump([&] { return server_->connections() == 0; }));
  stored(json::object{{"ok", true}});
  stored(json::object{{"ok", true}});  // extra calls are ignored too
  EXPECT_EQ(server_->connections(), 0u);
}

TEST_F(ControlTest, ReplyAfterServerDestroyedIsDropped) {
  ControlServer::Reply stored;
  Start([&](const json::object&, ControlServer::Reply reply) { stored = std::move(reply); });
  UniqueFd fd = RawConnect(path_);
  std::string req = "{\"cmd\":\"status\"}\n";
  ASSERT_EQ(::send(fd.get(), req.data(), req.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(req.size()));
  ASSERT_TRUE(Pump([&] { return stored != nullptr; }));
  server_.reset();
  stored(json::object{{"ok", true}});
  EXPECT_TRUE(WaitEof(fd.get()));
  EXPECT_FALSE(std::filesystem::exists(path_));
}

TEST_F(ControlTest, SecondReplyIsIgnored) {
  Start([&](const json::object&, ControlServer::Reply reply) {
    reply(json::object{{"ok", true}, {"n", 1}});
    reply(json::object{{"ok", true}, {"n", 2}});
  });
  UniqueFd fd = RawConnect(path_);
  ASSERT_EQ(::send(fd.get(), "{\"cmd\":\"status\"}\n", 17, MSG_NOSIGNAL), 17);
  std::string buf;
  auto line = ReadLine(fd.get(), buf);
  ASSERT_TRUE(line);
  EXPECT_EQ(*line, R"({"ok":true,"n":1})");
  EXPECT_TRUE(WaitEof(fd.get()));
  EXPECT_EQ(buf, "");
}

TEST_F(ControlTest, MalformedRequestsGetInvalid) {
  StartEcho();
  using namespace std::string_view_literals;
  const std::string_view kBad[] = {"{\"cmd\":\n",
                                   "not json\n",
                                   "[1,2]\n",
                                   "{}\n",
                                   "{\"cmd\":\"explode\"}\n",
                                   "{\"cmd\":\"stop\"}\n",
                                   "{\"cmd\":\"scale\",\"id\":\"s\",\"n\":-3}\n",
                                   "\n",
                                   "{\"cmd\":\"st\0tus\"}\n"sv,
                                   "\xff\xfe{\n"};
  for (std::string_view bad : kBad) {
    json::object r = RawRequest(bad);
    EXPECT_FALSE(IsOk(r)) << bad;
    EXPECT_EQ(Code(r), "invalid") << bad;
    EXPECT_FALSE(r["error"].as_string().empty());
  }
  EXPECT_EQ(handled_, 0);
  json::object unknown = RawRequest("{\"cmd\":\"explode\"}\n");
  EXPECT_NE(std::string(unknown["error"].as_string()).find("unknown cmd 'explode'"),
            std::string::npos);
  // Deep nesting is an error reply, not a stack overflow.
  std::string deep = "{\"cmd\":\"status\",\"x\":" + std::string(10000, '[') + "\n";
  EXPECT_EQ(Code(RawRequest(deep)), "invalid");
  EXPECT_EQ(handled_, 0);
}

TEST_F(ControlTest, RequestMayArriveInPiecesOrEndAtEof) {
  StartEcho();
  UniqueFd fd = RawConnect(path_);
  std::string req = "{\"cmd\":\"status\"}\r\n";
  for (char ch : req) {
    ASSERT_EQ(::send(fd.get(), &ch, 1, MSG_NOSIGNAL), 1);
    loop_->RunOnce(0ms);
  }
  std::string buf;
  auto line = ReadLine(fd.get(), buf);
  ASSERT_TRUE(line);
  EXPECT_TRUE(IsOk(Parse(*line)));

  // No '\n', but the client half-closes: the bytes it sent are the request.
  UniqueFd fd2 = RawConnect(path_);
  ASSERT_EQ(::send(fd2.get(), "{\"cmd\":\"status\"}", 16, MSG_NOSIGNAL), 16);
  ::shutdown(fd2.get(), SHUT_WR);
  std::string buf2;
  line = ReadLine(fd2.get(), buf2);
  ASSERT_TRUE(line);
  EXPECT_TRUE(IsOk(Parse(*line)));
  EXPECT_EQ(handled_, 2);
}

TEST_F(ControlTest, RequestSizeLimit) {
  StartEcho();
  // Exactly 64 KiB before the '\n' is accepted.
  std::string head = "{\"cmd\":\"status\",\"pad\":\"";
  std::string fits = head + std::string(kMaxControlRequestBytes - head.size() - 2, 'x') + "\"}";
  ASSERT_EQ(fits.size(), kMaxControlRequestBytes);
  auto r = WithLoop([&] { return ControlCall(path_, Parse(fits), 5s); });
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE(IsOk(*r));
  EXPECT_EQ(handled_, 1);

  // One byte more is refused by the client before it connects...
  std::string over = head + std::string(kMaxControlRequestBytes - head.size() - 1, 'x') + "\"}";
  auto r2 = ControlCall(path_, Parse(over), 5s);
  EXPECT_EQ(r2.status().code(), Status::Code::kInvalidConfig);

  // ...and by the server, which answers and closes without waiting for a '\n'.
  UniqueFd fd = RawConnect(path_);
  std::string big(kMaxControlRequestBytes + 4096, 'x');
  size_t sent = 0;
  std::string buf;
  bool open = true;
  ASSERT_TRUE(Pump([&] {
    if (sent < big.size()) {
      ssize_t n = ::send(fd.get(), big.data() + sent, big.size() - sent, MSG_NOSIGNAL);
      if (n > 0) sent += static_cast<size_t>(n);
    }
    open = ReadSome(fd.get(), buf) && open;
    return !open;
  }));
  ASSERT_NE(buf.find('\n'), std::string::npos);
  json::object reply = Parse(buf.substr(0, buf.find('\n')));
  EXPECT_EQ(Code(reply), "invalid");
  EXPECT_NE(std::string(reply["error"].as_string()).find("longer than 65536"), std::string::npos);
  EXPECT_EQ(handled_, 1);
  EXPECT_TRUE(Pump([&] { return server_->connections() == 0; }));
}

TEST_F(ControlTest, SilentClientTimesOut) {
  StartEcho(ControlServerOptions{.request_timeout = 50ms});
  UniqueFd fd = RawConnect(path_);
  ASSERT_EQ(::send(fd.get(), "{\"cmd\":", 7, MSG_NOSIGNAL), 7);
  std::string buf;
  auto line = ReadLine(fd.get(), buf);
  ASSERT_TRUE(line);
  EXPECT_EQ(Code(Parse(*line)), "invalid");
  EXPECT_TRUE(WaitEof(fd.get()));
  EXPECT_EQ(server_->connections(), 0u);
}

TEST_F(ControlTest, LargeReplyGoesOutInPieces) {
  std::string big(4 << 20, 'y');
  Start([&](const json::object&, ControlServer::Reply reply) {
    reply(json::object{{"ok", true}, {"blob", big}});
  });
  auto r = WithLoop([&] { return ControlCall(path_, Obj(R"({"cmd":"status"})"), 10s); });
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ((*r)["blob"].as_string().size(), big.size());
}

TEST_F(ControlTest, ExtraConnectionsGetBusy) {
  StartEcho();
  std::vector<UniqueFd> held;
  for (int i = 0; i < 64; ++i) held.push_back(RawConnect(path_));
  ASSERT_TRUE(Pump([&] { return server_->connections() == 64; }));
  UniqueFd extra = RawConnect(path_);
  std::string buf;
  auto line = ReadLine(extra.get(), buf);
  ASSERT_TRUE(line);
  EXPECT_EQ(Code(Parse(*line)), "busy");
  EXPECT_TRUE(WaitEof(extra.get()));
  EXPECT_EQ(server_->connections(), 64u);

  held.pop_back();
  ASSERT_TRUE(Pump([&] { return server_->connections() == 63; }));
  auto r = WithLoop([&] { return ControlCall(path_, Obj(R"({"cmd":"status"})"), 5s); });
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(IsOk(*r));
}

// ---- Server: the socket file ----

TEST_F(ControlTest, SocketFileIsOwnerOnly) {
  ::umask(0);  // the server must not depend on the caller's umask
  StartEcho();
  ::umask(022);
  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  server_.reset();
  EXPECT_FALSE(std::filesystem::exists(path_));
}

TEST_F(ControlTest, ReplacesStaleSocketButNotALiveOne) {
  {  // A socket file with nobody behind it, as a crashed daemon leaves.
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
    ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  }
  ASSERT_TRUE(std::filesystem::exists(path_));
  StartEcho();

  auto second =
      ControlServer::Create(*loop_, path_, [](const json::object&, ControlServer::Reply) {});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), Status::Code::kRefused);
  EXPECT_NE(second.status().message().find("another process is listening"), std::string::npos);
  // The live server is untouched.
  auto r = WithLoop([&] { return ControlCall(path_, Obj(R"({"cmd":"status"})"), 5s); });
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(IsOk(*r));
}

TEST_F(ControlTest, RefusesToReplaceARegularFile) {
  { std::ofstream(path_) << "precious"; }
  auto s = ControlServer::Create(*loop_, path_, [](const json::object&, ControlServer::Reply) {});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Status::Code::kInvalidConfig);
  EXPECT_EQ(std::filesystem::file_size(path_), 8u);
  auto toolong = ControlServer::Create(*loop_, dir_ + "/" + std::string(120, 'a'),
                                       [](const json::object&, ControlServer::Reply) {});
  EXPECT_EQ(toolong.status().code(), Status::Code::kInvalidConfig);
}

// Runs `fn` in a child process as uid/gid 65534 while the loop runs here; returns its exit code.
int AsNobody(EventLoop& loop, const std::function<int()>& fn) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) _exit(90);
    _exit(fn());
  }
  int status = 0;
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    loop.RunOnce(5ms);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST_F(ControlTest, OnlyOwnerOrRootMayConnect) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "needs root to run a client as another uid (setuid to 65534); "
                    "SO_PEERCRED check not exercised";
  }
  StartEcho();
  ASSERT_EQ(::chmod(dir_.c_str(), 0711), 0);
  // With the socket at 0600 the kernel already keeps others out.
  int rc = AsNobody(*loop_, [&] {
    auto r = ControlCall(path_, Obj(R"({"cmd":"status"})"), 5s);
    return !r.ok() && r.status().code() == Status::Code::kRefused ? 0 : 1;
  });
  EXPECT_EQ(rc, 0);
  // Opened up, the peer-credential check is what refuses them.
  ASSERT_EQ(::chmod(path_.c_str(), 0666), 0);
  rc = AsNobody(*loop_, [&] {
    auto r = ControlCall(path_, Obj(R"({"cmd":"status"})"), 5s);
    if (!r.ok()) return 2;
    return !IsOk(*r) && Code(*r) == "refused" && (*r)["error"].as_string() == "permission denied"
               ? 0
               : 3;
  });
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(handled_, 0);
  // Root itself still gets in.
  auto r = WithLoop([&] { return ControlCall(path_, Obj(R"({"cmd":"status"})"), 5s); });
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(IsOk(*r));
}

// ---- Events ----

struct Follower {
  UniqueFd fd;
  std::string buf;
};

TEST_F(ControlTest, EventsStreamToEveryFollower) {
  StartEcho();
  Follower a{RawConnect(path_), ""}, b{RawConnect(path_), ""};
  for (Follower* f : {&a, &b}) {
    ASSERT_EQ(::send(f->fd.get(), "{\"cmd\":\"events\"}\n", 17, MSG_NOSIGNAL), 17);
    auto ack = ReadLine(f->fd.get(), f->buf);
    ASSERT_TRUE(ack);
    EXPECT_EQ(*ack, R"({"ok":true})");
  }
  EXPECT_EQ(server_->followers(), 2u);
  EXPECT_EQ(handled_, 0);  // the server serves `events` itself
  server_->PublishEvent("{\"ts\":1.000000,\"event\":\"started\",\"id\":\"broker\"}\n");
  server_->PublishEvent("{\"ts\":2.000000,\"event\":\"ready\",\"id\":\"broker\"}");  // no '\n'
  for (Follower* f : {&a, &b}) {
    auto l1 = ReadLine(f->fd.get(), f->buf);
    auto l2 = ReadLine(f->fd.get(), f->buf);
    ASSERT_TRUE(l1 && l2);
    EXPECT_EQ(*l1, R"({"ts":1.000000,"event":"started","id":"broker"})");
    EXPECT_EQ(*l2, R"({"ts":2.000000,"event":"ready","id":"broker"})");
  }
  // One leaves; the other keeps receiving.
  a.fd.Reset();
  ASSERT_TRUE(Pump([&] { return server_->followers() == 1; }));
  server_->PublishEvent("{\"event\":\"stopped\"}\n");
  auto l3 = ReadLine(b.fd.get(), b.buf);
  ASSERT_TRUE(l3);
  EXPECT_EQ(*l3, R"({"event":"stopped"})");
}

TEST_F(ControlTest, FollowerThatFallsBehindIsDisconnected) {
  StartEcho();
  Follower slow{RawConnect(path_), ""}, good{RawConnect(path_), ""};
  for (Follower* f : {&slow, &good}) {
    ASSERT_EQ(::send(f->fd.get(), "{\"cmd\":\"events\"}\n", 17, MSG_NOSIGNAL), 17);
  }
  ASSERT_TRUE(Pump([&] { return server_->followers() == 2; }));
  std::string line = "{\"ts\":1.000000,\"event\":\"started\",\"id\":\"shard\",\"reason\":\"" +
                     std::string(150, 'r') + "\"}\n";
  size_t published = 0;
  // `good` reads between batches; `slow` never reads.
  while (server_->followers() == 2 && published < 100000) {
    for (int i = 0; i < 64; ++i, ++published) server_->PublishEvent(line);
    loop_->RunOnce(0ms);
    ASSERT_TRUE(ReadSome(good.fd.get(), good.buf));
  }
  ASSERT_EQ(server_->followers(), 1u) << "slow follower never dropped";
  // It got more than 1 MiB (the cap) beyond what the kernel buffered for it.
  EXPECT_GT(published * line.size(), size_t{1} << 20);
  server_->PublishEvent(line);
  ++published;
  ASSERT_TRUE(Pump([&] {
    ReadSome(good.fd.get(), good.buf);
    return CountLines(good.buf) == published + 1;  // + the ack
  })) << CountLines(good.buf)
      << " of " << published + 1;
  // The slow one reads what was queued for it in the kernel, then EOF.
  std::string got;
  ASSERT_TRUE(Pump([&] { return !ReadSome(slow.fd.get(), got); }));
  EXPECT_LT(CountLines(got), published + 1);
}

TEST_F(ControlTest, FollowEventsDeliversLinesUntilTheCallbackStops) {
  StartEcho();
  std::vector<std::string> lines;
  std::atomic<bool> done{false};
  Status result;
  std::thread t([&] {
    result = FollowEvents(path_, [&](std::string_view l) {
      lines.emplace_back(l);
      return lines.size() < 2;
    });
    done = true;
  });
  ASSERT_TRUE(Pump([&] { return server_->followers() == 1; }));
  server_->PublishEvent("{\"event\":\"a\"}\n");
  server_->PublishEvent("{\"event\":\"b\"}\n");
  server_->PublishEvent("{\"event\":\"c\"}\n");
  ASSERT_TRUE(Pump([&] { return done.load(); }));
  t.join();
  EXPECT_TRUE(result.ok()) << result.message();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], R"({"event":"a"})");
  EXPECT_EQ(lines[1], R"({"event":"b"})");
  EXPECT_TRUE(Pump([&] { return server_->connections() == 0; }));
}

// ---- Client ----

TEST_F(ControlTest, MissingDaemonIsNotFound) {
  auto r = ControlCall(path_, Obj(R"({"cmd":"status"})"), 1s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kNotFound);
  EXPECT_EQ(r.status().message(), "daemon not running (no control socket at " + path_ + ")");
  // A stale socket file is the same to a client.
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
  ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  r = ControlCall(path_, Obj(R"({"cmd":"status"})"), 1s);
  EXPECT_EQ(r.status().code(), Status::Code::kNotFound);
  EXPECT_EQ(FollowEvents(path_, [](std::string_view) { return true; }).code(),
            Status::Code::kNotFound);
}

TEST_F(ControlTest, CallTimesOutWhenNoReplyComes) {
  Start([](const json::object&, ControlServer::Reply) {});  // never answers
  auto r = WithLoop([&] { return ControlCall(path_, Obj(R"({"cmd":"status"})"), 100ms); });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kIoError);
}

// ---- CLI ----

const char* kSampleStatus = R"({"ok":true,"node":"node1","pid":100,"uptime_s":62.5,"tree":
  {"id":"root","type":"supervisor","strategy":"one_for_one","intensity":3,"period_ms":5000,
   "restarts_in_window":0,"state":"running","children":[
     {"id":"broker","type":"worker","pid":1234,"state":"running","uptime_s":62.4,"restarts":0,
      "last_exit":null},
     {"id":"shards","type":"supervisor","strategy":"one_for_one","intensity":10,
      "period_ms":10000,"restarts_in_window":1,"state":"running","restarts":0,"uptime_s":60.0,
      "children":[
        {"id":"shard.0","type":"worker","pid":1240,"state":"running","uptime_s":12.3,
         "restarts":1,"last_exit":{"status":null,"signal":"SIGKILL"}},
        {"id":"shard.1","type":"worker","pid":null,"state":"stopped","uptime_s":null,
         "restarts":2,"last_exit":{"status":1,"signal":null}}]}]}})";

TEST(RenderStatusTest, DrawsAnIndentedTree) {
  EXPECT_EQ(
      RenderStatus(Obj(kSampleStatus)),
      "root            supervisor one_for_one  running   restarts 0/3 in 5s\n"
      "  broker        pid 1234  running   up 1m02s  restarts 0\n"
      "  shards        supervisor one_for_one  running   restarts 1/10 in 10s\n"
      "    shard.0     pid 1240  running   up 12.3s  restarts 1  last exit: killed by SIGKILL\n"
      "    shard.1     pid -     stopped   up -      restarts 2  last exit: exit status 1\n");
}

TEST(RenderStatusTest, WidensForLongIdsAndSurvivesGarbage) {
  std::string out = RenderStatus(Obj(R"({"tree":{"id":"root","type":"supervisor",
      "strategy":"simple_one_for_one","intensity":1,"period_ms":1500,"restarts_in_window":0,
      "state":"running","children":[{"id":"a-very-long-worker-id","type":"worker","pid":7,
      "state":"running","uptime_s":90061,"restarts":0,"last_exit":null}]}})"));
  EXPECT_EQ(out,
            "root                     supervisor simple_one_for_one running   restarts 0/1 in "
            "1500ms\n"
            "  a-very-long-worker-id  pid 7     running   up 1d01h  restarts 0\n");
  EXPECT_EQ(RenderStatus(Obj(R"({"ok":true})")), "");
  EXPECT_EQ(RenderStatus(Obj(R"({"tree":{"children":[1,"x",{"pid":"no"}]}})")),
            "?               pid -     ?         up -      restarts ?\n"
            "  ?             pid -     ?         up -      restarts ?\n");
}

TEST_F(ControlTest, CliExitCodes) {
  std::ostringstream out, err;
  EXPECT_EQ(RunStatus(path_, false, out, err), kExitNotRunning);
  EXPECT_EQ(err.str(), "switchboard: daemon not running (no control socket at " + path_ + ")\n");
  err.str("");
  EXPECT_EQ(RunSimple(path_, "stop", "broker", out, err), kExitNotRunning);
  EXPECT_EQ(RunScale(path_, "shard", 2, out, err), kExitNotRunning);
  EXPECT_EQ(RunReload(path_, out, err), kExitNotRunning);
  EXPECT_EQ(RunEvents(path_, out, err), kExitNotRunning);
  EXPECT_EQ(RunSimple(path_, "explode", "broker", out, err), kExitUsage);
  EXPECT_EQ(RunScale(path_, "shard", -1, out, err), kExitUsage);
  EXPECT_EQ(out.str(), "");

  Start([](const json::object& req, ControlServer::Reply reply) {
    std::string_view cmd = req.at("cmd").as_string();
    std::string_view id = req.contains("id") ? std::string_view(req.at("id").as_string()) : "";
    if (cmd == "status") return reply(Obj(kSampleStatus));
    if (cmd == "reload") {
      return reply(ControlError(kCodeInvalid, "config.yaml:7:13: key 'strategy': unknown"));
    }
    if (cmd == "scale") {
      return reply(Obj(R"({"ok":true,"added":["shard.2","shard.3"],"removed":[]})"));
    }
    if (id == "ghost") return reply(ControlError(kCodeNotFound, "no child 'ghost'"));
    if (id == "root") return reply(ControlError(kCodeRefused, "cannot stop the root"));
    reply(json::object{{"ok", true}});
  });
  auto run = [&](const std::function<int()>& f) {
    out.str("");
    err.str("");
    return WithLoop(f);
  };
  EXPECT_EQ(run([&] { return RunStatus(path_, false, out, err); }), kExitOk);
  EXPECT_EQ(out.str(), RenderStatus(Obj(kSampleStatus)));
  EXPECT_EQ(run([&] { return RunStatus(path_, true, out, err); }), kExitOk);
  EXPECT_EQ(json::parse(out.str()), json::value(Obj(kSampleStatus)));
  EXPECT_NE(out.str().find("\"uptime_s\":62.5"), std::string::npos);
  EXPECT_EQ(run([&] { return RunSimple(path_, "restart", "broker", out, err); }), kExitOk);
  EXPECT_EQ(out.str(), "broker: restarted\n");
  EXPECT_EQ(run([&] { return RunSimple(path_, "stop", "ghost", out, err); }), kExitUsage);
  EXPECT_EQ(err.str(), "switchboard: no child 'ghost'\n");
  EXPECT_EQ(run([&] { return RunSimple(path_, "stop", "root", out, err); }), kExitFailure);
  EXPECT_EQ(err.str(), "switchboard: cannot stop the root\n");
  EXPECT_EQ(run([&] { return RunScale(path_, "shard", 4, out, err); }), kExitOk);
  EXPECT_EQ(out.str(), "shard: added shard.2, shard.3\n");
  EXPECT_EQ(run([&] { return RunReload(path_, out, err); }), kExitUsage);
  EXPECT_EQ(err.str(), "switchboard: config.yaml:7:13: key 'strategy': unknown\n");
}

TEST_F(ControlTest, CliReloadPrintsChanges) {
  Start([](const json::object&, ControlServer::Reply reply) {
    reply(Obj(R"({"ok":true,"changes":["root: start shard.2","root: stop shard.3"]})"));
  });
  std::ostringstream out, err;
  EXPECT_EQ(WithLoop([&] { return RunReload(path_, out, err); }), kExitOk);
  EXPECT_EQ(out.str(), "root: start shard.2\nroot: stop shard.3\n");
}

TEST_F(ControlTest, CliUpgradePrintsEachChildHandedOverAndTheFailure) {
  Start([](const json::object& req, ControlServer::Reply reply) {
    if (req.at("id").as_string() == "shards") {
      return reply(Obj(R"({"ok":false,"code":"refused","error":"upgrade of 'shard.1' failed: )"
                       R"(the new process was not ready within 10000ms","upgraded":[)"
                       R"({"id":"shard.0","pid":41,"connections":3,"ms":9}]})"));
    }
    reply(
        Obj(R"({"ok":true,"upgraded":[{"id":"shard.0","pid":42,"connections":null,"ms":null}]})"));
  });
  std::ostringstream out, err;
  EXPECT_EQ(WithLoop([&] { return RunUpgrade(path_, "shard.0", out, err); }), kExitOk);
  EXPECT_EQ(out.str(), "shard.0: upgraded, pid 42, ? connections moved in ? ms\n");
  EXPECT_EQ(err.str(), "");
  out.str("");
  EXPECT_EQ(WithLoop([&] { return RunUpgrade(path_, "shards", out, err); }), kExitFailure);
  EXPECT_EQ(out.str(), "shard.0: upgraded, pid 41, 3 connections moved in 9 ms\n");
  EXPECT_EQ(err.str(),
            "switchboard: upgrade of 'shard.1' failed: the new process was not ready within "
            "10000ms\n");
}

TEST(RenderStatusTest, UpgradingWorkerShowsTheProcessTakingOver) {
  EXPECT_EQ(RenderStatus(Obj(R"({"tree":{"id":"root","type":"supervisor","strategy":"one_for_one",
      "intensity":1,"period_ms":5000,"restarts_in_window":0,"state":"running","children":[
      {"id":"s","type":"worker","pid":7,"upgrade_pid":9,"state":"upgrading","uptime_s":3,
      "restarts":0,"last_exit":null}]}})")),
            "root            supervisor one_for_one  running   restarts 0/1 in 5s\n"
            "  s             pid 7     upgrading up 3.0s   restarts 0  new pid 9 taking over\n");
}

TEST_F(ControlTest, CliEventsEndsCleanlyAfterDaemonExit) {
  StartEcho();
  std::ostringstream out, err;
  int rc = -1;
  std::thread t([&] { rc = RunEvents(path_, out, err); });
  ASSERT_TRUE(Pump([&] { return server_->followers() == 1; }));
  server_->PublishEvent("{\"ts\":1.0,\"event\":\"stopped\",\"id\":\"root\"}\n");
  server_->PublishEvent("{\"ts\":1.1,\"event\":\"daemon_exit\",\"id\":\"root\",\"status\":0}\n");
  // Both lines are in the socket already (PublishEvent sends at once); then the daemon goes.
  server_.reset();
  t.join();
  EXPECT_EQ(rc, kExitOk) << err.str();
  EXPECT_EQ(out.str(),
            "{\"ts\":1.0,\"event\":\"stopped\",\"id\":\"root\"}\n"
            "{\"ts\":1.1,\"event\":\"daemon_exit\",\"id\":\"root\",\"status\":0}\n");
}

TEST_F(ControlTest, CliEventsReportsAnUnexpectedClose) {
  StartEcho();
  std::ostringstream out, err;
  int rc = -1;
  std::thread t([&] { rc = RunEvents(path_, out, err); });
  ASSERT_TRUE(Pump([&] { return server_->followers() == 1; }));
  server_.reset();
  t.join();
  EXPECT_EQ(rc, kExitFailure);
  EXPECT_NE(err.str().find("closed the event stream"), std::string::npos);
}

}  // namespace
}  // namespace sb::supervisor
