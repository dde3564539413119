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
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <sstream>
#include <thread>
#include <unordered_set>
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

// A test's hook into a hand-off (docs/UPGRADE.md, "Testing"):
// SWITCHBOARD_HANDOFF_PAUSE=sockets:N[:S] makes the new process stop
// receiving for S seconds (60 by default) once N fds have come (ahead of
// their state, as a rule), =chunks:N[:S] once N chunks of state have come,
// =acked[:S] once it has acknowledged the end, so that a test can kill one
// process or the other there. Unset, nothing pauses.
struct HandoffPause {
  uint64_t after_sockets = 0;  // 0: not
  uint64_t after_chunks = 0;   // 0: not
  bool after_ack = false;
  unsigned seconds = 60;

  static HandoffPause FromEnv() {
    HandoffPause p;
    const char* v = std::getenv("SWITCHBOARD_HANDOFF_PAUSE");
    if (v == nullptr) return p;
    std::string_view s(v);
    const size_t counted = s.starts_with("chunks:") ? 7 : s.starts_with("sockets:") ? 8 : 0;
    if (const size_t colon = s.find(':', counted); colon != std::string_view::npos) {
      p.seconds = static_cast<unsigned>(std::strtoul(v + colon + 1, nullptr, 10));
      s = s.substr(0, colon);
    }
    if (s == "acked") p.after_ack = true;
    if (s.starts_with("chunks:")) p.after_chunks = std::strtoull(v + 7, nullptr, 10);
    if (s.starts_with("sockets:")) p.after_sockets = std::strtoull(v + 8, nullptr, 10);
    return p;
  }
  void Pause(std::string_view where) const {
    spdlog::warn("hand-off paused {} for {} s (SWITCHBOARD_HANDOFF_PAUSE)", where, seconds);
    ::sleep(seconds);
  }
};

// A hand-off's bound on each side (docs/UPGRADE.md); the old process sends
// its connections in batches of this many, each adopted by the new one
// while the next is exported.
constexpr int64_t kHandoffTimeoutMs = 10000;
// The old process waits this much longer for the acknowledgement than the
// new one may take to send it (counted from its accept, which follows the
// old one's start by far less).
constexpr int64_t kAckGraceMs = 5000;
constexpr size_t kHandoffBatch = sb::worker::handoff::kMaxConnectionsPerChunk;

// The new process's side of a hand-off, once `shard` exists with the old
// one's session: adopts each chunk as it comes (while the old process
// exports the next), then acknowledges the end. Nothing is written to a
// socket until the loop runs, after that: a refusal before it leaves every
// socket as the old process left it. False (logged) if this process must
// exit instead of serving.
bool TakeOver(sb::worker::handoff::StateReceiver& receiver, int conn, sb::worker::Shard& shard,
              const std::string& name, int64_t start_ms) {
  namespace handoff = sb::worker::handoff;
  // Receiving (decoding each chunk; for fds that came with it, the kernel
  // installing them and their registration with epoll) runs on a thread of
  // its own while this one adopts the chunk before (bench/RESULTS.md,
  // "Hand-off, streamed"). The thread touches only the hand-off socket, the
  // chunk's fds and the epoll instance, and hands whole chunks over.
  struct Chunk {
    std::vector<handoff::Connection> conns;
    std::vector<sb::UniqueFd> fds;
  };
  std::mutex mu;
  std::condition_variable arrived;
  std::deque<Chunk> ready;
  bool done = false;
  sb::Status failed;
  const HandoffPause pause = HandoffPause::FromEnv();
  std::thread reader([&] {
    for (uint64_t chunks = 0;; ++chunks) {
      if (chunks > 0 && chunks == pause.after_chunks) pause.Pause("after a chunk");
      Chunk c;
      auto more = receiver.Next(&c.conns, &c.fds);
      std::lock_guard lock(mu);
      if (!more.ok() || !*more) {
        if (!more.ok()) failed = more.status();
        done = true;
        arrived.notify_one();
        return;
      }
      ready.push_back(std::move(c));
      arrived.notify_one();
    }
  });
  for (;;) {
    std::unique_lock lock(mu);
    arrived.wait(lock, [&] { return !ready.empty() || done; });
    if (ready.empty()) break;
    Chunk c = std::move(ready.front());
    ready.pop_front();
    lock.unlock();
    shard.Adopt(c.conns, c.fds);
  }
  reader.join();
  if (!failed.ok()) {
    // The socket closed before the end: if the old process has ended (a
    // crash), what came is this process's alone and is served; if it lives
    // on, it kept everything, and this process takes nothing.
    const bool old_ended =
        failed.code() == sb::Status::Code::kIoError && receiver.OldProcessEnded(/*wait_ms=*/1000);
    if (!old_ended) {
      (void)handoff::SendRefusal(conn, failed.message());
      sb::PrintFatal(kProgram, "receive the hand-off", failed.message());
      return false;
    }
    spdlog::warn(
        "shard {}: the old process ended mid-hand-off ({}): serving the {} connection(s) "
        "that came",
        name, failed.message(), shard.adopted());
  } else if (sb::MonoNowMs() > start_ms + kHandoffTimeoutMs) {
    // The old process may have given up and served on: too late to take.
    (void)handoff::SendRefusal(conn, "taken too late");
    sb::PrintFatal(kProgram, "receive the hand-off", "taken too late");
    return false;
  } else if (sb::Status s = handoff::SendAck(conn); !s.ok() && !receiver.OldProcessEnded(1000)) {
    // The old process may still hold the sockets: two processes must not
    // serve them, unless it has ended.
    sb::PrintFatal(kProgram, "acknowledge the hand-off", s.message());
    return false;
  }
  shard.FinishAdoption();
  if (pause.after_ack) pause.Pause("after the acknowledgement");
  const int64_t ms = sb::MonoNowMs() - start_ms;
  spdlog::info("shard {}: upgraded: {} connection(s) taken over in {} ms", name, shard.adopted(),
               ms);
  sb::SdNotify("STATUS=upgraded connections=" + std::to_string(shard.adopted()) +
               " ms=" + std::to_string(ms));
  return true;
}

// The old process's hand-off in progress (SIGUSR2 to the end).
struct Outgoing {
  Outgoing(sb::UniqueFd c, int64_t start)
      : conn(std::move(c)),
        start_ms(start),
        sender(conn.get(), start + kHandoffTimeoutMs, start + kHandoffTimeoutMs + kAckGraceMs) {}
  sb::UniqueFd conn;
  int64_t start_ms;
  sb::worker::handoff::StateSender sender;
  std::vector<sb::worker::ConnId> ids;  // to send ahead: from `at` on
  size_t at = 0;
  std::unordered_set<uint64_t> sent;  // the connections whose fds went ahead
  bool ended_ahead = false;           // kSocketsEndMessage sent
};

// The old process's first step, while it serves on: the fds of every
// connection that will move, kSocketBatchesPerTurn messages of up to 253 a
// loop turn, so that the new process installs them and registers them with
// epoll (the larger part of taking 10,000 sockets over) before anyone
// waits. Connections opened meanwhile go with their state; ones closed
// meanwhile are dropped by the new process. An error if the new process is
// gone.
constexpr int kSocketBatchesPerTurn = 4;
enum class Ahead { kAllSent, kMore, kNoRoom };
sb::Result<Ahead> SendSocketsAhead(const sb::worker::Shard& shard, Outgoing& out) {
  std::vector<uint64_t> ids;
  std::vector<int> fds;
  for (int batch = 0; batch < kSocketBatchesPerTurn && out.at < out.ids.size(); ++batch) {
    ids.clear();
    fds.clear();
    size_t end = out.at;
    for (; end < out.ids.size() && ids.size() < kHandoffBatch; ++end) {
      const int fd = shard.MovingFd(out.ids[end]);
      if (fd < 0) continue;  // closed since
      ids.push_back(out.ids[end]);
      fds.push_back(fd);
    }
    if (!ids.empty()) {
      sb::Result<bool> sent = out.sender.TrySendSockets(ids, fds);
      if (!sent.ok()) return sent.status();
      if (!*sent) return Ahead::kNoRoom;
      out.sent.insert(ids.begin(), ids.end());
    }
    out.at = end;
  }
  return out.at == out.ids.size() ? Ahead::kAllSent : Ahead::kMore;
}

// The old process's last step (once shard.ReadyToHandOff()), everything
// paused: the session, then the connections a batch at a time, each
// exported while the new process adopts the one before — those whose fds
// went ahead first, without them. True once the new process has
// acknowledged (every socket is its own: the caller exits); false, with
// every connection still served here, if anything failed before.
bool HandOver(sb::worker::Shard& shard, Outgoing& out, const std::string& name) {
  namespace handoff = sb::worker::handoff;
  const int64_t paused = sb::MonoNowMs();
  sb::worker::Shard::HandoffPlan plan = shard.BeginHandOff();
  handoff::StateSender& sender = out.sender;
  sb::Status s = sender.Begin(std::move(plan.session), plan.connections.size());
  std::vector<sb::worker::ConnId> ahead, with_fds;
  for (sb::worker::ConnId id : plan.connections) {
    (out.sent.contains(id) ? ahead : with_fds).push_back(id);
  }
  std::vector<handoff::Connection> batch;
  std::vector<int> fds;
  for (const bool sent_ahead : {true, false}) {
    const std::span<const sb::worker::ConnId> ids(sent_ahead ? ahead : with_fds);
    for (size_t at = 0; s.ok() && at < ids.size(); at += kHandoffBatch) {
      batch.clear();
      fds.clear();
      shard.ExportConnections(ids.subspan(at, std::min(kHandoffBatch, ids.size() - at)), &batch,
                              &fds);
      s = sender.Send(batch, sent_ahead ? std::span<const int>() : std::span<const int>(fds));
    }
  }
  if (s.ok()) s = sender.Finish();
  if (!s.ok()) {
    // The new process acknowledged nothing, so it touched nothing: every
    // connection is still this process's, as it was.
    sender.Abort();
    spdlog::warn("shard {}: hand-off of {} connection(s) failed: {}; serving on all of them", name,
                 plan.connections.size(), s.message());
    return false;
  }
  const int64_t now = sb::MonoNowMs();
  spdlog::info(
      "shard {}: handed {} connection(s) over in {} ms ({} sent ahead; paused for the last {} "
      "ms); exiting",
      name, plan.connections.size(), now - out.start_ms, ahead.size(), now - paused);
  shard.HandedOff();
  return true;
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
    receiver.emplace(handoff_conn.get(), handoff_start_ms + kHandoffTimeoutMs);
    sb::EventLoop* ev = loop->get();
    receiver->SetSocketHooks(
        [ev, pause = HandoffPause::FromEnv(), sockets = uint64_t{0}](sb::UniqueFd& fd) mutable {
          if (sb::Status s = sb::worker::Gateway::PrepareAdoption(*ev, fd.get()); !s.ok()) {
            spdlog::warn("hand-off: socket {} not adopted: {}", fd.get(), s.message());
            fd.Reset();
          }
          if (++sockets == pause.after_sockets) pause.Pause("after its sockets");
        },
        [ev](int fd) { ev->Unwatch(fd); });
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
    if (!TakeOver(*receiver, handoff_conn.get(), **created, shard, handoff_start_ms)) {
      return sb::kExitFailure;
    }
    receiver.reset();
    session.reset();
  }
  sb::EventLoop* l = loop->get();
  sb::worker::Shard* g = created->get();
  // SIGUSR2: hand everything to the process on the hand-off socket: the
  // fds first, while serving on (SendSocketsAhead, between turns); then the
  // state, paused (HandOver), once nothing waits on the broker that only
  // this process could answer — tried again every 10 ms, for at most a
  // second. Whatever fails, this process serves on.
  std::unique_ptr<Outgoing> outgoing;
  std::function<void(int64_t)> hand_off = [&](int64_t give_up_ms) {
    if (!g->ReadyToHandOff()) {
      if (sb::MonoNowMs() >= give_up_ms) {
        spdlog::warn("shard {}: hand-off: still waiting on the broker; serving on", shard);
        outgoing.reset();
        return;
      }
      l->AddTimer(std::chrono::milliseconds(10), [&, give_up_ms] { hand_off(give_up_ms); });
      return;
    }
    if (HandOver(*g, *outgoing, shard)) {
      l->Stop(sb::kExitOk);
      return;
    }
    outgoing.reset();
  };
  // Every fd went: the end of them, then the state once the new process
  // has taken them all (checked every millisecond, within the hand-off's
  // deadline).
  std::function<void()> end_ahead = [&] {
    sb::Result<bool> step =
        outgoing->ended_ahead ? outgoing->sender.SocketsTaken() : outgoing->sender.TryEndSockets();
    if (step.ok() && !outgoing->ended_ahead && *step) {
      outgoing->ended_ahead = true;
      step = outgoing->sender.SocketsTaken();
    }
    if (step.ok() && !*step && sb::MonoNowMs() >= outgoing->start_ms + kHandoffTimeoutMs) {
      step = sb::Status::IoError("hand-off: timed out waiting for the sockets to be taken");
    }
    if (!step.ok()) {
      spdlog::warn("shard {}: hand-off: {}; serving on", shard, step.status().message());
      outgoing->sender.Abort();
      outgoing.reset();
    } else if (*step && outgoing->ended_ahead) {
      hand_off(sb::MonoNowMs() + 1000);
    } else {
      l->AddTimer(std::chrono::milliseconds(1), [&] { end_ahead(); });
    }
  };
  std::function<void()> send_ahead = [&] {
    sb::Result<Ahead> ahead = SendSocketsAhead(*g, *outgoing);
    if (ahead.ok() && *ahead == Ahead::kNoRoom &&
        sb::MonoNowMs() >= outgoing->start_ms + kHandoffTimeoutMs) {
      ahead = sb::Status::IoError("hand-off: timed out sending the sockets ahead");
    }
    if (!ahead.ok()) {
      spdlog::warn("shard {}: hand-off: {}; serving on", shard, ahead.status().message());
      outgoing->sender.Abort();
      outgoing.reset();
    } else if (*ahead == Ahead::kAllSent) {
      end_ahead();
    } else {
      // The next ones after a turn of serving; a millisecond later if the
      // new process is still taking the last ones.
      l->AddTimer(std::chrono::milliseconds(*ahead == Ahead::kMore ? 0 : 1), [&] { send_ahead(); });
    }
  };
  (void)l->Add(sfd->get(), EPOLLIN, [&](uint32_t) {
    int sig = sb::ReadSignal(sfd->get());
    if (sig == 0) return;
    if (sig == SIGUSR2) {
      if (handoff_path.empty()) {
        spdlog::warn("shard {}: SIGUSR2 without SWITCHBOARD_HANDOFF_SOCKET: ignored", shard);
      } else if (!outgoing) {
        const int64_t start = sb::MonoNowMs();
        auto conn = sb::worker::handoff::ConnectHandoff(handoff_path);
        if (!conn.ok()) {
          spdlog::warn("shard {}: hand-off: {}; serving on", shard, conn.status().message());
          return;
        }
        outgoing = std::make_unique<Outgoing>(std::move(conn.value()), start);
        outgoing->ids = g->MovingConnections();
        send_ahead();
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
        spdlog::info("shard {}: metrics on 127.0.0.1:{}", shard, endpoint->port());
      } else if (sb::MonoNowMs() < give_up_ms) {
        l->AddTimer(std::chrono::milliseconds(20), [&] { bind_metrics(); });
      } else {
        spdlog::error("shard {}: serving without metrics: {}", shard, ep.status().message());
      }
    };
    bind_metrics();
  }
  spdlog::info("shard {}: listening on {}", shard, sb::BoundAddress(listen_fd));
  if (endpoint) spdlog::info("shard {}: metrics on 127.0.0.1:{}", shard, endpoint->port());
  if (!receive) sb::SdNotify("READY=1");
  int rc = l->Run();
  spdlog::info("shard {}: stopped", shard);
  return rc;
}
