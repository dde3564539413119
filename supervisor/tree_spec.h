// TreeSpec: the validated, immutable model of a Switchboard YAML file.
//
// Owns: plain data describing the node, the listening sockets and the
// supervision tree, after every default has been applied and every replica
// set has been expanded into concrete children ("shard" x2 -> "shard.0",
// "shard.1", with {{replica}} substituted). Does not: parse YAML (see
// spec_loader.h), run anything, or hold runtime state. Values are copied
// freely; nothing here points into a YAML document.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace sb::supervisor {

using Millis = std::chrono::milliseconds;

enum class Strategy { kOneForOne, kOneForAll, kRestForOne, kSimpleOneForOne };
enum class RestartType { kPermanent, kTransient, kTemporary };
enum class ReadyMode { kNotify, kExec };
// How `switchboard upgrade` (and a reload changing only command or env)
// replaces a worker: restart it, or start the new process beside the old one
// and let the old hand its connections over (docs/UPGRADE.md).
enum class UpgradeMode { kRestart, kHandoff };

// How a child is stopped: brutal_kill (SIGKILL at once), a timeout (SIGTERM,
// then SIGKILL after `timeout`), or infinity (SIGTERM, wait forever).
// `timeout` matters only for kTimeout; the loader sets it to 0 for the other
// kinds so that == (used by reload diffs) compares only what matters.
struct ShutdownSpec {
  enum class Kind { kBrutalKill, kTimeout, kInfinity };
  Kind kind = Kind::kTimeout;
  Millis timeout{5000};
  bool operator==(const ShutdownSpec&) const = default;
};

// How the connections of one port are spread over the replicas naming it.
//   kShared     one socket; every child naming it accepts from it (a wakeup
//               goes to whichever shard's epoll the kernel picks).
//   kRoundRobin one SO_REUSEPORT socket per replica of the one replica set
//               naming it; replica i gets member i, and the kernel picks the
//               member when the SYN arrives (docs/ARCHITECTURE.md).
enum class Balance { kShared, kRoundRobin };

// A listening socket the daemon binds once and hands to children.
struct SocketSpec {
  std::string name;
  std::string host;  // numeric IPv4/IPv6 address or "localhost"
  uint16_t port = 0;
  int backlog = 4096;
  Balance balance = Balance::kShared;
  bool operator==(const SocketSpec&) const = default;
};

// Opt-in restart delay (an extension: OTP restarts at once). The n-th
// consecutive restart waits initial * factor^(n-1), capped at max; the count
// resets once the child has stayed up for `max`.
struct BackoffSpec {
  Millis initial{100};
  Millis max{10000};
  double factor = 2.0;
  bool operator==(const BackoffSpec&) const = default;
};

// Where a replica set came from, kept so operators and reload can see the set.
struct ReplicaOf {
  std::string set_id;  // the `id` written in YAML
  int index = 0;       // this child's {{replica}}
  bool operator==(const ReplicaOf&) const = default;
};

struct SupervisorSpec;

// One entry of a supervisor's `children:` list, after replica expansion.
struct ChildSpec {
  std::string id;  // unique across the whole tree
  bool is_supervisor = false;
  RestartType restart = RestartType::kPermanent;
  ShutdownSpec shutdown;  // default: 5s for workers, infinity for supervisors
  std::optional<ReplicaOf> replica;

  // Worker fields (is_supervisor == false).
  std::vector<std::string> command;                      // argv, command[0] looked up in PATH
  std::vector<std::pair<std::string, std::string>> env;  // added to the daemon's environment
  std::vector<std::string> sockets;                      // names from TreeSpec::sockets
  ReadyMode ready = ReadyMode::kNotify;
  Millis start_timeout{10000};
  std::vector<int> success_exit_codes;  // exit statuses counted as normal besides 0
  std::optional<BackoffSpec> backoff;
  UpgradeMode upgrade = UpgradeMode::kRestart;
  // Prometheus endpoint the child serves, "host:port"; in a replica set the
  // port is the base plus the index. Substituted for {{metrics}}.
  std::string metrics;

  // Supervisor fields (is_supervisor == true). Held by pointer-free value:
  // index into SupervisorSpec storage is avoided by nesting directly.
  std::vector<SupervisorSpec> sub;  // exactly one element when is_supervisor

  const SupervisorSpec& supervisor() const { return sub.front(); }
  bool operator==(const ChildSpec&) const;
};

struct SupervisorSpec {
  std::string id;  // "root" for the top-level `supervisor:` unless it names one
  Strategy strategy = Strategy::kOneForOne;
  int intensity = 1;
  Millis period{5000};
  // Ordinary strategies: the children in start order (replica sets expanded).
  // simple_one_for_one: exactly one element, the template (not expanded; its
  // id is the instance prefix), and `instances` says how many start with it.
  std::vector<ChildSpec> children;
  int instances = 0;
  // The unexpanded template of every replica set among `children` (id = the
  // set's id), so a set can be scaled at run time.
  std::vector<ChildSpec> replica_sets;
  bool operator==(const SupervisorSpec&) const = default;
};

inline bool ChildSpec::operator==(const ChildSpec& o) const {
  return id == o.id && is_supervisor == o.is_supervisor && restart == o.restart &&
         shutdown == o.shutdown && replica == o.replica && command == o.command && env == o.env &&
         sockets == o.sockets && ready == o.ready && start_timeout == o.start_timeout &&
         success_exit_codes == o.success_exit_codes && backoff == o.backoff &&
         upgrade == o.upgrade && metrics == o.metrics && sub == o.sub;
}

// node.api: where `switchboard publish` finds the shards' HTTP API.
struct ApiSpec {
  std::string url;       // "http://HOST:PORT" of any shard's port; empty: no API configured
  std::string key_file;  // the bearer key; the shards take the same file (--api-key-file)
  bool operator==(const ApiSpec&) const = default;
};

struct NodeSpec {
  std::string name = "node1";
  std::string control;  // path of the control socket; default /tmp/switchboard/<name>.sock
  std::string events;   // JSON-lines event log; empty = none
  std::string metrics;  // "host:port" of the daemon's Prometheus endpoint; empty = none
  std::string file_sd;  // Prometheus file_sd JSON path; default <control dir>/<name>.targets.json
  ApiSpec api;
  bool operator==(const NodeSpec&) const = default;
};

// cluster: this node's place in a cluster of nodes (docs/CLUSTER.md). The
// loader turns it into flags on the broker child's command (ClusterFlags),
// so the broker stays the one that acts on them, and a reload changing
// this section changes that child's command: it restarts the broker only.
struct ClusterPeerSpec {
  std::string node;          // the member's node name
  std::string broker;        // its broker's peer socket, tcp://HOST:PORT
  std::string curve_public;  // its CURVE public key, Z85 (40 characters)
  bool operator==(const ClusterPeerSpec&) const = default;
};

enum class Membership { kStatic, kEtcd };

struct ClusterSpec {
  std::string name = "default";   // --cluster
  std::string node;               // --node; default node.name
  std::string broker = "broker";  // the id of the child that is this node's broker
  std::string peer_bind;          // --peer-bind tcp://HOST:PORT
  std::string curve_secret_file;  // --curve-secret-file; empty: none
  Membership membership = Membership::kStatic;
  std::vector<ClusterPeerSpec> peers;       // static: one --peer each
  std::vector<std::string> etcd_endpoints;  // etcd: one --etcd each
  std::string advertise;                    // etcd: --advertise; default peer_bind
  int etcd_ttl_s = 10;                      // etcd: --etcd-ttl-s
  bool insecure = false;                    // --insecure
  bool operator==(const ClusterSpec&) const = default;
};

// The broker flags `cluster:` owns: none of them may also be written in the
// broker child's command (the loader refuses it).
inline constexpr const char* kClusterFlags[] = {
    "--node", "--cluster",    "--membership", "--peer",    "--peer-bind", "--curve-secret-file",
    "--etcd", "--etcd-ttl-s", "--advertise",  "--insecure"};

// The flags the daemon appends to the broker child's command, in this order:
// --node N --cluster C --membership static|etcd --peer-bind E
// [--curve-secret-file F] [--insecure], then static: --peer NODE=BROKER=KEY
// per peer; etcd: --etcd URL per endpoint, --advertise A, --etcd-ttl-s N.
std::vector<std::string> ClusterFlags(const ClusterSpec& c);

const char* MembershipName(Membership m);

struct TreeSpec {
  std::string file;  // path it was loaded from, for messages
  NodeSpec node;
  std::optional<ClusterSpec> cluster;
  std::vector<SocketSpec> sockets;
  SupervisorSpec root;
  std::vector<std::string> warnings;  // valid but surprising (e.g. transient sub-supervisor)
};

// The concrete child for replica `index` of `tmpl`: id "<tmpl.id>.<index>",
// every "{{replica}}" in command and env values replaced by the index, the
// metrics port moved up by the index, and "{{metrics}}" replaced by it.
ChildSpec InstantiateReplica(const ChildSpec& tmpl, int index);

// Replaces "{{metrics}}" in command and env values by spec.metrics.
void SubstituteMetrics(ChildSpec& spec);

// "shared" or "round_robin", as YAML writes it.
const char* BalanceName(Balance b);

// For every round_robin socket of `spec`, how many members the daemon binds
// at start: the number of replicas of the set naming it, at least 1 (a set
// scaled to 0, or no child naming the socket, still holds the port).
std::map<std::string, int> RoundRobinMembers(const TreeSpec& spec);

// Names used in YAML and in messages.
const char* StrategyName(Strategy s);
const char* RestartTypeName(RestartType r);
const char* UpgradeModeName(UpgradeMode u);

}  // namespace sb::supervisor
