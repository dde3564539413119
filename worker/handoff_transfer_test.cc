// HandoffTransfer: the state and its fds cross a SOCK_SEQPACKET socket whole,
// in chunks, a large connection split over several messages; a peer that
// goes away or answers out of turn is an error, not a hang.

#include "worker/handoff_transfer.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "common/mono_time.h"

namespace sb::worker::handoff {
namespace {

struct Pair {
  Pair() {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    old_end.Reset(sv[0]);
    new_end.Reset(sv[1]);
  }
  UniqueFd old_end, new_end;
};

// `n` open fds (of /dev/null) to send with as many connections.
struct Fds {
  explicit Fds(size_t n) {
    for (size_t i = 0; i < n; ++i) {
      owned.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
      fds.push_back(owned.back().get());
    }
  }
  operator std::span<const int>() const { return fds; }  // NOLINT: passed as the fds
  std::vector<UniqueFd> owned;
  std::vector<int> fds;
};

// Sends `conns` from the old end while the new end receives them on a
// thread and then does `answer` (acknowledge, refuse, go away); returns what
// SendState says.
template <typename F>
Status SendAndAnswer(Pair& p, const std::vector<Connection>& conns, F answer, size_t* sent) {
  const Fds fds(conns.size());
  std::thread receiver([&] {
    Result<Received> got = ReceiveState(p.new_end.get(), MonoNowMs() + 5000);
    EXPECT_TRUE(got.ok()) << got.status().message();
    answer();
  });
  Status s = SendState(p.old_end.get(), Session{}, conns, fds, MonoNowMs() + 5000, sent);
  receiver.join();
  return s;
}

std::vector<Connection> Connections(size_t n) {
  std::vector<Connection> out(n);
  for (size_t i = 0; i < n; ++i) {
    out[i].id = i + 1;
    out[i].channels.push_back({.topic = "room:" + std::to_string(i), .join_ref = "1"});
  }
  // One over a message on its own: a chunk of one, in several messages.
  out[7].outbound.push_back({.kind = 0, .bytes = std::string(300 * 1024, 'x')});
  return out;
}

TEST(HandoffTransferTest, TheWholeStateAndEveryFdArrive) {
  Pair p;
  const std::vector<Connection> conns = Connections(300);
  const Fds fds(conns.size());
  Session session;
  session.shard = "s1";
  session.instance = 42;
  session.presence_ref_prefix = "s1.";
  Status sent_status;
  size_t sent = 0;
  std::thread sender([&] {
    sent_status = SendState(p.old_end.get(), session, conns, fds, MonoNowMs() + 5000, &sent);
  });
  Result<Received> got = ReceiveState(p.new_end.get(), MonoNowMs() + 5000);
  ASSERT_TRUE(got.ok()) << got.status().message();
  EXPECT_TRUE(SendAck(p.new_end.get()).ok());
  sender.join();
  EXPECT_TRUE(sent_status.ok()) << sent_status.message();
  EXPECT_EQ(sent, conns.size());
  EXPECT_EQ(got->session.instance, 42u);
  EXPECT_EQ(got->session.connections, 300u);
  EXPECT_GE(got->session.chunks, 3u) << "253 at most, and the large one alone";
  EXPECT_EQ(got->connections, conns);
  ASSERT_EQ(got->fds.size(), conns.size());
  for (const UniqueFd& fd : got->fds) {
    struct stat st;
    ASSERT_EQ(::fstat(fd.get(), &st), 0);
    EXPECT_TRUE(S_ISCHR(st.st_mode));
  }
}

TEST(HandoffTransferTest, ANewProcessThatGoesAwayIsAnErrorWithWhatWasSent) {
  Pair p;
  const std::vector<Connection> conns = Connections(10);
  size_t sent = 0;
  // Gone without an acknowledgement.
  Status s = SendAndAnswer(
      p, conns, [&] { p.new_end.Reset(); }, &sent);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(sent, conns.size()) << "every chunk went: they are the new process's";
}

TEST(HandoffTransferTest, NoAcknowledgementInTimeIsAnError) {
  Pair p;
  size_t sent = 1;
  Status s = SendState(p.old_end.get(), Session{}, {}, {}, MonoNowMs() + 50, &sent);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("timed out"), std::string::npos) << s.message();
  EXPECT_EQ(sent, 0u);
}

TEST(HandoffTransferTest, TheReceiverRefusesWhatIsNotTheState) {
  Pair p;
  ASSERT_TRUE(SendAck(p.old_end.get()).ok());  // not a session record
  Result<Received> got = ReceiveState(p.new_end.get(), MonoNowMs() + 1000);
  EXPECT_FALSE(got.ok());
  Pair q;
  q.old_end.Reset();
  got = ReceiveState(q.new_end.get(), MonoNowMs() + 1000);
  EXPECT_FALSE(got.ok()) << "the old process went away";
}

TEST(HandoffTransferTest, TheSocketIsTheUsersAloneAndAStaleFileIsReplaced) {
  char dir[] = "/tmp/handoff_test_XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/shard.sock";
  {
    UniqueFd stale(::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
    ASSERT_GE(stale.get(), 0);
  }
  Result<UniqueFd> listener = ListenHandoff(path);
  ASSERT_TRUE(listener.ok()) << listener.status().message();
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_FALSE(AcceptHandoff(listener->get(), MonoNowMs() + 20).ok()) << "nobody came";
  Result<UniqueFd> old_end = ConnectHandoff(path);
  ASSERT_TRUE(old_end.ok()) << old_end.status().message();
  Result<UniqueFd> new_end = AcceptHandoff(listener->get(), MonoNowMs() + 1000);
  ASSERT_TRUE(new_end.ok()) << new_end.status().message();
  ASSERT_TRUE(SendAck(old_end->get()).ok());
  char buf[32];
  EXPECT_EQ(::recv(new_end->get(), buf, sizeof buf, 0), static_cast<ssize_t>(kAckMessage.size()));
  ::unlink(path.c_str());
  ::rmdir(dir);
}

TEST(HandoffTransferTest, ARefusalLeavesEveryConnectionWithTheOldProcess) {
  Pair p;
  const std::vector<Connection> conns = Connections(10);
  size_t sent = 0;
  Status s = SendAndAnswer(
      p, conns, [&] { EXPECT_TRUE(SendRefusal(p.new_end.get(), "no --broker here").ok()); }, &sent);
  EXPECT_EQ(s.code(), Status::Code::kRefused);
  EXPECT_NE(s.message().find("no --broker here"), std::string::npos) << s.message();
  EXPECT_EQ(sent, 0u);
}

}  // namespace
}  // namespace sb::worker::handoff
