// ListenSockets: shared and round_robin sockets on the loopback interface,
// the members a scale adds or removes, and which member each connection
// reaches (accepted straight from the daemon-side fds). The round_robin
// turn needs CAP_BPF; these tests run as root like the rest of tests/.

#include "supervisor/listen_sockets.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/tcp_listen.h"
#include "common/unique_fd.h"

namespace sb::supervisor {
namespace {

SocketSpec Spec(Balance balance) {
  SocketSpec s;
  s.name = "gateway";
  s.host = "127.0.0.1";
  s.port = 0;
  s.backlog = 256;
  s.balance = balance;
  return s;
}

ListenSockets Bound(Balance balance, int members, bool use_bpf) {
  Result<ListenSockets> s = ListenSockets::Bind({Spec(balance)}, {{"gateway", members}}, use_bpf);
  EXPECT_TRUE(s.ok()) << s.status().message();
  return s.ok() ? std::move(s.value()) : ListenSockets{};
}

// Opens `n` connections to `port` and returns, for each fd in `fds`, how
// many it accepted (the kernel queues a loopback connection before connect
// returns, so nothing is waited for).
std::vector<int> Deal(int port, int n, const std::vector<int>& fds) {
  std::vector<UniqueFd> clients;
  for (int i = 0; i < n; ++i) {
    UniqueFd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(c.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    clients.push_back(std::move(c));
  }
  std::vector<int> counts;
  for (int fd : fds) {
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    int accepted = 0;
    for (UniqueFd c(::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC)); c.valid();
         c = UniqueFd(::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC))) {
      ++accepted;
    }
    counts.push_back(accepted);
  }
  return counts;
}

std::vector<int> FdsFor(ListenSockets& s, int replicas) {
  std::vector<int> fds;
  for (int i = 0; i < replicas; ++i) {
    Result<int> fd = s.FdFor("gateway", i, "shard." + std::to_string(i));
    EXPECT_TRUE(fd.ok()) << fd.status().message();
    fds.push_back(fd.ok() ? fd.value() : -1);
  }
  return fds;
}

TEST(ListenSocketsTest, ASharedSocketIsOneFdForEveryReplica) {
  ListenSockets s = Bound(Balance::kShared, 1, true);
  std::vector<int> fds = FdsFor(s, 2);
  EXPECT_EQ(fds[0], fds[1]);
  EXPECT_EQ(s.members("gateway"), 1);
  EXPECT_EQ(s.Modes(), (std::map<std::string, std::string>{{"gateway", "shared"}}));
}

TEST(ListenSocketsTest, RoundRobinDealsConnectionsToTheMembersInTurn) {
  ListenSockets s = Bound(Balance::kRoundRobin, 3, true);
  ASSERT_EQ(s.Modes(), (std::map<std::string, std::string>{{"gateway", "round_robin"}}));
  std::vector<int> fds = FdsFor(s, 3);
  EXPECT_EQ(std::set<int>(fds.begin(), fds.end()).size(), 3u);
  for (int fd : fds) EXPECT_EQ(BoundPort(fd), s.port("gateway"));
  EXPECT_EQ(Deal(s.port("gateway"), 300, fds), (std::vector<int>{100, 100, 100}));
}

TEST(ListenSocketsTest, AReplicaStartedAfterAScaleUpGetsANewMemberInTheTurn) {
  ListenSockets s = Bound(Balance::kRoundRobin, 1, true);
  EXPECT_EQ(s.members("gateway"), 1);
  std::vector<int> fds = FdsFor(s, 2);
  EXPECT_EQ(s.members("gateway"), 2);
  EXPECT_EQ(BoundPort(fds[1]), s.port("gateway"));
  EXPECT_EQ(Deal(s.port("gateway"), 100, fds), (std::vector<int>{50, 50}));
}

TEST(ListenSocketsTest, ARemovedReplicasMemberClosesAndTheTurnSkipsIt) {
  ListenSockets s = Bound(Balance::kRoundRobin, 3, true);
  std::vector<int> fds = FdsFor(s, 3);
  s.ReleaseMembers({"shard.0", "shard.1", "shard.2"});  // all still in the tree
  EXPECT_EQ(s.members("gateway"), 3);
  s.ReleaseMembers({"shard.0", "shard.1"});
  EXPECT_EQ(s.members("gateway"), 2);
  EXPECT_EQ(Deal(s.port("gateway"), 100, {fds[0], fds[1]}), (std::vector<int>{50, 50}));
  // Member 0 holds the port even when the whole set is gone.
  s.ReleaseMembers({});
  EXPECT_EQ(s.members("gateway"), 1);
  EXPECT_EQ(Deal(s.port("gateway"), 10, {fds[0]}), (std::vector<int>{10}));
}

TEST(ListenSocketsTest, WithoutTheProgramTheKernelsHashReachesEveryMember) {
  ListenSockets s = Bound(Balance::kRoundRobin, 4, /*use_bpf=*/false);
  EXPECT_EQ(s.Modes(), (std::map<std::string, std::string>{{"gateway", "reuseport_hash"}}));
  std::vector<int> counts = Deal(s.port("gateway"), 400, FdsFor(s, 4));
  int total = 0;
  for (int c : counts) {
    // Binomial(400, 1/4): none of 4 members gets nothing but with ~1e-49.
    EXPECT_GT(c, 0);
    total += c;
  }
  EXPECT_EQ(total, 400);
}

TEST(ListenSocketsTest, AnUnknownSocketIsNotFound) {
  ListenSockets s = Bound(Balance::kShared, 1, true);
  Result<int> fd = s.FdFor("admin", 0, "x");
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.status().code(), Status::Code::kNotFound);
}

}  // namespace
}  // namespace sb::supervisor
