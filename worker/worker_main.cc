// switchboard-worker: a gateway shard. Clients connect with the Phoenix
// Channels v2 protocol over WebSocket (docs/WORKER.md). main() parses flags,
// takes the inherited listening socket (LISTEN_FDS) or binds --listen, wires
// the loop, the shard and the metrics endpoint, reports READY=1 and on
// SIGTERM drains (close 1012, then the broker's acks of the outbox, both
// within --shutdown-timeout) and exits 0, or 1 if broadcasts answered ok
// were left unacked. With SWITCHBOARD_HANDOFF_SOCKET set it also takes part
// in an upgrade in place (docs/UPGRADE.md, "The daemon ↔ shard contract"):
// on SIGUSR2 it hands its connections to the process listening there and
// exits 0; started with SWITCHBOARD_HANDOFF=receive it is that process.
#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <vector>

#include "common/command_line.h"
#include "common/event_loop.h"
#include "common/exit_codes.h"
#include "common/listen_fds.h"
#include "common/log.h"
#include "common/metrics_endpoint.h"
#include "common/mono_time.h"
#include "common/sd_notify.h"
#include "common/signal_fd.h"
#include "common/tcp_listen.h"
#include "common/unique_fd.h"
#include "protocol/history_spec.h"
#include "worker/auth.h"
#include "worker/handoff_transfer.h"
#include "worker/http_upgrade.h"
#include "worker/shard.h"
#include "worker/upgrade.h"
#include "worker/worker_metrics.h"

namespace {

constexpr char kProgram[] = "switchboard-worker";

// Makes room in the fd table for `more` fds now, while this process has one
// thread: growing it later, with the broker link's threads running, waits
// for an RCU grace period at each doubling (tens of ms for 10,000 fds).
void GrowFdTable(uint64_t more) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  const uint64_t want = std::min<uint64_t>(more + 256, lim.rlim_cur - 1);
  const int fd = ::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, static_cast<int>(want));
  if (fd >= 0) ::close(fd);
}

// This process's instance id: the broker tells shard restarts apart by it,
// and presence phx_refs (prefixed with it) stay unique across shards and
// restarts.
uint64_t InstanceId() {
  uint64_t r = 0;
  if (::getrandom(&r, sizeof r, 0) != sizeof r) r = static_cast<uint64_t>(::getpid()) << 20;
  return r == 0 ? 1 : r;
}

// The secret that proves a reconnect of this process to the broker is
// this process (mesh::Hello::token; other shards see only the instance id).
// Without randomness the shard still works, but a reconnect then waits for
// the old session to expire.
std::string SessionToken() {
  unsigned char bytes[sb::mesh::kTokenHexDigits / 2];
  if (::getrandom(bytes, sizeof bytes, 0) != sizeof bytes) return {};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string token;
  for (unsigned char b : bytes) {
    token.push_back(kHex[b >> 4]);
    token.push_back(kHex[b & 15]);
  }
  return token;
}

std::string RefPrefix(const std::string& shard, uint64_t instance) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%08x", static_cast<uint32_t>(instance));
  return shard + "." + buf + ".";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"switchboard-worker: a gateway shard (Phoenix Channels v2 over WebSocket)"};
  std::string shard = "0", listen, metrics_listen, secret_file, audience, issuer,
              check_origin = "on", static_dir, api_key_file;
  std::vector<std::string> allowed_origins;
  double idle_s = 60, shutdown_s = 5, message_s = 10;
  sb::worker::ShardOptions opt;
  rlimit nofile{};
  ::getrlimit(RLIMIT_NOFILE, &nofile);
  // Every socket the shard may hold (the limit and the allowance beyond it
  // for 503 answers) plus 64 fds for the rest of the process.
  constexpr rlim_t kReserved = 64 + sb::worker::Gateway::kSocketAllowance;
  opt.gateway.max_connections = nofile.rlim_cur > 2 * kReserved ? nofile.rlim_cur - kReserved : 64;
  app.add_option("--shard", shard, "shard index (logs, metrics label)");
  app.add_option("--listen", listen, "HOST:PORT to bind when no socket is inherited (port 0: any)");
  app.add_option("--metrics", metrics_listen, "HOST:PORT for Prometheus /metrics (port 0: any)");
  app.add_option("--idle-timeout", idle_s, "seconds without a frame before a socket is closed")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-frame", opt.gateway.max_frame_bytes, "largest inbound message, bytes")
      ->capture_default_str()
      ->check(CLI::Range(size_t{126}, size_t{1} << 30));
  app.add_option("--message-timeout", message_s, "seconds a message's fragments may take")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-topics", opt.hub.max_topics_per_socket, "joined topics per socket")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-outbound", opt.gateway.max_outbound_bytes,
                 "bytes queued to one socket, per-frame overhead included")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1024}, size_t{1} << 32));
  app.add_option("--rate", opt.hub.messages_per_second, "messages/s per socket (0: unlimited)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--burst", opt.hub.message_burst, "rate limiter bucket size")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-connections", opt.gateway.max_connections,
                 "WebSocket connections; beyond: 503 (64 more sockets at most)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-connections-per-ip", opt.gateway.max_connections_per_address,
                 "sockets per client address (0: unlimited)")
      ->capture_default_str();
  app.add_option("--max-presence-meta", opt.hub.max_presence_bytes,
                 "bytes of a join's presence key and meta")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  auto* secret_opt =
      app.add_option("--token-secret-file", secret_file, "HS256 secret: turns token auth on")
          ->check(CLI::ExistingFile);
  app.add_option("--token-audience", audience, "the token's aud claim must name this")
      ->needs(secret_opt);
  app.add_option("--token-issuer", issuer, "the token's iss claim must be this")->needs(secret_opt);
  app.add_option("--check-origin", check_origin, "on: a browser's Origin must be allowed; off")
      ->capture_default_str()
      ->check(CLI::IsMember({"on", "off"}));
  app.add_option("--allowed-origins", allowed_origins,
                 "origins allowed (default: the Host's): scheme://host[:port], //*.host, ...")
      ->delimiter(',')
      ->allow_extra_args(false);
  app.add_option("--static", static_dir,
                 "serve the files under DIR at / (GET, HEAD; /socket, /healthz, /api stay)");
  app.add_option("--api-key-file", api_key_file,
                 "bearer key of the HTTP API (/api/*): turns the API on; mode 0600")
      ->check(CLI::ExistingFile);
  app.add_option("--shutdown-timeout", shutdown_s,
                 "seconds to wait for clients and the broker's acks on SIGTERM")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  sb::worker::ClusterOptions& cl = opt.cluster;
  app.add_option("--broker", opt.broker_endpoint, "the node broker's endpoint (tcp:// or ipc://)");
  app.add_option("--heartbeat-ms", cl.heartbeat_ms, "broker heartbeat interval, ms")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{10}, int64_t{60000}));
  app.add_option("--credit-window", cl.window, "messages the broker may send ahead of credit")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1u << 20));
  app.add_option("--max-outbox", cl.max_outbox_messages, "unacked broadcasts kept for the broker")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-unacked", cl.max_unacked,
                 "broadcasts sent to the broker and not yet acked, at most (the rest wait)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1u << 20));
  app.add_option("--max-unacked-bytes", cl.max_unacked_bytes,
                 "... and their bytes, at most (a larger broadcast still goes, alone)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  std::vector<std::string> history_rules;
  app.add_option("--history", history_rules,
                 "PATTERN=SIZE/TTL: topics matching PATTERN keep their last SIZE broadcasts for "
                 "TTL (e.g. 'room:*=1000/10m'); repeatable, the first match wins; needs --broker");
  app.add_option("--recovery-max", opt.history.recovery_max,
                 "most messages a rejoin may recover (more: recovered:false)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1000000u));
  app.add_option("--history-max-bytes", opt.history.max_bytes,
                 "history copies this shard keeps, bytes at most (the oldest go first)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  if (std::optional<int> rc = sb::ParseCommandLine(app, argc, argv)) return *rc;
  sb::InitLogging(kProgram);
  if (!history_rules.empty()) {
    sb::Result<sb::history::Rules> rules = sb::history::Rules::Parse(history_rules);
    if (!rules.ok()) {
      sb::PrintFatal(kProgram, "keep history", rules.status().message());
      return sb::kExitUsage;
    }
    // The broker gives each message its offset: a shard alone has nobody
    // to sequence its topics.
    if (opt.broker_endpoint.empty()) {
      sb::PrintFatal(kProgram, "keep history", "--history needs --broker (the broker sequences)");
      return sb::kExitUsage;
    }
    opt.history.rules = std::move(rules).value();
  }

  opt.gateway.idle_timeout = std::chrono::milliseconds(static_cast<int64_t>(idle_s * 1000));
  opt.gateway.message_timeout = std::chrono::milliseconds(static_cast<int64_t>(message_s * 1000));
  opt.gateway.shutdown_timeout = std::chrono::milliseconds(static_cast<int64_t>(shutdown_s * 1000));
  cl.shard = shard;
  cl.instance = InstanceId();
  cl.token = SessionToken();
  opt.ref_prefix = RefPrefix(shard, cl.instance);
  if (!secret_file.empty()) {
    std::ifstream in(secret_file);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string secret = ss.str();
    while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
    if (!in || secret.empty()) {
      sb::PrintFatal(kProgram, "read the token secret " + secret_file, "empty or unreadable");
      return sb::kExitUsage;
    }
    if (sb::Status s = sb::worker::CheckTokenSecret(secret); !s.ok()) {
      sb::PrintFatal(kProgram, "use the token secret " + secret_file, s.message());
      return sb::kExitUsage;
    }
    opt.gateway.token = sb::worker::TokenRules{std::move(secret), audience, issuer};
  }
  if (!api_key_file.empty()) {
    sb::Result<std::string> key = sb::worker::LoadApiKey(api_key_file);
    if (!key.ok()) {
      sb::PrintFatal(kProgram, "use the API key", key.status().message());
      return sb::kExitUsage;
    }
    opt.gateway.api_key = std::move(key).value();
  }
  auto origin = sb::worker::MakeOriginPolicy(check_origin == "on", allowed_origins);
  if (!origin.ok()) {
    sb::PrintFatal(kProgram, "check origins", origin.status().message());
    return sb::kExitUsage;
  }
  opt.gateway.origin = std::move(origin.value());
  if (!static_dir.empty()) {
    // Not fatal: the shard's job is its WebSockets, and a shard that
    // refused to start would be restarted until its supervisor gave up.
    // The root is resolved on every request, so one made later is served.
    std::string why;
    if (!opt.gateway.static_root.emplace(static_dir).Usable(&why)) {
      spdlog::warn("shard {}: --static {}: {}: answering 404 until it exists", shard, static_dir,
                   why);
    }
  }

  auto inherited = sb::TakeListenFds();
  sb::UniqueFd own;
  int listen_fd = inherited.empty() ? -1 : inherited.front().fd;
  if (listen_fd < 0) {
    if (listen.empty()) {
      sb::PrintFatal(kProgram, "serve", "no inherited socket (LISTEN_FDS) and no --listen");
      return sb::kExitUsage;
    }
    auto fd = sb::ListenTcpSpec(listen, 4096);
    if (!fd.ok()) {
      sb::PrintFatal(kProgram, "start", fd.status().message());
      return fd.status().code() == sb::Status::Code::kInvalidConfig ? sb::kExitUsage
                                                                    : sb::kExitFailure;
    }
    own = std::move(fd.value());
    listen_fd = own.get();
  }
  // Shards share one listening socket: accept must never block a shard
  // that lost the race for a connection.
  ::fcntl(listen_fd, F_SETFL, ::fcntl(listen_fd, F_GETFL) | O_NONBLOCK);

  const char* handoff_env = std::getenv("SWITCHBOARD_HANDOFF_SOCKET");
  const std::string handoff_path = handoff_env != nullptr ? handoff_env : "";
  const char* mode_env = std::getenv("SWITCHBOARD_HANDOFF");
  const bool receive = mode_env != nullptr && std::string_view(mode_env) == "receive";
  if (receive && handoff_path.empty()) {
    sb::PrintFatal(kProgram, "receive a hand-off", "SWITCHBOARD_HANDOFF_SOCKET is not set");
    return sb::kExitUsage;
  }

  // Signals first: the metrics threads inherit the blocked mask.
  auto sfd = sb::BlockSignalsToFd({SIGTERM, SIGINT, SIGUSR2});
  auto loop = sb::EventLoop::Create();
  if (!sfd.ok() || !loop.ok()) {
    sb::PrintFatal(kProgram, "set up the event loop",
                   !sfd.ok() ? sfd.status().message() : loop.status().message());
    return sb::kExitFailure;
  }
  sb::worker::WorkerMetrics metrics(shard);
  metrics.counters().api_on.store(opt.gateway.api_key.has_value(), std::memory_order_relaxed);
  {
    // The history families' names, before any scrape can read them.
    sb::worker::WorkerCounters& c = metrics.counters();
    const auto& rules = opt.history.rules.rules();
    constexpr size_t kSlots = sb::worker::WorkerCounters::kMaxHistoryFamilies;
    c.history_families = std::min(rules.size(), kSlots);
    for (size_t i = 0; i < c.history_families; ++i) {
      c.history_family_names[i] =
          i + 1 == kSlots && rules.size() > kSlots ? "other" : rules[i].pattern;
    }
  }
  std::unique_ptr<sb::MetricsEndpoint> endpoint;
  // Receiving: the old process holds the metrics port until it exits, just
  // after the hand-off; this one binds it then (StartMetricsAfterHandOff).
  if (!metrics_listen.empty() && !receive) {
    auto ep = sb::MetricsEndpoint::Create(metrics_listen);
    if (!ep.ok()) {
      sb::PrintFatal(kProgram, "serve metrics", ep.status().message());
      return sb::kExitFailure;
    }
    endpoint = std::move(ep.value());
    endpoint->Register(metrics.collectable());
  }
  // Receiving: set up, but neither accept nor connect to the broker until
  // the old process's state is here; its instance and token are then the
  // broker session's, so the broker sees the same shard.
  std::optional<sb::worker::handoff::StateReceiver> receiver;
  std::optional<sb::worker::handoff::Session> session;
  sb::UniqueFd handoff_conn;
  int64_t handoff_start_ms = 0;
  if (receive) {
    auto listener = sb::worker::handoff::ListenHandoff(handoff_path);
    if (!listener.ok()) {
      sb::PrintFatal(kProgram, "receive a hand-off", listener.status().message());
      return sb::kExitFailure;
    }
    sb::SdNotify("READY=1");
    spdlog::info("shard {}: waiting for the hand-off on {}", shard, handoff_path);
    // The daemon signals the old process on READY; it kills this one if the
    // hand-off never comes (rollback). SIGTERM meanwhile: nothing to drain.
    for (;;) {
      auto conn = sb::worker::handoff::AcceptHandoff(listener->get(), sb::MonoNowMs() + 200);
      if (conn.ok()) {
        handoff_conn = std::move(conn.value());
        break;
      }
      if (int sig = sb::ReadSignal(sfd->get()); sig == SIGTERM || sig == SIGINT) {
        spdlog::info("shard {}: signal {} before the hand-off: exiting", shard, sig);
        ::unlink(handoff_path.c_str());
        return sb::kExitOk;
      }
    }
    ::unlink(handoff_path.c_str());
    handoff_start_ms = sb::MonoNowMs();
    receiver.emplace(handoff_conn.get(), handoff_start_ms + sb::worker::kHandoffTimeoutMs);
    sb::worker::SetSocketHooks(*receiver, loop->get());
    auto begun = receiver->Begin();
    if (!begun.ok()) {
      // Refused: the old process keeps serving everything.
      (void)sb::worker::handoff::SendRefusal(handoff_conn.get(), begun.status().message());
      sb::PrintFatal(kProgram, "receive the hand-off", begun.status().message());
      return sb::kExitFailure;
    }
    session = std::move(begun).value();
    GrowFdTable(session->connections);
    opt.cluster.shard = session->shard;
    opt.cluster.instance = session->instance;
    opt.cluster.token = session->token;
  }

  auto created = sb::worker::Shard::Create(loop->get(), listen_fd, opt, &metrics,
                                           session ? &*session : nullptr);
  if (!created.ok()) {
    // Nothing was written to an adopted socket yet: the old process keeps
    // them all, as they were.
    if (session)
      (void)sb::worker::handoff::SendRefusal(handoff_conn.get(), created.status().message());
    sb::PrintFatal(kProgram, "serve", created.status().message());
    return sb::kExitFailure;
  }
  if (session) {
    if (sb::Status s =
            sb::worker::TakeOver(*receiver, handoff_conn.get(), **created, shard, handoff_start_ms);
        !s.ok()) {
      sb::PrintFatal(kProgram, "take the hand-off over", s.message());
      return sb::kExitFailure;
    }
    receiver.reset();
    session.reset();
  }
  sb::EventLoop* l = loop->get();
  sb::worker::Shard* g = created->get();
  // SIGUSR2: hand everything to the process on the hand-off socket
  // (worker/upgrade); whatever fails, this process serves on.
  // Handed over, it exits at once (Shard::HandedOff says why): nothing it
  // holds is its own any more.
  sb::worker::HandOff hand_off(l, g, handoff_path, shard, [] {
    spdlog::default_logger()->flush();
    std::_Exit(sb::kExitOk);
  });
  (void)l->Add(sfd->get(), EPOLLIN, [&](uint32_t) {
    int sig = sb::ReadSignal(sfd->get());
    if (sig == 0) return;
    if (sig == SIGUSR2) {
      if (handoff_path.empty()) {
        spdlog::warn("shard {}: SIGUSR2 without SWITCHBOARD_HANDOFF_SOCKET: ignored", shard);
      } else {
        hand_off.Start();
      }
      return;
    }
    spdlog::info("shard {}: signal {}: draining {} connection(s)", shard, sig, g->connections());
    // Broadcasts lost with the process (the broker never acked them) make
    // the exit a failure, so the supervisor counts it
    // (switchboard_child_exits_total{reason="abnormal"}).
    g->Drain([l](size_t unacked) { l->Stop(unacked == 0 ? sb::kExitOk : sb::kExitFailure); });
  });

  // The old process frees the port as it exits, right after our ack: tried
  // every 20 ms for 5 s. The connections taken are served whatever happens
  // here; without the port the shard logs it and serves on. (Both live as
  // long as the loop: its timer calls back into them.)
  const int64_t give_up_ms = sb::MonoNowMs() + 5000;
  std::function<void()> bind_metrics;
  if (receive && !metrics_listen.empty()) {
    bind_metrics = [&] {
      auto ep = sb::MetricsEndpoint::Create(metrics_listen);
      if (ep.ok()) {
        endpoint = std::move(ep.value());
        endpoint->Register(metrics.collectable());
        spdlog::info("shard {}: metrics on {}", shard, endpoint->address());
      } else if (sb::MonoNowMs() < give_up_ms) {
        l->AddTimer(std::chrono::milliseconds(20), [&] { bind_metrics(); });
      } else {
        spdlog::error("shard {}: serving without metrics: {}", shard, ep.status().message());
      }
    };
    bind_metrics();
  }
  spdlog::info("shard {}: listening on {}", shard, sb::BoundAddress(listen_fd));
  if (endpoint) spdlog::info("shard {}: metrics on {}", shard, endpoint->address());
  if (!receive) sb::SdNotify("READY=1");
  int rc = l->Run();
  spdlog::info("shard {}: stopped", shard);
  return rc;
}
