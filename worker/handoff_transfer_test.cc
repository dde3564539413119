// HandoffTransfer: the state and its fds cross a SOCK_SEQPACKET socket whole,
// in chunks, a large connection split over several messages; a peer that
// goes away or answers out of turn is an error, not a hang.

#include "worker/handoff_transfer.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "common/mono_time.h"

namespace sb::worker::handoff {
namespace {

// The whole conversation at once, each side through its steps: the
// session, the connections with their fds, the end and the
// acknowledgement.
Status SendState(int sock, Session session, std::span<const Connection> connections,
                 std::span<const int> fds, int64_t deadline_ms) {
  StateSender sender(sock, deadline_ms, deadline_ms);
  Status s = sender.Begin(std::move(session), connections.size());
  if (s.ok()) s = sender.Send(connections, fds);
  if (s.ok()) s = sender.Finish();
  return s;
}

struct Received {
  Session session;
  std::vector<Connection> connections;
  std::vector<UniqueFd> fds;
};
Result<Received> ReceiveState(int sock, int64_t deadline_ms) {
  StateReceiver receiver(sock, deadline_ms);
  Received got;
  Result<Session> session = receiver.Begin();
  if (!session.ok()) return session.status();
  got.session = std::move(session).value();
  std::vector<Connection> conns;
  std::vector<UniqueFd> fds;
  for (;;) {
    Result<bool> more = receiver.Next(&conns, &fds);
    if (!more.ok()) return more.status();
    if (!*more) break;
    for (Connection& c : conns) got.connections.push_back(std::move(c));
    for (UniqueFd& fd : fds) got.fds.push_back(std::move(fd));
  }
  return got;
}

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
Status SendAndAnswer(Pair& p, const std::vector<Connection>& conns, F answer) {
  const Fds fds(conns.size());
  std::thread receiver([&] {
    Result<Received> got = ReceiveState(p.new_end.get(), MonoNowMs() + 5000);
    EXPECT_TRUE(got.ok()) << got.status().message();
    answer();
  });
  Status s = SendState(p.old_end.get(), Session{}, conns, fds, MonoNowMs() + 5000);
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
  if (n > 7) out[7].outbound.push_back({.kind = 0, .bytes = std::string(300 * 1024, 'x')});
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
  std::thread sender(
      [&] { sent_status = SendState(p.old_end.get(), session, conns, fds, MonoNowMs() + 5000); });
  Result<Received> got = ReceiveState(p.new_end.get(), MonoNowMs() + 5000);
  ASSERT_TRUE(got.ok()) << got.status().message();
  EXPECT_TRUE(SendAck(p.new_end.get()).ok());
  sender.join();
  EXPECT_TRUE(sent_status.ok()) << sent_status.message();
  EXPECT_EQ(got->session.instance, 42u);
  EXPECT_EQ(got->session.connections, 300u);
  EXPECT_EQ(got->session.chunks, 0u) << "sent as they are made, up to the end";
  EXPECT_EQ(got->connections, conns);
  ASSERT_EQ(got->fds.size(), conns.size());
  for (const UniqueFd& fd : got->fds) {
    struct stat st;
    ASSERT_EQ(::fstat(fd.get(), &st), 0);
    EXPECT_TRUE(S_ISCHR(st.st_mode));
  }
}

// Fds told apart by their inode: the read ends of pipes.
struct Pipes {
  explicit Pipes(size_t n) {
    for (size_t i = 0; i < n; ++i) {
      int p[2];
      EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
      reads.emplace_back(p[0]);
      writes.emplace_back(p[1]);
      fds.push_back(p[0]);
    }
  }
  static ino_t Inode(int fd) {
    struct stat st {};
    EXPECT_EQ(::fstat(fd, &st), 0);
    return st.st_ino;
  }
  std::vector<UniqueFd> reads, writes;
  std::vector<int> fds;
};

// The old process's first step as its loop takes it: the sockets, their
// end, then waiting for them to be taken (none of it blocks).
Status SendAhead(StateSender& sender, std::span<const uint64_t> ids, std::span<const int> fds) {
  const int64_t deadline = MonoNowMs() + 5000;
  for (size_t at = 0; at < ids.size();) {
    const size_t n = std::min(kMaxConnectionsPerChunk, ids.size() - at);
    Result<SendResult> sent = sender.TrySendSockets(ids.subspan(at, n), fds.subspan(at, n));
    if (!sent.ok()) return sent.status();
    if (*sent == SendResult::kSent) at += n;
    if (MonoNowMs() > deadline) return Status::IoError("no room in 5 s");
  }
  Result<bool> step = false;
  while (step.ok() && !*step && MonoNowMs() < deadline) step = sender.TryEndSockets();
  if (step.ok()) step = false;
  while (step.ok() && !*step && MonoNowMs() < deadline) step = sender.SocketsTaken();
  if (!step.ok()) return step.status();
  return *step ? Status::Ok() : Status::IoError("not taken in 5 s");
}

TEST(HandoffTransferTest, SocketsSentAheadAreMatchedToTheirStateAndTheUnclaimedDiscarded) {
  Pair p;
  // 300 connections' fds go ahead (two sockets records); then connection 5
  // closes, and 301 opens: the state names 1..300 but 5, and 301 with its fd.
  std::vector<Connection> all = Connections(301);
  all[7].outbound.clear();
  const Pipes pipes(301);
  std::vector<uint64_t> ahead_ids;
  for (size_t i = 0; i < 300; ++i) ahead_ids.push_back(all[i].id);
  std::vector<Connection> ahead, fresh = {all[300]};
  for (size_t i = 0; i < 300; ++i) {
    if (all[i].id != 5) ahead.push_back(all[i]);
  }
  std::vector<ino_t> prepared, discarded;
  std::mutex mu;
  Status sent_status;
  std::thread old_side([&] {
    StateSender sender(p.old_end.get(), MonoNowMs() + 5000, MonoNowMs() + 5000);
    sent_status = SendAhead(sender, ahead_ids, std::span<const int>(pipes.fds).first(300));
    if (sent_status.ok()) sent_status = sender.Begin(Session{}, ahead.size() + fresh.size());
    if (sent_status.ok()) sent_status = sender.Send(ahead, {});
    if (sent_status.ok()) {
      sent_status = sender.Send(fresh, std::span<const int>(pipes.fds).subspan(300));
    }
    if (sent_status.ok()) sent_status = sender.Finish();
  });
  Received got;
  {
    StateReceiver receiver(p.new_end.get(), MonoNowMs() + 5000);
    receiver.SetSocketHooks(
        [&](UniqueFd& fd) {
          std::lock_guard lock(mu);
          prepared.push_back(Pipes::Inode(fd.get()));
        },
        [&](int fd) {
          std::lock_guard lock(mu);
          discarded.push_back(Pipes::Inode(fd));
        });
    Result<Session> session = receiver.Begin();
    ASSERT_TRUE(session.ok()) << session.status().message();
    EXPECT_EQ(prepared.size(), 300u) << "every fd sent ahead is prepared as it comes";
    std::vector<Connection> conns;
    std::vector<UniqueFd> fds;
    for (;;) {
      Result<bool> more = receiver.Next(&conns, &fds);
      ASSERT_TRUE(more.ok()) << more.status().message();
      if (!*more) break;
      ASSERT_EQ(conns.size(), fds.size());
      for (size_t i = 0; i < conns.size(); ++i) {
        got.connections.push_back(std::move(conns[i]));
        got.fds.push_back(std::move(fds[i]));
      }
    }
    EXPECT_TRUE(SendAck(p.new_end.get()).ok());
  }
  old_side.join();
  EXPECT_TRUE(sent_status.ok()) << sent_status.message();
  ASSERT_EQ(got.connections.size(), 300u);
  for (size_t i = 0; i < got.connections.size(); ++i) {
    const uint64_t id = got.connections[i].id;
    ASSERT_GE(id, 1u);
    ASSERT_LE(id, 301u);
    EXPECT_NE(id, 5u);
    EXPECT_EQ(got.connections[i], all[id - 1]);
    EXPECT_EQ(Pipes::Inode(got.fds[i].get()), Pipes::Inode(pipes.fds[id - 1]))
        << "connection " << id << " came with another's socket";
  }
  EXPECT_EQ(prepared.size(), 301u) << "the fd that came with its state is prepared too";
  EXPECT_EQ(discarded, std::vector<ino_t>{Pipes::Inode(pipes.fds[4])});
}

TEST(HandoffTransferTest, AChunkNamingAConnectionWhoseSocketDidNotComeIsRefused) {
  Pair p;
  const std::vector<Connection> conns = Connections(3);
  const Fds fds(2);
  Status sent_status;
  std::thread old_side([&] {
    StateSender sender(p.old_end.get(), MonoNowMs() + 5000, MonoNowMs() + 5000);
    const std::vector<uint64_t> ids = {1, 2};
    sent_status = SendAhead(sender, ids, fds);
    if (sent_status.ok()) sent_status = sender.Begin(Session{}, 3);
    if (sent_status.ok()) sent_status = sender.Send(conns, {});
  });
  StateReceiver receiver(p.new_end.get(), MonoNowMs() + 5000);
  ASSERT_TRUE(receiver.Begin().ok());
  std::vector<Connection> got;
  std::vector<UniqueFd> got_fds;
  Result<bool> more = receiver.Next(&got, &got_fds);
  ASSERT_FALSE(more.ok());
  EXPECT_EQ(more.status().code(), Status::Code::kRefused);
  EXPECT_NE(more.status().message().find("connection 3 came without its socket"), std::string::npos)
      << more.status().message();
  old_side.join();
  EXPECT_TRUE(sent_status.ok()) << sent_status.message();
}

TEST(HandoffTransferTest, ANewProcessThatGoesAwayIsAnError) {
  Pair p;
  const std::vector<Connection> conns = Connections(10);
  // Gone without an acknowledgement.
  Status s = SendAndAnswer(p, conns, [&] { p.new_end.Reset(); });
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.code(), Status::Code::kRefused);
}

TEST(HandoffTransferTest, NoAcknowledgementInTimeIsAnError) {
  Pair p;
  Status s = SendState(p.old_end.get(), Session{}, {}, {}, MonoNowMs() + 50);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("timed out"), std::string::npos) << s.message();
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
  Status s = SendAndAnswer(
      p, conns, [&] { EXPECT_TRUE(SendRefusal(p.new_end.get(), "no --broker here").ok()); });
  EXPECT_EQ(s.code(), Status::Code::kRefused);
  EXPECT_NE(s.message().find("no --broker here"), std::string::npos) << s.message();
}

// The new process refuses after the session record, without reading the
// chunks and the end already sent, and exits: its close with data unread
// makes the old end's next read fail (ECONNRESET) before the refusal
// queued there, which is still the answer.
TEST(HandoffTransferTest, ARefusalWithChunksUnreadIsStillARefusal) {
  Pair p;
  const std::vector<Connection> conns = Connections(3);
  const Fds fds(conns.size());
  StateSender sender(p.old_end.get(), MonoNowMs() + 5000, MonoNowMs() + 5000);
  StateReceiver receiver(p.new_end.get(), MonoNowMs() + 5000);
  ASSERT_TRUE(sender.Begin(Session{}, conns.size()).ok());
  ASSERT_TRUE(receiver.Begin().ok());
  ASSERT_TRUE(sender.Send(conns, fds).ok());
  int queued = 0;
  ASSERT_EQ(::ioctl(p.old_end.get(), SIOCOUTQ, &queued), 0);
  Status s;
  std::thread old_process([&] { s = sender.Finish(); });
  // Until the end is queued too (the bytes the peer has not read grow).
  const int64_t give_up = MonoNowMs() + 5000;
  for (int now = queued; now == queued;) {
    ASSERT_LT(MonoNowMs(), give_up) << "the end was never queued";
    ASSERT_EQ(::ioctl(p.old_end.get(), SIOCOUTQ, &now), 0);
  }
  ASSERT_TRUE(SendRefusal(p.new_end.get(), "no --broker here").ok());
  p.new_end.Reset();
  old_process.join();
  EXPECT_EQ(s.code(), Status::Code::kRefused) << s.message();
  EXPECT_NE(s.message().find("no --broker here"), std::string::npos) << s.message();
}

TEST(HandoffTransferTest, ChunksArriveOneByOneAsTheyAreSent) {
  Pair p;
  const std::vector<Connection> conns = Connections(20);
  const Fds fds(conns.size());
  StateSender sender(p.old_end.get(), MonoNowMs() + 5000, MonoNowMs() + 5000);
  StateReceiver receiver(p.new_end.get(), MonoNowMs() + 5000);
  ASSERT_TRUE(sender.Begin(Session{}, conns.size()).ok());
  Result<Session> session = receiver.Begin();
  ASSERT_TRUE(session.ok()) << session.status().message();
  EXPECT_EQ(session->connections, 20u);
  std::vector<Connection> got;
  std::vector<UniqueFd> got_fds;
  // The first batch is taken before the second is even made.
  ASSERT_TRUE(sender.Send(std::span(conns).first(5), std::span(fds.fds).first(5)).ok());
  Result<bool> more = receiver.Next(&got, &got_fds);
  ASSERT_TRUE(more.ok()) << more.status().message();
  EXPECT_TRUE(*more);
  EXPECT_EQ(got, std::vector<Connection>(conns.begin(), conns.begin() + 5));
  EXPECT_EQ(got_fds.size(), 5u);
  size_t total = got.size();
  // The rest (one connection larger than the socket's buffer) while the
  // receiver reads.
  std::thread acker([&] {
    for (;;) {
      Result<bool> m = receiver.Next(&got, &got_fds);
      ASSERT_TRUE(m.ok()) << m.status().message();
      if (!*m) break;
      total += got.size();
    }
    EXPECT_TRUE(SendAck(p.new_end.get()).ok());
  });
  EXPECT_TRUE(sender.Send(std::span(conns).subspan(5), std::span(fds.fds).subspan(5)).ok());
  EXPECT_TRUE(sender.Finish().ok());
  acker.join();
  EXPECT_EQ(total, 20u);
}

TEST(HandoffTransferTest, FewerConnectionsThanAnnouncedOrAnAbortAreRefused) {
  {
    Pair p;
    const std::vector<Connection> conns = Connections(3);
    const Fds fds(conns.size());
    StateSender sender(p.old_end.get(), MonoNowMs() + 5000, MonoNowMs() + 100);
    StateReceiver receiver(p.new_end.get(), MonoNowMs() + 5000);
    ASSERT_TRUE(sender.Begin(Session{}, 4).ok());
    ASSERT_TRUE(sender.Send(conns, fds).ok());
    EXPECT_FALSE(sender.Finish().ok()) << "no acknowledgement comes";
    ASSERT_TRUE(receiver.Begin().ok());
    std::vector<Connection> got;
    std::vector<UniqueFd> got_fds;
    ASSERT_TRUE(receiver.Next(&got, &got_fds).ok());
    Result<bool> end = receiver.Next(&got, &got_fds);
    EXPECT_EQ(end.status().code(), Status::Code::kRefused);
    EXPECT_NE(end.status().message().find("3 connections came, 4 announced"), std::string::npos)
        << end.status().message();
  }
  {
    Pair p;
    StateSender sender(p.old_end.get(), MonoNowMs() + 5000, MonoNowMs() + 5000);
    StateReceiver receiver(p.new_end.get(), MonoNowMs() + 5000);
    ASSERT_TRUE(sender.Begin(Session{}, 4).ok());
    sender.Abort();
    ASSERT_TRUE(receiver.Begin().ok());
    std::vector<Connection> got;
    std::vector<UniqueFd> got_fds;
    Result<bool> next = receiver.Next(&got, &got_fds);
    EXPECT_EQ(next.status().code(), Status::Code::kRefused);
    EXPECT_NE(next.status().message().find("called it off"), std::string::npos);
  }
}

// The old process is another process here: whether it has ended is what
// the new one decides on when the socket closes before the end.
TEST(HandoffTransferTest, TheReceiverTellsTheOldProcessEndingFromItLivingOn) {
  char dir[] = "/tmp/handoff_test_XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/shard.sock";
  Result<UniqueFd> listener = ListenHandoff(path);
  ASSERT_TRUE(listener.ok()) << listener.status().message();
  const std::vector<Connection> conns = Connections(2);
  const Fds fds(conns.size());
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Sends the session and a part of what it announced, then dies.
    Result<UniqueFd> c = ConnectHandoff(path);
    if (!c.ok()) ::_exit(1);
    StateSender sender(c->get(), MonoNowMs() + 5000, MonoNowMs() + 5000);
    const bool ok = sender.Begin(Session{}, 10).ok() && sender.Send(conns, fds).ok();
    ::_exit(ok ? 0 : 1);
  }
  Result<UniqueFd> conn = AcceptHandoff(listener->get(), MonoNowMs() + 5000);
  ASSERT_TRUE(conn.ok()) << conn.status().message();
  StateReceiver receiver(conn->get(), MonoNowMs() + 5000);
  ASSERT_TRUE(receiver.Begin().ok());
  std::vector<Connection> got;
  std::vector<UniqueFd> got_fds;
  Result<bool> more = receiver.Next(&got, &got_fds);
  ASSERT_TRUE(more.ok()) << more.status().message();
  EXPECT_EQ(got, conns);
  Result<bool> next = receiver.Next(&got, &got_fds);
  EXPECT_EQ(next.status().code(), Status::Code::kIoError) << next.status().message();
  EXPECT_TRUE(receiver.OldProcessEnded(5000));
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  // A peer that lives on (this very process) has not ended.
  Pair p;
  StateReceiver alive(p.new_end.get(), MonoNowMs() + 5000);
  EXPECT_FALSE(alive.OldProcessEnded(20));
  ::unlink(path.c_str());
  ::rmdir(dir);
}

}  // namespace
}  // namespace sb::worker::handoff
