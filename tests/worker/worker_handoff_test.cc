// A shard hands its connections to a new process (docs/UPGRADE.md, "The
// daemon ↔ shard contract"), with this test playing the daemon: both
// processes on the same inherited listening socket, the new one started
// with SWITCHBOARD_HANDOFF=receive, SIGUSR2 to the old once the new one is
// READY. No client may see a close or a phx_error; a message cut between
// reads completes in the new process; pushes keep their replies; presence
// is the same, phx_refs included; /healthz is answered once the old process
// has exited 0.

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "common/unique_fd.h"
#include "protocol/websocket.h"
#include "tests/supervisor/daemon_harness.h"
#include "tests/testutil/testutil.h"

namespace sb {
namespace {

namespace tu = testutil;
namespace json = boost::json;
using std::chrono::milliseconds;

constexpr milliseconds kWait{10000};

bool WriteAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// A blocking WebSocket client speaking Phoenix v2 JSON by hand.
class Client {
 public:
  bool Connect(int port) {
    fd_.Reset(tu::ConnectTcp("127.0.0.1", port, milliseconds(2000)));
    if (!fd_.valid()) return false;
    const std::string request =
        "GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n";
    if (!WriteAll(fd_.get(), request)) return false;
    std::string head;
    while (head.find("\r\n\r\n") == std::string::npos) {
      if (!ReadSome(&head)) return false;
    }
    const size_t end = head.find("\r\n\r\n") + 4;
    if (head.rfind("HTTP/1.1 101", 0) != 0) return false;
    std::string rest = head.substr(end);
    Feed(rest);
    return true;
  }

  void SendRaw(std::string_view bytes) { ASSERT_TRUE(WriteAll(fd_.get(), bytes)); }
  static std::string Frame(const json::value& message) {
    std::string out;
    ws::AppendClientFrame(out, ws::Opcode::kText, json::serialize(message), 0x0badf00d);
    return out;
  }
  void Send(const json::value& message) { SendRaw(Frame(message)); }

  // The next message matching `pred`, waiting up to kWait; the messages
  // before it stay in the inbox.
  std::optional<json::array> Next(const std::function<bool(const json::array&)>& pred) {
    const auto deadline = std::chrono::steady_clock::now() + kWait;
    for (;;) {
      for (auto it = inbox_.begin(); it != inbox_.end(); ++it) {
        if (pred(*it)) {
          json::array m = std::move(*it);
          inbox_.erase(it);
          return m;
        }
      }
      if (closed_ || std::chrono::steady_clock::now() >= deadline) return std::nullopt;
      pollfd p{.fd = fd_.get(), .events = POLLIN, .revents = 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      std::string bytes;
      if (!ReadSome(&bytes)) {
        closed_ = true;
        continue;
      }
      Feed(bytes);
    }
  }
  std::optional<json::array> Reply(std::string_view ref) {
    return Next([&](const json::array& m) {
      return m.size() == 5 && m[3] == "phx_reply" && m[1].is_string() && m[1].as_string() == ref;
    });
  }
  std::optional<json::array> Event(std::string_view topic, std::string_view event) {
    return Next([&](const json::array& m) {
      return m.size() == 5 && m[2] == json::string(topic) && m[3] == json::string(event);
    });
  }
  // Reads what has come, without waiting for more, and forgets it (what
  // closed() and saw_error() look at stays).
  void Drain() {
    DrainInto();
    inbox_.clear();
  }

 private:
  void DrainInto() {
    for (;;) {
      pollfd p{.fd = fd_.get(), .events = POLLIN, .revents = 0};
      if (closed_ || ::poll(&p, 1, 0) <= 0) return;
      std::string bytes;
      if (!ReadSome(&bytes)) {
        closed_ = true;
        return;
      }
      Feed(bytes);
    }
  }

 public:
  // How many messages have come so far, and whether one of `event` came
  // after the first `since`.
  size_t seen() const { return seen_.size(); }
  bool SawSince(size_t since, std::string_view event) const {
    for (size_t i = since; i < seen_.size(); ++i) {
      if (seen_[i].size() == 5 && seen_[i][3] == json::string(event)) return true;
    }
    return false;
  }
  bool closed() const { return closed_; }
  bool saw_close_frame() const { return close_frame_; }
  bool saw_error() const {
    for (const json::array& m : seen_) {
      if (m.size() == 5 && m[3] == "phx_error") return true;
    }
    return false;
  }

 private:
  bool ReadSome(std::string* out) {
    char buf[65536];
    pollfd p{.fd = fd_.get(), .events = POLLIN, .revents = 0};
    if (::poll(&p, 1, static_cast<int>(kWait.count())) <= 0) return false;
    const ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
    if (n <= 0) return false;
    out->append(buf, static_cast<size_t>(n));
    return true;
  }
  void Feed(std::string& bytes) {
    if (bytes.empty()) return;
    parser_.Feed(bytes.data(), bytes.size(), [this](const ws::Event& ev) {
      if (ev.kind == ws::Event::Kind::kClose) close_frame_ = true;
      if (ev.kind != ws::Event::Kind::kText) return;
      boost::system::error_code ec;
      json::value v = json::parse(ev.payload, ec);
      if (ec || !v.is_array()) return;
      inbox_.push_back(v.as_array());
      seen_.push_back(v.as_array());
    });
  }

  UniqueFd fd_;
  ws::MessageParser parser_{ws::Role::kClient, 16 << 20};
  std::deque<json::array> inbox_;
  std::vector<json::array> seen_;
  bool closed_ = false;
  bool close_frame_ = false;
};

json::array Msg(std::string_view join_ref, std::string_view ref, std::string_view topic,
                std::string_view event, json::value payload) {
  return json::array{json::string(join_ref), json::string(ref), json::string(topic),
                     json::string(event), std::move(payload)};
}

bool Ok(const std::optional<json::array>& reply) {
  return reply && reply->at(4).as_object().at("status") == "ok";
}

// `c`, connected to `port`, joins `topic` without presence: the
// presence_state it gets (nullopt if the join failed).
std::optional<json::array> JoinForState(Client& c, int port, std::string_view topic) {
  if (!c.Connect(port)) return std::nullopt;
  c.Send(Msg("1", "1", topic, "phx_join", json::object{}));
  if (!Ok(c.Reply("1"))) return std::nullopt;
  return c.Event(topic, "presence_state");
}

class WorkerHandoffTest : public ::testing::Test {
 protected:
  // A worker on `listener` (the shared listening socket by default);
  // READY=1 awaited.
  std::optional<tu::Process> Start(const std::string& name, bool receive,
                                   std::vector<std::string> extra = {}, int listener = -1) {
    auto notify = tu::NotifyReceiver::Bind(dir_.File(name + ".notify"));
    EXPECT_TRUE(notify.ok());
    if (!notify.ok()) return std::nullopt;
    std::vector<std::string> env = {"SWITCHBOARD_HANDOFF_SOCKET=" + dir_.File("handoff.sock"),
                                    "NOTIFY_SOCKET=" + notify->path()};
    if (receive) env.push_back("SWITCHBOARD_HANDOFF=receive");
    std::vector<std::string> args = {"--idle-timeout", "60", "--shutdown-timeout", "1"};
    if (extra.empty()) extra = {"--shard", "s1"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto p = tu::Process::Start(tu::BinPath("switchboard-worker"),
                                {.args = args,
                                 .env = env,
                                 .output = dir_.File(name + ".log"),
                                 .pass_fds = {listener < 0 ? listener_.get() : listener},
                                 .listen_env = true});
    EXPECT_TRUE(p.ok()) << p.status().message();
    if (!p.ok()) return std::nullopt;
    std::optional<std::string> ready;
    while ((ready = notify->Receive(kWait)) && *ready != "READY=1") {
    }
    EXPECT_EQ(ready, "READY=1") << tu::ReadFile(dir_.File(name + ".log"));
    notify_.push_back(std::make_unique<tu::NotifyReceiver>(std::move(notify).value()));
    return std::move(p).value();
  }

  // A sample of worker `name`'s metrics (started with --metrics
  // 127.0.0.1:0), or nullopt.
  std::optional<double> WorkerMetric(const std::string& name, std::string_view metric) {
    static const std::regex kMetrics(R"(metrics on 127\.0\.0\.1:(\d+))");
    const std::string log = tu::ReadFile(dir_.File(name + ".log"));
    std::smatch m;
    if (!std::regex_search(log, m, kMetrics)) return std::nullopt;
    return tu::Sample(tu::Scrape(std::stoi(m[1])), metric, {});
  }

  // The node's broker on ipc://<dir>/broker, with `extra` flags.
  std::string StartBroker(std::vector<std::string> extra = {}) {
    const std::string endpoint = "ipc://" + dir_.File("broker");
    std::vector<std::string> args = {"--bind", endpoint};
    args.insert(args.end(), extra.begin(), extra.end());
    auto p = tu::Process::Start(tu::BinPath("switchboard-broker"),
                                {.args = args, .output = dir_.File("broker.log")});
    EXPECT_TRUE(p.ok()) << p.status().message();
    if (p.ok()) broker_.emplace(std::move(p).value());
    return endpoint;
  }
  // `p` exits with `code` within kWait (after SIGTERM if `term`).
  static void ExpectExit(tu::Process& p, int code, bool term = false) {
    if (term) {
      ASSERT_TRUE(p.Signal(SIGTERM));
    }
    int status = 0;
    ASSERT_TRUE(p.WaitExit(kWait, &status));
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == code) << tu::DescribeWaitStatus(status);
  }
  // Waits until the log of worker `name` says `text`.
  bool LogSays(const std::string& name, std::string_view text) {
    return tu::WaitUntil(
        [&] { return tu::ReadFile(dir_.File(name + ".log")).find(text) != std::string::npos; },
        kWait);
  }
  // Starts the new process beside `old`, signals `old` and waits for it to
  // exit 0 and for the new one's STATUS line, which it returns.
  std::optional<tu::Process> HandOver(tu::Process& old, std::vector<std::string> args,
                                      std::string* status_line) {
    std::optional<tu::Process> fresh = Start("new", true, std::move(args));
    if (!fresh) return std::nullopt;
    EXPECT_TRUE(old.Signal(SIGUSR2));
    ExpectExit(old, 0);
    std::optional<std::string> line = notify_.back()->Receive(kWait);
    EXPECT_TRUE(line) << tu::ReadFile(dir_.File("old.log")) << tu::ReadFile(dir_.File("new.log"));
    if (line) *status_line = *line;
    return fresh;
  }
  // What has come to `c` holds no close and no phx_error, and it is open.
  static void ExpectUntouched(Client& c) {
    c.Drain();
    EXPECT_FALSE(c.closed());
    EXPECT_FALSE(c.saw_close_frame());
    EXPECT_FALSE(c.saw_error());
  }

  tu::TempDir dir_;
  std::optional<tu::Process> broker_;
  int port_ = 0;
  UniqueFd listener_ = tu::ListenTcp(&port_);
  std::vector<std::unique_ptr<tu::NotifyReceiver>> notify_;
};

TEST_F(WorkerHandoffTest, EveryConnectionMovesWithoutAClose) {
  std::optional<tu::Process> old_worker = Start("old", false);
  ASSERT_TRUE(old_worker);

  constexpr int kClients = 20;
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < kClients; ++i) {
    auto c = std::make_unique<Client>();
    ASSERT_TRUE(c->Connect(port_)) << i;
    const std::string key = "u" + std::to_string(i);
    c->Send(Msg("1", "1", "room:lobby", "phx_join",
                json::object{{"presence", {{"key", key}, {"meta", {{"n", i}}}}}}));
    ASSERT_TRUE(Ok(c->Reply("1"))) << i;
    c->Send(Msg("2", "2", "room:" + std::to_string(i), "phx_join", json::object{}));
    ASSERT_TRUE(Ok(c->Reply("2"))) << i;
    clients.push_back(std::move(c));
  }
  // The whole presence as a joiner sees it before the hand-off.
  Client watcher;
  std::optional<json::array> before = JoinForState(watcher, port_, "room:lobby");
  ASSERT_TRUE(before);
  ASSERT_EQ(before->at(4).as_object().size(), static_cast<size_t>(kClients));
  for (auto& c : clients) c->Drain();

  // A push cut inside its frame: the old process keeps the first half.
  const std::string cut =
      Client::Frame(Msg("1", "cut", "room:lobby", "shout", json::object{{"half", "way"}}));
  clients[0]->SendRaw(cut.substr(0, cut.size() / 2));

  std::string upgraded;
  std::optional<tu::Process> new_worker = HandOver(*old_worker, {}, &upgraded);
  ASSERT_TRUE(new_worker);
  EXPECT_EQ(
      upgraded.rfind("STATUS=upgraded connections=" + std::to_string(kClients + 1) + " ms=", 0), 0u)
      << upgraded;
  EXPECT_TRUE(new_worker->Running());

  // The cut push completes in the new process, and is answered.
  clients[0]->SendRaw(cut.substr(cut.size() / 2));
  EXPECT_TRUE(Ok(clients[0]->Reply("cut"))) << tu::ReadFile(dir_.File("new.log"));
  for (int i = 1; i < kClients; ++i) {
    EXPECT_TRUE(clients[i]->Event("room:lobby", "shout")) << i;
  }
  // Every client's pushes, on both of its channels, get their replies.
  for (int i = 0; i < kClients; ++i) {
    clients[i]->Send(Msg("2", "p", "room:" + std::to_string(i), "ping", json::object{}));
    EXPECT_TRUE(Ok(clients[i]->Reply("p"))) << i;
    clients[i]->Send(Msg("1", "q", "room:lobby", "shout", json::object{{"from", i}}));
    EXPECT_TRUE(Ok(clients[i]->Reply("q"))) << i;
  }
  EXPECT_TRUE(watcher.Event("room:lobby", "shout"));
  // Presence unchanged: the same metas under the same phx_refs.
  Client late;
  std::optional<json::array> after = JoinForState(late, port_, "room:lobby");
  ASSERT_TRUE(after);
  EXPECT_EQ(after->at(4), before->at(4));
  // A leave is seen by the others with the phx_ref of the join.
  clients[1]->Send(Msg("1", "l", "room:lobby", "phx_leave", json::object{}));
  EXPECT_TRUE(Ok(clients[1]->Reply("l")));
  std::optional<json::array> diff = watcher.Event("room:lobby", "presence_diff");
  ASSERT_TRUE(diff);
  EXPECT_EQ(diff->at(4).at("leaves").at("u1"), before->at(4).at("u1"));

  // /healthz: only the new process is left to answer it.
  UniqueFd health(tu::ConnectTcp("127.0.0.1", port_, milliseconds(2000)));
  ASSERT_TRUE(health.valid());
  ASSERT_TRUE(WriteAll(health.get(), "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
  char buf[512];
  const ssize_t n = ::recv(health.get(), buf, sizeof buf, 0);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)).rfind("HTTP/1.1 200", 0), 0u);

  for (auto& c : clients) ExpectUntouched(*c);
  ExpectUntouched(watcher);
  ExpectExit(*new_worker, 0, /*term=*/true);
}

// In a cluster the broker session moves too: the new process says hello as
// the old one, so the broker re-binds the shard, nobody on another shard sees
// a presence change, and broadcasts cross both ways.
TEST_F(WorkerHandoffTest, TheBrokerSessionMovesWithTheConnections) {
  const std::string broker_endpoint = StartBroker();
  ASSERT_TRUE(broker_);
  int other_port = 0;
  UniqueFd other_listener = tu::ListenTcp(&other_port);
  std::optional<tu::Process> other =
      Start("other", false, {"--shard", "s2", "--broker", broker_endpoint}, other_listener.get());
  ASSERT_TRUE(other);
  std::optional<tu::Process> old_worker =
      Start("old", false, {"--shard", "s1", "--broker", broker_endpoint});
  ASSERT_TRUE(old_worker);

  Client a, b;
  ASSERT_TRUE(a.Connect(port_));
  a.Send(Msg("1", "1", "room:x", "phx_join", json::object{{"presence", {{"key", "a"}}}}));
  ASSERT_TRUE(Ok(a.Reply("1")));
  ASSERT_TRUE(b.Connect(other_port));
  b.Send(Msg("1", "1", "room:x", "phx_join", json::object{{"presence", {{"key", "b"}}}}));
  ASSERT_TRUE(Ok(b.Reply("1")));
  // Each sees the other: the broker has both shards' presence.
  ASSERT_TRUE(a.Next([](const json::array& m) {
    return m[3] == "presence_diff" && m[4].at("joins").as_object().contains("b");
  })) << tu::ReadFile(dir_.File("old.log"));
  ASSERT_TRUE(b.Next([](const json::array& m) {
    return (m[3] == "presence_state" && m[4].as_object().contains("a")) ||
           (m[3] == "presence_diff" && m[4].at("joins").as_object().contains("a"));
  }));
  // b's own join, broadcast to the channel after its state.
  ASSERT_TRUE(b.Next([](const json::array& m) {
    return m[3] == "presence_diff" && m[4].at("joins").as_object().contains("b");
  }));
  a.Drain();
  b.Drain();
  const size_t b_seen = b.seen();

  std::string upgraded;
  std::optional<tu::Process> new_worker =
      HandOver(*old_worker, {"--shard", "s1", "--broker", broker_endpoint}, &upgraded);
  ASSERT_TRUE(new_worker);
  EXPECT_EQ(upgraded.rfind("STATUS=upgraded connections=1 ", 0), 0u) << upgraded;

  // Broadcasts cross both ways, and pushes are answered.
  b.Send(Msg("1", "2", "room:x", "shout", json::object{{"from", "b"}}));
  EXPECT_TRUE(Ok(b.Reply("2")));
  EXPECT_TRUE(a.Event("room:x", "shout")) << tu::ReadFile(dir_.File("new.log"));
  a.Send(Msg("1", "2", "room:x", "shout", json::object{{"from", "a"}}));
  EXPECT_TRUE(Ok(a.Reply("2")));
  EXPECT_TRUE(b.Event("room:x", "shout")) << tu::ReadFile(dir_.File("new.log"));
  // A joiner on the other shard sees both, a under its old phx_ref; b saw
  // no presence change at all.
  Client late;
  std::optional<json::array> state = JoinForState(late, other_port, "room:x");
  ASSERT_TRUE(state);
  EXPECT_TRUE(state->at(4).as_object().contains("a")) << json::serialize(*state);
  EXPECT_TRUE(state->at(4).as_object().contains("b")) << json::serialize(*state);
  ExpectUntouched(a);
  ExpectUntouched(b);
  EXPECT_FALSE(b.SawSince(b_seen, "presence_diff"));
  ExpectExit(*new_worker, 0, /*term=*/true);
  ExpectExit(*other, 0, /*term=*/true);
}

// Nobody to hand over to (the new process is not there): the old process
// says why and serves on, every connection as it was.
TEST_F(WorkerHandoffTest, WithNobodyToTakeThemTheConnectionsStay) {
  std::optional<tu::Process> old_worker = Start("old", false);
  ASSERT_TRUE(old_worker);
  Client c;
  ASSERT_TRUE(c.Connect(port_));
  c.Send(Msg("1", "1", "room:lobby", "phx_join", json::object{}));
  ASSERT_TRUE(Ok(c.Reply("1")));
  ASSERT_TRUE(old_worker->Signal(SIGUSR2));
  ASSERT_TRUE(LogSays("old", "serving on")) << tu::ReadFile(dir_.File("old.log"));
  EXPECT_TRUE(old_worker->Running());
  c.Send(Msg("1", "2", "room:lobby", "shout", json::object{}));
  EXPECT_TRUE(Ok(c.Reply("2")));
  ExpectUntouched(c);
  ExpectExit(*old_worker, 0, /*term=*/true);
}

// A new process that cannot take the state (here: the old one has a broker
// session, the new one no --broker) refuses it and exits 1; the old one keeps
// every connection, untouched, and serves on.
TEST_F(WorkerHandoffTest, AStateRefusedStaysWithTheOldProcess) {
  const std::string broker_endpoint = StartBroker();
  ASSERT_TRUE(broker_);
  std::optional<tu::Process> old_worker = Start(
      "old", false, {"--shard", "s1", "--broker", broker_endpoint, "--metrics", "127.0.0.1:0"});
  ASSERT_TRUE(old_worker);
  Client c;
  ASSERT_TRUE(c.Connect(port_));
  c.Send(Msg("1", "1", "room:lobby", "phx_join", json::object{{"presence", {{"key", "c"}}}}));
  ASSERT_TRUE(Ok(c.Reply("1")));
  ASSERT_TRUE(c.Event("room:lobby", "presence_state"));
  // Welcomed, so the state carries the broker's epoch. (A presence_state is
  // no proof: a joiner gets one without the broker once its wait is over,
  // and the young broker may not have welcomed the shard by then.)
  ASSERT_TRUE(tu::WaitUntil(
      [&] { return WorkerMetric("old", "switchboard_worker_broker_up") == 1.0; }, kWait))
      << tu::ReadFile(dir_.File("old.log"));

  std::optional<tu::Process> new_worker = Start("new", true, {"--shard", "s1"});
  ASSERT_TRUE(new_worker);
  ASSERT_TRUE(old_worker->Signal(SIGUSR2));
  ExpectExit(*new_worker, 1);
  ASSERT_TRUE(LogSays("old", "serving on")) << tu::ReadFile(dir_.File("old.log"));
  EXPECT_TRUE(LogSays("old", "no --broker")) << tu::ReadFile(dir_.File("old.log"));
  EXPECT_TRUE(old_worker->Running());
  // Served on (a join: no broadcast for the drain below to wait on while
  // the young broker settles).
  c.Send(Msg("2", "2", "room:other", "phx_join", json::object{}));
  EXPECT_TRUE(Ok(c.Reply("2")));
  ExpectUntouched(c);
  ExpectExit(*old_worker, 0, /*term=*/true);
}

// A topic that keeps history: the stream's position moves, so offsets go on
// where they were, a subscriber gets the next broadcast in order, and a
// rejoin recovers what was sent since the hand-off.
TEST_F(WorkerHandoffTest, HistoryGoesOnFromItsPosition) {
  // The broker has the rule too: it sequences the topic.
  const std::string broker_endpoint = StartBroker({"--history", "h:*=100/10m"});
  ASSERT_TRUE(broker_);
  const std::vector<std::string> args = {"--shard",       "s1",        "--broker",
                                         broker_endpoint, "--history", "h:*=100/10m"};
  std::optional<tu::Process> old_worker = Start("old", false, args);
  ASSERT_TRUE(old_worker);
  Client a, b;
  for (Client* c : {&a, &b}) {
    ASSERT_TRUE(c->Connect(port_));
    c->Send(Msg("1", "1", "h:room", "phx_join", json::object{}));
    ASSERT_TRUE(Ok(c->Reply("1"))) << tu::ReadFile(dir_.File("old.log"));
  }
  a.Send(Msg("1", "2", "h:room", "msg", json::object{{"n", 1}}));
  std::optional<json::array> first = a.Reply("2");
  ASSERT_TRUE(Ok(first)) << tu::ReadFile(dir_.File("old.log"));
  const json::object& r1 = first->at(4).at("response").as_object();
  const int64_t offset = r1.at("offset").to_number<int64_t>();
  const json::string epoch = r1.at("epoch").as_string();
  ASSERT_TRUE(b.Event("h:room", "msg"));
  a.Drain();
  b.Drain();

  std::string upgraded;
  std::optional<tu::Process> new_worker = HandOver(*old_worker, args, &upgraded);
  ASSERT_TRUE(new_worker);

  a.Send(Msg("1", "3", "h:room", "msg", json::object{{"n", 2}}));
  std::optional<json::array> second = a.Reply("3");
  ASSERT_TRUE(Ok(second)) << tu::ReadFile(dir_.File("new.log"));
  EXPECT_EQ(second->at(4).at("response").at("offset").to_number<int64_t>(), offset + 1);
  EXPECT_EQ(second->at(4).at("response").at("epoch").as_string(), epoch);
  std::optional<json::array> got = b.Event("h:room", "msg");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->at(1), json::string(std::to_string(offset + 1)));

  // A rejoin from the first offset recovers the second broadcast.
  Client c;
  ASSERT_TRUE(c.Connect(port_));
  c.Send(Msg("1", "1", "h:room", "phx_join",
             json::object{{"recover", {{"epoch", epoch}, {"offset", offset}}}}));
  std::optional<json::array> joined = c.Reply("1");
  ASSERT_TRUE(Ok(joined));
  EXPECT_EQ(joined->at(4).at("response").at("recovered"), true) << json::serialize(*joined);
  std::optional<json::array> recovered = c.Event("h:room", "msg");
  ASSERT_TRUE(recovered);
  EXPECT_EQ(recovered->at(4).at("n"), 2);
  ExpectUntouched(a);
  ExpectUntouched(b);
  ExpectExit(*new_worker, 0, /*term=*/true);
}

}  // namespace
}  // namespace sb
