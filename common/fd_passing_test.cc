#include "common/fd_passing.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace sb {
namespace {

struct Pair {
  UniqueFd a, b;
};

Pair SeqPacketPair(int flags = 0) {
  int sv[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | flags, 0, sv), 0);
  return {UniqueFd(sv[0]), UniqueFd(sv[1])};
}

size_t OpenFds() {
  size_t n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n - 1;  // the directory's own fd
}

// `n` pipes' write ends; the read ends in *readers.
std::vector<UniqueFd> Pipes(size_t n, std::vector<UniqueFd>* readers) {
  std::vector<UniqueFd> writers;
  for (size_t i = 0; i < n; ++i) {
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    readers->emplace_back(p[0]);
    writers.emplace_back(p[1]);
  }
  return writers;
}

std::vector<int> Raw(const std::vector<UniqueFd>& fds) {
  std::vector<int> raw;
  for (const UniqueFd& f : fds) raw.push_back(f.get());
  return raw;
}

void SendAndCheck(size_t count) {
  Pair s = SeqPacketPair();
  std::vector<UniqueFd> readers;
  std::vector<UniqueFd> writers = Pipes(count, &readers);
  const std::string bytes = "chunk of " + std::to_string(count);
  Result<SendResult> sent = SendFds(s.a.get(), bytes, Raw(writers));
  ASSERT_TRUE(sent.ok()) << sent.status().message();
  EXPECT_EQ(*sent, SendResult::kSent);

  Result<FdMessage> got = ReceiveFds(s.b.get());
  ASSERT_TRUE(got.ok()) << got.status().message();
  EXPECT_EQ(got->kind, FdMessage::Kind::kMessage);
  EXPECT_EQ(got->bytes, bytes);
  ASSERT_EQ(got->fds.size(), count);
  // Each fd received is the same open file as the one sent in its place:
  // what is written through it comes out of that pipe's read end.
  for (size_t i = 0; i < count; ++i) {
    EXPECT_NE(got->fds[i].get(), writers[i].get());
    EXPECT_EQ(::fcntl(got->fds[i].get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    const std::string tag = std::to_string(i);
    ASSERT_EQ(::write(got->fds[i].get(), tag.data(), tag.size()), static_cast<ssize_t>(tag.size()));
    char buf[16];
    const ssize_t n = ::read(readers[i].get(), buf, sizeof(buf));
    ASSERT_GT(n, 0);
    EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), tag);
  }
}

TEST(FdPassingTest, NoFds) { SendAndCheck(0); }
TEST(FdPassingTest, OneFd) { SendAndCheck(1); }
TEST(FdPassingTest, MostFdsTheKernelTakes) { SendAndCheck(kMaxFdsPerMessage); }

TEST(FdPassingTest, OneFdTooManyIsRefusedAndNothingIsSent) {
  Pair s = SeqPacketPair(SOCK_NONBLOCK);
  std::vector<UniqueFd> readers;
  std::vector<UniqueFd> writers = Pipes(kMaxFdsPerMessage + 1, &readers);
  Result<SendResult> sent = SendFds(s.a.get(), "x", Raw(writers));
  ASSERT_FALSE(sent.ok());
  EXPECT_EQ(sent.status().code(), Status::Code::kRefused);
  EXPECT_NE(sent.status().message().find("254 fds"), std::string::npos) << sent.status().message();
  Result<FdMessage> got = ReceiveFds(s.b.get());
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->kind, FdMessage::Kind::kWouldBlock);
}

TEST(FdPassingTest, BoundsOnBytes) {
  Pair s = SeqPacketPair();
  EXPECT_FALSE(SendFds(s.a.get(), "", {}).ok());
  EXPECT_FALSE(SendFds(s.a.get(), std::string(kMaxFdMessageBytes + 1, 'x'), {}).ok());
  // The largest message goes through a socket with the default buffer.
  const std::string big(kMaxFdMessageBytes, 'y');
  Result<SendResult> sent = SendFds(s.a.get(), big, {});
  ASSERT_TRUE(sent.ok()) << sent.status().message();
  Result<FdMessage> got = ReceiveFds(s.b.get());
  ASSERT_TRUE(got.ok()) << got.status().message();
  EXPECT_EQ(got->bytes, big);
}

TEST(FdPassingTest, TruncatedMessageIsRefusedAndItsFdsClosed) {
  Pair s = SeqPacketPair();
  std::vector<UniqueFd> readers;
  std::vector<UniqueFd> writers = Pipes(10, &readers);
  const size_t before = OpenFds();
  ASSERT_TRUE(SendFds(s.a.get(), "twelve bytes", Raw(writers)).ok());
  Result<FdMessage> got = ReceiveFds(s.b.get(), 4);
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("MSG_TRUNC"), std::string::npos) << got.status().message();
  EXPECT_EQ(OpenFds(), before);
}

TEST(FdPassingTest, FdsCutByTheKernelAreRefusedAndClosed) {
  // SO_PASSCRED makes the kernel put the sender's credentials first in the
  // control buffer, leaving room for fewer than 253 fds: it installs those
  // that fit, drops the rest and says MSG_CTRUNC.
  Pair s = SeqPacketPair();
  const int on = 1;
  ASSERT_EQ(::setsockopt(s.b.get(), SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)), 0);
  std::vector<UniqueFd> readers;
  std::vector<UniqueFd> writers = Pipes(kMaxFdsPerMessage, &readers);
  const size_t before = OpenFds();
  ASSERT_TRUE(SendFds(s.a.get(), "chunk", Raw(writers)).ok());
  Result<FdMessage> got = ReceiveFds(s.b.get());
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("MSG_CTRUNC"), std::string::npos) << got.status().message();
  EXPECT_EQ(OpenFds(), before);
}

TEST(FdPassingTest, NonBlockingSendWouldBlockWhenTheBufferIsFull) {
  Pair s = SeqPacketPair(SOCK_NONBLOCK);
  const std::string chunk(16 * 1024, 'z');
  size_t sent = 0;
  for (;;) {
    Result<SendResult> r = SendFds(s.a.get(), chunk, {});
    ASSERT_TRUE(r.ok()) << r.status().message();
    if (*r == SendResult::kWouldBlock) break;
    ++sent;
    ASSERT_LT(sent, 100000u) << "the socket never filled";
  }
  EXPECT_GT(sent, 0u);
  // Every message sent comes out whole, then nothing.
  for (size_t i = 0; i < sent; ++i) {
    Result<FdMessage> got = ReceiveFds(s.b.get());
    ASSERT_TRUE(got.ok());
    ASSERT_EQ(got->kind, FdMessage::Kind::kMessage);
    EXPECT_EQ(got->bytes.size(), chunk.size());
  }
  Result<FdMessage> got = ReceiveFds(s.b.get());
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->kind, FdMessage::Kind::kWouldBlock);
}

// The kernel counts the fds a user has sent and not yet had received, and
// refuses more than its RLIMIT_NOFILE (without CAP_SYS_RESOURCE): a sender
// must hear that apart from a full buffer, since the socket stays writable.
// Tried in a child that drops to `nobody` with a limit of 8.
TEST(FdPassingTest, TooManyFdsInFlightIsSaidApartFromAFullBuffer) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root, to become another user with a low limit";
  Pair s = SeqPacketPair(SOCK_NONBLOCK);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    const rlimit low{8, 8};
    if (::setrlimit(RLIMIT_NOFILE, &low) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
        ::setresuid(65534, 65534, 65534) != 0) {
      ::_exit(3);
    }
    // Ten copies of one fd: ten in flight once sent, more than the limit.
    const std::vector<int> ten(10, s.a.get());
    Result<SendResult> first = SendFds(s.a.get(), "ten", ten);
    if (!first.ok() || *first != SendResult::kSent) ::_exit(4);
    Result<SendResult> second = SendFds(s.a.get(), "more", ten);
    if (!second.ok()) ::_exit(5);
    ::_exit(*second == SendResult::kTooManyInFlight ? 0 : 6);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "3: could not drop to nobody, 4: first not sent, "
                                       "5: an error, 6: not told apart";
  // Received, they are in flight no more.
  Result<FdMessage> got = ReceiveFds(s.b.get());
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->fds.size(), 10u);
}

TEST(FdPassingTest, PeerCloseReadsAsClosed) {
  Pair s = SeqPacketPair();
  s.a.Reset();
  Result<FdMessage> got = ReceiveFds(s.b.get());
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->kind, FdMessage::Kind::kClosed);
  Result<SendResult> sent = SendFds(s.b.get(), "x", {});
  ASSERT_FALSE(sent.ok());
  EXPECT_EQ(sent.status().code(), Status::Code::kIoError);
}

}  // namespace
}  // namespace sb
