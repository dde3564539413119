// The real switchboard-broker, reached by raw ZeroMQ DEALERs that speak the
// mesh protocol by hand: what anything that reaches the broker's endpoint
// can and cannot do (docs/PROTOCOL.md, Transport and Session).

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <deque>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "protocol/mesh.h"
#include "tests/testutil/testutil.h"

namespace sb {
namespace {

using namespace std::chrono_literals;
namespace tu = testutil;

constexpr auto kDeadline = 10s;

// One mesh message as received, its views copied.
struct Got {
  mesh::Type type;
  uint64_t epoch = 0, seq = 0, origin = 0;
  std::string topic, body;
};

// A shard as far as the broker can tell: a DEALER and the mesh encoding.
class Peer {
 public:
  Peer(zmq::context_t& ctx, const std::string& endpoint) : socket_(ctx, zmq::socket_type::dealer) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.connect(endpoint);
  }

  zmq::socket_t& socket() { return socket_; }

  void Send(const mesh::Message& m) {
    const mesh::Frames frames(m);
    std::vector<zmq::const_buffer> parts;
    for (std::string_view f : frames.views()) parts.emplace_back(f.data(), f.size());
    ASSERT_TRUE(zmq::send_multipart(socket_, parts));
  }
  void Hello(uint64_t instance, const std::string& token, std::vector<std::string> topics) {
    mesh::Hello h{.shard = "s" + std::to_string(instance),
                  .instance = instance,
                  .window = 100,
                  .token = token,
                  .outbox = 100,
                  .acked = 0,
                  .topics = std::move(topics)};
    const std::string body = mesh::EncodeHello(h);
    Send({.type = mesh::Type::kHello, .body = body});
  }

  // The next message, the messages of a batch one by one; nullopt if none
  // comes before the deadline.
  std::optional<Got> Next(std::chrono::milliseconds deadline = kDeadline) {
    while (pending_.empty()) {
      zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
      if (zmq::poll(&item, 1, deadline) == 0) return std::nullopt;
      std::vector<zmq::message_t> parts;
      if (!zmq::recv_multipart(socket_, std::back_inserter(parts))) return std::nullopt;
      std::vector<std::string_view> frames;
      for (const zmq::message_t& p : parts) frames.push_back(p.to_string_view());
      mesh::Message m;
      if (!mesh::Decode(frames, &m).ok()) {
        ADD_FAILURE() << "the broker sent something that is not mesh v1";
        return std::nullopt;
      }
      if (m.type != mesh::Type::kBatch) {
        Keep(m);
        continue;
      }
      Status s = mesh::ForEachInBatch(m.body, [&](std::span<const std::string_view> inner) {
        mesh::Message one;
        if (mesh::Decode(inner, &one).ok()) Keep(one);
      });
      EXPECT_TRUE(s.ok()) << s.message();
    }
    Got g = pending_.front();
    pending_.pop_front();
    return g;
  }
  // The next message of `type`, skipping the others (heartbeats, snapshots).
  std::optional<Got> NextOf(mesh::Type type) {
    for (;;) {
      std::optional<Got> g = Next();
      if (!g || g->type == type) return g;
    }
  }

 private:
  void Keep(const mesh::Message& m) {
    pending_.push_back(
        {m.type, m.epoch, m.seq, m.origin, std::string(m.topic), std::string(m.body)});
  }
  zmq::socket_t socket_;
  std::deque<Got> pending_;
};

class BrokerEndpointTest : public ::testing::Test {
 protected:
  // Starts the broker on ipc://<dir>/broker.
  void Start(const std::string& dir) {
    endpoint_ = "ipc://" + dir + "/broker";
    log_ = tmp_.File("broker.log");
    // Short heartbeats for a short settle window; many misses, as the peers
    // here do not heartbeat.
    auto p = tu::Process::Start(
        tu::BinPath("switchboard-broker"),
        {.args = {"--bind", endpoint_, "--heartbeat-ms", "100", "--misses", "100"},
         .output = log_});
    ASSERT_TRUE(p.ok()) << p.status().message();
    broker_.emplace(std::move(p).value());
  }

  tu::TempDir tmp_;
  std::string endpoint_, log_;
  std::optional<tu::Process> broker_;
  zmq::context_t ctx_;
};

TEST_F(BrokerEndpointTest, TheIpcSocketIsOwnerOnly) {
  Start(tmp_.path());
  const std::string path = tmp_.File("broker");
  struct stat st {};
  ASSERT_TRUE(tu::WaitUntil([&] { return ::stat(path.c_str(), &st) == 0; }, kDeadline))
      << tu::ReadFile(log_);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  Peer shard(ctx_, endpoint_);
  shard.Hello(1, std::string(32, 'a'), {});
  ASSERT_TRUE(shard.NextOf(mesh::Type::kWelcome)) << "and it serves";
}

TEST_F(BrokerEndpointTest, ADirectoryOthersMayWriteIsRefusedAtStart) {
  const std::string open = tmp_.File("open");
  ASSERT_EQ(::mkdir(open.c_str(), 0700), 0);
  ASSERT_EQ(::chmod(open.c_str(), 0777), 0);
  Start(open);
  int status = 0;
  ASSERT_TRUE(broker_->WaitExit(kDeadline, &status));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << tu::DescribeWaitStatus(status);
  EXPECT_NE(tu::ReadFile(log_).find("writable by group or others"), std::string::npos)
      << tu::ReadFile(log_);
  struct stat st {};
  EXPECT_NE(::stat((open + "/broker").c_str(), &st), 0) << "nothing was bound";
}

TEST_F(BrokerEndpointTest, AnotherConnectionCannotTakeALiveShardsSession) {
  Start(tmp_.path());
  Peer a(ctx_, endpoint_), b(ctx_, endpoint_), intruder(ctx_, endpoint_);
  a.Hello(0xa, std::string(32, 'a'), {"room:1"});
  ASSERT_TRUE(a.NextOf(mesh::Type::kWelcome));
  b.Hello(0xb, std::string(32, 'b'), {});
  ASSERT_TRUE(b.NextOf(mesh::Type::kWelcome));

  // Instance 0xa is in every delivery a's broadcasts make; its token is not.
  intruder.Hello(0xa, std::string(32, 'f'), {"room:1"});
  intruder.Send({.type = mesh::Type::kHeartbeat});
  std::optional<Got> first = intruder.Next();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->type, mesh::Type::kReset) << "refused: no welcome came first";

  // The broker settles (2 × 100 ms + 500 ms) before it routes.
  const std::string body = R"([null,null,"room:1","shout",{}])";
  b.Send({.type = mesh::Type::kPublish, .seq = 1, .topic = "room:1", .body = body});
  std::optional<Got> got = a.NextOf(mesh::Type::kDeliver);
  ASSERT_TRUE(got) << "a's session is still a's";
  EXPECT_EQ(got->origin, 0xbu);
  EXPECT_EQ(got->body, body);

  // A seq that would make b's later publishes duplicates changes nothing.
  b.Send({.type = mesh::Type::kPublish, .seq = UINT64_MAX, .topic = "room:1", .body = body});
  b.Send({.type = mesh::Type::kPublish, .seq = 2, .topic = "room:1", .body = body});
  got = a.NextOf(mesh::Type::kDeliver);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->seq, 2u);
}

TEST_F(BrokerEndpointTest, AFrameOverTheBoundCostsItsSenderTheConnectionNotTheBroker) {
  Start(tmp_.path());
  Peer big(ctx_, endpoint_);
  zmq::monitor_t monitor;
  monitor.init(big.socket(), "inproc://big-monitor", ZMQ_EVENT_DISCONNECTED);
  big.Hello(0xc, std::string(32, 'c'), {});
  ASSERT_TRUE(big.NextOf(mesh::Type::kWelcome));
  const std::string huge(mesh::kMaxFrameBytes + 1, 'x');
  big.Send({.type = mesh::Type::kHello, .body = huge});
  ASSERT_TRUE(tu::WaitUntil([&] { return monitor.check_event(10); }, kDeadline))
      << "the broker drops a connection that sends a frame over 64 MiB";

  Peer other(ctx_, endpoint_);
  other.Hello(0xd, std::string(32, 'd'), {});
  EXPECT_TRUE(other.NextOf(mesh::Type::kWelcome)) << "and goes on serving";
  EXPECT_TRUE(broker_->Running());
}

}  // namespace
}  // namespace sb
