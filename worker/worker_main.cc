// switchboard-worker: a gateway shard. For now a stand-in that does what the
// supervisor expects of a shard: it takes the listening socket it inherited
// (LISTEN_FDS) or binds --listen itself, reports READY=1, answers every
// connection with HTTP 503 (the WebSocket gateway is not built yet), and
// exits 0 on SIGTERM.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include "common/event_loop.h"
#include "common/exit_codes.h"
#include "common/listen_fds.h"
#include "common/log.h"
#include "common/sd_notify.h"
#include "common/signal_fd.h"
#include "common/unique_fd.h"

int main(int argc, char** argv) {
  CLI::App app{"switchboard-worker: gateway shard (placeholder)"};
  std::string shard = "0";
  int port = 0;
  app.add_option("--shard", shard, "shard index");
  app.add_option("--listen", port, "port to bind on 127.0.0.1 when no socket is inherited");
  CLI11_PARSE(app, argc, argv);
  sb::InitLogging("switchboard-worker");

  auto fds = sb::TakeListenFds();
  sb::UniqueFd own;
  int listen_fd = fds.empty() ? -1 : fds.front().fd;
  if (listen_fd < 0 && port > 0) {
    own.Reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    int one = 1;
    ::setsockopt(own.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(own.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 ||
        ::listen(own.get(), 1024) < 0) {
      sb::PrintFatal("switchboard-worker", "listen on port " + std::to_string(port),
                     strerror(errno));
      return sb::kExitFailure;
    }
    listen_fd = own.get();
  }

  // Every shard waits on the same listening socket: one connection wakes
  // them all and only one gets it. A blocking accept() would leave the
  // others stuck in the kernel where SIGTERM (read through a signalfd)
  // cannot reach them.
  if (listen_fd >= 0) ::fcntl(listen_fd, F_SETFL, ::fcntl(listen_fd, F_GETFL) | O_NONBLOCK);

  auto loop = sb::EventLoop::Create();
  if (!loop.ok()) return sb::kExitFailure;
  auto sfd = sb::BlockSignalsToFd({SIGTERM, SIGINT});
  if (!sfd.ok()) return sb::kExitFailure;
  (void)loop.value()->Add(sfd->get(), EPOLLIN, [&](uint32_t) { loop.value()->Stop(sb::kExitOk); });
  if (listen_fd >= 0) {
    (void)loop.value()->Add(listen_fd, EPOLLIN, [&](uint32_t) {
      int c = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (c < 0) return;
      static const char kReply[] =
          "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
      ssize_t n = ::send(c, kReply, sizeof kReply - 1, MSG_NOSIGNAL);
      (void)n;
      ::close(c);
    });
  }
  spdlog::info("shard {} ready ({} inherited socket(s))", shard, fds.size());
  sb::SdNotify("READY=1");
  int rc = loop.value()->Run();
  spdlog::info("shard {} stopping", shard);
  return rc;
}
