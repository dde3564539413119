// tcp_listen: --listen forms, port 0, the bound port and address, and the
// errors that name what failed. Real sockets on the loopback interface.

#include "common/tcp_listen.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <string>

namespace sb {
namespace {

// True if a client can connect to 127.0.0.1:`port` and the listener accepts it.
bool AcceptsOn(int listen_fd, int port) {
  UniqueFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(client.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) return false;
  UniqueFd accepted(::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC));
  return accepted.valid();
}

bool HasMessage(const Status& s, const std::string& text) {
  return s.message().find(text) != std::string::npos;
}

TEST(TcpListenTest, PortZeroBindsAFreePortThatAccepts) {
  Result<UniqueFd> fd = ListenTcp("127.0.0.1", 0, 16);
  ASSERT_TRUE(fd.ok()) << fd.status().message();
  const int port = BoundPort(fd->get());
  EXPECT_GT(port, 0);
  EXPECT_EQ(BoundAddress(fd->get()), "127.0.0.1:" + std::to_string(port));
  EXPECT_TRUE(AcceptsOn(fd->get(), port));
}

TEST(TcpListenTest, TheSocketIsCloseOnExecAndBlocking) {
  Result<UniqueFd> fd = ListenTcp("127.0.0.1", 0, 16);
  ASSERT_TRUE(fd.ok()) << fd.status().message();
  EXPECT_TRUE(::fcntl(fd->get(), F_GETFD) & FD_CLOEXEC);
  EXPECT_FALSE(::fcntl(fd->get(), F_GETFL) & O_NONBLOCK);
}

TEST(TcpListenTest, ABoundPortCanBeBoundAgainOnlyAfterItIsClosed) {
  Result<UniqueFd> first = ListenTcp("127.0.0.1", 0, 16);
  ASSERT_TRUE(first.ok()) << first.status().message();
  const int port = BoundPort(first->get());
  Result<UniqueFd> second = ListenTcp("127.0.0.1", port, 16);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), Status::Code::kIoError);
  EXPECT_TRUE(HasMessage(second.status(), "unable to bind to 127.0.0.1:" + std::to_string(port) +
                                              ": Address already in use"))
      << second.status().message();
  // SO_REUSEADDR: a connection just closed (TIME_WAIT) does not hold the port.
  EXPECT_TRUE(AcceptsOn(first->get(), port));
  first->Reset();
  Result<UniqueFd> third = ListenTcp("127.0.0.1", port, 16);
  ASSERT_TRUE(third.ok()) << third.status().message();
  EXPECT_EQ(BoundPort(third->get()), port);
}

TEST(TcpListenTest, ReuseportSocketsShareAPortOnlyWithEachOther) {
  Result<UniqueFd> first = ListenTcp("127.0.0.1", 0, 16, /*reuseport=*/true);
  ASSERT_TRUE(first.ok()) << first.status().message();
  const int port = BoundPort(first->get());
  Result<UniqueFd> member = ListenTcp("127.0.0.1", port, 16, /*reuseport=*/true);
  ASSERT_TRUE(member.ok()) << member.status().message();
  EXPECT_EQ(BoundPort(member->get()), port);
  // A socket without the option cannot join (nor steal) the group's port.
  Result<UniqueFd> plain = ListenTcp("127.0.0.1", port, 16);
  EXPECT_FALSE(plain.ok());
}

TEST(TcpListenTest, AnAddressNotOnThisHostIsABindError) {
  // 192.0.2.0/24 is TEST-NET-1: never assigned to a local interface.
  Result<UniqueFd> fd = ListenTcp("192.0.2.1", 0, 16);
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.status().code(), Status::Code::kIoError);
  EXPECT_TRUE(HasMessage(fd.status(), "unable to bind to 192.0.2.1:0: ")) << fd.status().message();
}

TEST(TcpListenTest, IPv6LoopbackIsShownInBrackets) {
  Result<UniqueFd> fd = ListenTcp("::1", 0, 16);
  ASSERT_TRUE(fd.ok()) << fd.status().message();
  const int port = BoundPort(fd->get());
  EXPECT_GT(port, 0);
  EXPECT_EQ(BoundAddress(fd->get()), "[::1]:" + std::to_string(port));
}

TEST(TcpListenTest, SpecIsPortOrHostColonPort) {
  // "port" alone: 127.0.0.1.
  Result<UniqueFd> bare = ListenTcpSpec("0", 16);
  ASSERT_TRUE(bare.ok()) << bare.status().message();
  EXPECT_EQ(BoundAddress(bare->get()), "127.0.0.1:" + std::to_string(BoundPort(bare->get())));

  Result<UniqueFd> host_port = ListenTcpSpec("127.0.0.1:0", 16);
  ASSERT_TRUE(host_port.ok()) << host_port.status().message();
  EXPECT_TRUE(AcceptsOn(host_port->get(), BoundPort(host_port->get())));

  // The port given is the port bound.
  const int port = BoundPort(host_port->get());
  host_port->Reset();
  Result<UniqueFd> again = ListenTcpSpec("127.0.0.1:" + std::to_string(port), 16);
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_EQ(BoundPort(again->get()), port);
}

TEST(TcpListenTest, ASpecThatIsNotHostPortIsAConfigErrorNamingIt) {
  for (const char* bad : {"", "http", "127.0.0.1:", ":8080", "127.0.0.1:80x", "127.0.0.1:-1",
                          "127.0.0.1:65536", "8080 "}) {
    Result<UniqueFd> fd = ListenTcpSpec(bad, 16);
    ASSERT_FALSE(fd.ok()) << "'" << bad << "'";
    EXPECT_EQ(fd.status().code(), Status::Code::kInvalidConfig) << "'" << bad << "'";
    EXPECT_EQ(fd.status().message(), std::string("--listen ") + bad + ": expected host:port");
  }
}

TEST(TcpListenTest, SpecErrorsAfterParsingAreListenTcps) {
  Result<UniqueFd> fd = ListenTcpSpec("192.0.2.1:0", 16);
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.status().code(), Status::Code::kIoError);
  EXPECT_TRUE(HasMessage(fd.status(), "unable to bind to 192.0.2.1:0: ")) << fd.status().message();
}

TEST(TcpListenTest, NonIpSocketsHaveNoPortAndAreInherited) {
  UniqueFd unix_socket(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(unix_socket.valid());
  EXPECT_EQ(BoundPort(unix_socket.get()), 0);
  EXPECT_EQ(BoundAddress(unix_socket.get()), "inherited socket");
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd r(pipe_fds[0]), w(pipe_fds[1]);
  EXPECT_EQ(BoundPort(r.get()), 0);
  EXPECT_EQ(BoundAddress(r.get()), "inherited socket");
}

}  // namespace
}  // namespace sb
