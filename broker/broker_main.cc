// switchboard-broker: the node's message broker. For now a stand-in that does
// what the supervisor expects of it: reports READY=1 and exits 0 on SIGTERM.
// The ZeroMQ routing mesh is not built yet.
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>

#include <CLI/CLI.hpp>

#include "common/event_loop.h"
#include "common/exit_codes.h"
#include "common/log.h"
#include "common/sd_notify.h"
#include "common/signal_fd.h"
#include "common/unique_fd.h"

int main(int argc, char** argv) {
  CLI::App app{"switchboard-broker: node broker (placeholder)"};
  std::string bind = "ipc:///tmp/switchboard/broker";
  app.add_option("--bind", bind, "endpoint shards connect to");
  CLI11_PARSE(app, argc, argv);
  sb::InitLogging("switchboard-broker");

  auto loop = sb::EventLoop::Create();
  if (!loop.ok()) return sb::kExitFailure;
  auto sfd = sb::BlockSignalsToFd({SIGTERM, SIGINT});
  if (!sfd.ok()) return sb::kExitFailure;
  (void)loop.value()->Add(sfd->get(), EPOLLIN, [&](uint32_t) { loop.value()->Stop(sb::kExitOk); });
  spdlog::info("broker ready (placeholder; would bind {})", bind);
  sb::SdNotify("READY=1");
  int rc = loop.value()->Run();
  spdlog::info("broker stopping");
  return rc;
}
