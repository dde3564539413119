// switchboard-broker: the node's message broker. Shards connect to it over
// ZeroMQ (docs/PROTOCOL.md); it routes each broadcast once to every other
// interested shard, holds per-shard queues under explicit credit, and keeps
// the cluster's presence, and sequences and keeps the history of the topics
// that have it (--history). All of it is soft state: a restarted broker gets
// everything back from the shards' hellos. With --peer-bind it also binds the
// peer socket other nodes' brokers link to (CURVE-secured), and with members
// it links to each of theirs (docs/CLUSTER.md). main() parses flags, binds,
// wires the loop, the membership's changes and the metrics endpoint, reports
// READY=1, exits 0 on SIGTERM.
#include <fmt/format.h>
#include <malloc.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <map>
#include <string>
#include <vector>

#include "broker/cluster_membership.h"
#include "broker/mesh_server.h"
#include "broker/peer_server.h"
#include "broker/peer_uplinks.h"
#include "common/command_line.h"
#include "common/event_loop.h"
#include "common/exit_codes.h"
#include "common/log.h"
#include "common/metrics_endpoint.h"
#include "common/sd_notify.h"
#include "common/signal_fd.h"
#include "protocol/history_spec.h"

namespace {
constexpr char kProgram[] = "switchboard-broker";

// Random and nonzero: a restarted broker must never reuse its predecessor's.
uint64_t NewEpoch() {
  uint64_t e = 0;
  if (::getrandom(&e, sizeof e, 0) != sizeof e) e = static_cast<uint64_t>(::getpid()) << 32;
  // Kept below 2^53 so the metric (a double) shows it exactly.
  e &= (uint64_t{1} << 53) - 1;
  return e == 0 ? 1 : e;
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"switchboard-broker: the node's message broker (ZeroMQ ROUTER)"};
  std::string bind = "ipc:///tmp/switchboard/broker", metrics_listen;
  sb::broker::RouterOptions opt;
  app.add_option("--bind", bind,
                 "endpoint shards connect to (tcp://, or ipc:// in a directory only we may write)")
      ->capture_default_str();
  app.add_option("--metrics", metrics_listen, "HOST:PORT for Prometheus /metrics (port 0: any)");
  app.add_option("--heartbeat-ms", opt.liveness.interval_ms, "heartbeat interval, both ways")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{10}, int64_t{60000}));
  app.add_option("--misses", opt.liveness.misses, "silent intervals before a shard is dropped")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  app.add_option("--presence-interval-ms", opt.presence_interval_ms,
                 "send each shard the other shards' presence changes at most this often, "
                 "merged per topic (0: as soon as it keeps up)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{60000}));
  app.add_option("--queue-max-messages", opt.queue.max_messages, "per-shard queue bound")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--queue-max-bytes", opt.queue.max_bytes, "per-shard queue bound, bytes")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  std::map<std::string, sb::broker::OverloadPolicy> policies = {
      {"shed_oldest", sb::broker::OverloadPolicy::kShedOldest},
      {"disconnect", sb::broker::OverloadPolicy::kDisconnect}};
  app.add_option("--overload", opt.queue.overload, "a full queue: shed_oldest or disconnect")
      ->transform(CLI::CheckedTransformer(policies))
      ->capture_default_str();
  std::vector<std::string> history_rules;
  app.add_option("--history", history_rules,
                 "PATTERN=SIZE/TTL: topics matching PATTERN (exact, or a prefix and '*') keep "
                 "history, SIZE messages for TTL (ms, s, m or h) each; repeatable, the first "
                 "match wins; the same rules as the shards'")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  opt.history.max_bytes = sb::history::kDefaultMaxBytes;
  app.add_option("--history-max-bytes", opt.history.max_bytes,
                 "bound on all history held, bytes; the oldest messages of any topic go first")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--peer-outbox-messages", opt.peer_outbox.max_messages,
                 "per member node: messages kept until it acks them (the oldest go past it)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--peer-outbox-bytes", opt.peer_outbox.max_bytes,
                 "per member node: bytes kept until it acks them (the oldest go past it)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sb::broker::MembershipFlags membership_flags;
  sb::broker::AddMembershipFlags(app, &membership_flags);
  sb::broker::PeerFlags peer;
  sb::broker::AddPeerFlags(app, &peer);
  if (std::optional<int> rc = sb::ParseCommandLine(app, argc, argv)) return *rc;
  auto peer_options = sb::broker::PeerOptionsFromFlags(peer);
  if (!peer_options.ok()) {
    sb::PrintFatal(kProgram, "use the peer flags", peer_options.status().message());
    return sb::kExitUsage;
  }
  // This node's public key is its secret key's: given, it must be that one.
  if (peer_options->has_value() && (**peer_options).keys) {
    const std::string& derived = (**peer_options).keys->public_key;
    if (membership_flags.curve_public.empty()) {
      membership_flags.curve_public = derived;
    } else if (membership_flags.curve_public != derived) {
      sb::PrintFatal(
          kProgram, "use --curve-public",
          "it is not the public key of --curve-secret-file's secret key (" + derived + ")");
      return sb::kExitUsage;
    }
  }
  if (sb::Result<sb::history::Rules> rules = sb::history::Rules::Parse(history_rules);
      !rules.ok()) {
    sb::PrintFatal(kProgram, "use --history", rules.status().message());
    return sb::kExitUsage;
  } else {
    opt.history.rules = std::move(rules).value();
  }
  if (sb::Status s = sb::broker::ValidateRouterOptions(opt); !s.ok()) {
    sb::PrintFatal(kProgram, "use --queue-max-bytes", s.message());
    return sb::kExitUsage;
  }
  // The broker interleaves many small per-message allocations with 64 KiB
  // batch buffers (its own and libzmq's). glibc consolidates its fastbins on
  // every such large request, which cost about a fifth of the broker's CPU
  // (perf, bench-mesh-thr at 64 B); without fastbins (tcache still serves
  // small sizes) the consolidation never piles up. bench/RESULTS.md.
  ::mallopt(M_MXFAST, 0);
  sb::InitLogging(kProgram);
  opt.epoch = NewEpoch();
  // A stream's epoch outlives the broker (the shards keep it): random, so
  // a stream that is lost and started again never takes an old one's.
  opt.history.new_stream = [] {
    uint64_t s = 0;
    if (::getrandom(&s, sizeof s, 0) != sizeof s) s = (uint64_t{1} << 63) | NewEpoch();
    return s;
  };
  // History ownership across nodes (docs/CLUSTER.md): the node's name,
  // which also tags the streams this node starts.
  opt.node = membership_flags.node;
  // The bound of the settle window (it ends sooner once every shard the
  // hellos' member lists name has said hello): every live shard heartbeats
  // within its interval (its hello says which; ours until one says more)
  // and reconnects within libzmq's back-off (4 ms for this release's shards,
  // 500 ms for older ones, common/zmq_socket's default): two intervals and
  // that back-off cover the reset round trip too.
  opt.settle = {.heartbeat_ms = opt.liveness.interval_ms,
                .margin_ms = 500,
                .max_ms = sb::broker::kMaxSettleMs};

  // Signals first: the metrics threads inherit the blocked mask.
  auto sfd = sb::BlockSignalsToFd({SIGTERM, SIGINT});
  auto loop = sb::EventLoop::Create();
  if (!sfd.ok() || !loop.ok()) {
    sb::PrintFatal(kProgram, "set up the event loop",
                   !sfd.ok() ? sfd.status().message() : loop.status().message());
    return sb::kExitFailure;
  }
  auto server = sb::broker::MeshServer::Create(loop->get(), bind, opt);
  if (!server.ok()) {
    sb::PrintFatal(kProgram, "serve", server.status().message());
    return sb::kExitFailure;
  }
  auto membership = sb::broker::ClusterMembership::Create(loop->get(), membership_flags);
  if (!membership.ok()) {
    const sb::Status& s = membership.status();
    sb::PrintFatal(kProgram, "set up membership", s.message());
    return s.code() == sb::Status::Code::kInvalidConfig ? sb::kExitUsage : sb::kExitFailure;
  }
  sb::broker::ClusterMembership* cluster = membership.value().get();
  // With etcd, the registration's incarnation; before the first (and with
  // static members) one of this process's own, so that a restart shows.
  const std::string own_incarnation = fmt::format("{:016x}", NewEpoch());
  auto incarnation = [cluster, own_incarnation] {
    if (cluster->registry() != nullptr && !cluster->registry()->incarnation().empty()) {
      return cluster->registry()->incarnation();
    }
    return own_incarnation;
  };
  const sb::broker::PeerLinkOptions link_options{.heartbeat_ms = opt.liveness.interval_ms,
                                                 .misses = 3};
  std::optional<sb::curve::Keypair> keys;
  if (peer_options->has_value()) keys = (**peer_options).keys;
  for (const auto& [name, member] : cluster->membership().members()) {
    if (sb::Status s =
            sb::broker::PeerUplinks::CheckMember(member, keys.has_value(), peer.insecure);
        !s.ok()) {
      sb::PrintFatal(kProgram, "link to the members", s.message());
      return sb::kExitUsage;
    }
  }
  std::unique_ptr<sb::broker::PeerServer> peer_server;
  if (peer_options->has_value()) {
    sb::broker::PeerServerOptions& po = **peer_options;
    po.node = membership_flags.node;
    po.cluster = membership_flags.cluster;
    po.incarnation = incarnation;
    po.links = link_options;
    sb::broker::MeshServer* mesh = server.value().get();
    po.on_hello = [mesh](const std::string& node, uint64_t stream) {
      return mesh->OnPeerHello(node, stream);
    };
    po.on_data = [mesh](const std::string& node, uint64_t seq, std::string_view packed) {
      mesh->OnPeerData(node, seq, packed);
    };
    po.on_inbound_down = [mesh](const std::string& node) { mesh->OnPeerInboundDown(node); };
    auto ps = sb::broker::PeerServer::Create(loop->get(), std::move(po));
    if (!ps.ok()) {
      sb::PrintFatal(kProgram, "serve peers", ps.status().message());
      return sb::kExitFailure;
    }
    peer_server = std::move(ps).value();
  }
  std::unique_ptr<sb::broker::PeerUplinks> uplinks;
  sb::broker::MeshServer* mesh = server.value().get();
  if (!membership_flags.node.empty()) {
    // The router names each member's stream (the broker's epoch, another id
    // when the member is added again): a restart is a new stream, numbered
    // from 1 again.
    uplinks = sb::broker::PeerUplinks::Create(
        loop->get(),
        {.node = membership_flags.node,
         .cluster = membership_flags.cluster,
         .incarnation = incarnation,
         .keys = keys,
         .insecure = peer.insecure,
         .links = link_options,
         .stream = [mesh](const std::string& p) { return mesh->PeerStream(p); },
         .on_up = [mesh](const std::string& p, uint64_t expected,
                         bool batches) { mesh->OnPeerUp(p, expected, batches); },
         .on_down = [mesh](const std::string& p) { mesh->OnPeerDown(p); },
         .on_ack = [mesh](const std::string& p, uint64_t seq) { mesh->OnPeerAck(p, seq); }});
  }
  mesh->SetPeerLinks(uplinks.get(), peer_server.get());
  // The members known now, then every change: the router's peers, admission
  // and links follow them (the router first: a link's hooks name a peer it
  // knows).
  auto apply = [mesh, &peer_server, &uplinks](std::span<const sb::broker::MemberEvent> events) {
    mesh->ApplyMembers(events);
    if (peer_server) peer_server->ApplyMembers(events);
    if (uplinks) uplinks->ApplyMembers(events);
  };
  std::vector<sb::broker::MemberEvent> known;
  for (const auto& [name, member] : cluster->membership().members()) {
    known.push_back({.kind = sb::broker::MemberEventKind::kJoined, .member = member});
  }
  apply(known);
  cluster->OnChanges(apply);
  std::unique_ptr<sb::MetricsEndpoint> endpoint;
  if (!metrics_listen.empty()) {
    auto ep = sb::MetricsEndpoint::Create(metrics_listen);
    if (!ep.ok()) {
      sb::PrintFatal(kProgram, "serve metrics", ep.status().message());
      return sb::kExitFailure;
    }
    endpoint = std::move(ep.value());
    endpoint->Register(server.value()->collectable());
    endpoint->Register(membership.value()->collectable());
    if (peer_server) endpoint->Register(peer_server->collectable());
    if (uplinks) endpoint->Register(uplinks->collectable());
  }
  sb::EventLoop* l = loop->get();
  (void)l->Add(sfd->get(), EPOLLIN, [&](uint32_t) {
    if (sb::ReadSignal(sfd->get()) != 0) l->Stop(sb::kExitOk);
  });
  spdlog::info("broker: epoch {} bound {}", opt.epoch, server.value()->endpoint());
  if (peer_server) {
    spdlog::info("broker: peer socket on {} ({})", peer_server->endpoint(),
                 peer_server->curve() ? "CURVE, members only" : "plain text, anyone");
  }
  if (endpoint) spdlog::info("broker: metrics on {}", endpoint->address());
  sb::SdNotify("READY=1");
  int rc = l->Run();
  spdlog::info("broker: stopping");
  membership.value()->Leave(std::chrono::milliseconds(500));
  // The links go before the membership: no change may reach them after.
  cluster->OnChanges(nullptr);
  return rc;
}
