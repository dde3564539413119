// bench-node-scale: many WebSocket connections with presence held by the
// default node layout (config/cluster.yaml: a broker and N gateway shards on
// one public port, under `switchboard run`), then kill -9 of one shard.
//
// It writes the node's YAML into its own runtime directory under /tmp (free
// ports, N shard replicas, the socket's `balance` from --balance: round_robin
// writes the key, shared leaves it out), starts the built `switchboard run`,
// and waits until the broker has a session with every shard. Client
// processes (bench/presence_client.h, one source address each: 127.0.0.2,
// .3, ...) then connect and join: connection g joins room:<g % topics> with
// the presence u<g>. Figures: connect + join time, each shard's connections
// (the spread), user-space bytes per connection (the shards' RSS growth, read
// once the broker holds every presence and the shards' copies of the
// others' presence are whole or stopped growing),
// kernel memory per connection (/proc/meminfo Slab and /proc/net/sockstat TCP
// pages: both ends of every connection are on this machine), the daemon's and
// the broker's RSS, the broker's presence counts. Then the victim shard is
// killed (SIGKILL, its pid read from the daemon's children in /proc): every
// client whose socket closed reconnects and rejoins with phoenix.js's
// back-off; figures: kill -> join reply p50/p99/max, and per client that
// stayed, the presence_diffs with leaves it saw (one per topic expected) and
// kill -> that diff; and a ticker (one more client process: two sockets
// each publishing a stamped broadcast on "tick" every 20 ms to the others,
// two per shard) shows whether delivery stalled: publish -> receive latency
// and the longest gap between ticks on a socket that stayed open.
//
// Usage: bench-node-scale [--connections N] [--shards S] [--topics T]
//          [--procs P] [--balance round_robin|shared] [--victim K]
//          [--inflight H] [--max-seconds S] [--rejoin-seconds R]
//          [--broker-queue Q] [--presence-interval-ms I] [--presence on|off]
//          [--assert] [--bin-dir DIR]
//          [--keep]
// Defaults: 250000 connections, 13 shards, 1000 topics, ceil(N / 15000)
// client processes (at least 2), round_robin, victim shard 0, 100 handshakes
// in flight per client process, --max-seconds 900, --rejoin-seconds 60,
// --broker-queue 0 (the broker's own --queue-max-messages), --presence on
// (off: the same joins without a presence, to tell the two costs apart),
// --bin-dir the directory of this program. Prints a summary, then one JSON
// line with every figure. Exits 0 when every connection joined, every client
// of the killed shard rejoined and the broker's presence count was whole
// again; with --assert also only if every shard held within 10 % of the mean
// and no client of another shard was disconnected. 1 otherwise, 2 on a usage
// error. Everything it started dies with it (PR_SET_PDEATHSIG, SIGINT,
// SIGTERM, and a SIGALRM backstop after --max-seconds).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "bench/children.h"
#include "bench/figures.h"
#include "bench/presence_client.h"
#include "bench/scrape.h"
#include "common/command_line.h"

namespace fs = std::filesystem;
using sb::bench::kSec;
using sb::bench::MonoNs;
using sb::bench::NodeClientConfig;
using sb::bench::NodeCommand;
using sb::bench::NodeReport;
using sb::bench::PresenceClients;
using sb::bench::ReadAll;
using sb::bench::SleepNs;
using sb::bench::WriteAll;

namespace {

constexpr int kFdsPerProcess = 15000;
constexpr const char* kProgram = "bench-node-scale";

struct Options {
  int connections = 250000;
  int shards = 13;
  int topics = 1000;
  int procs = 0;
  std::string balance = "round_robin";
  int victim = 0;
  int inflight = 100;
  double max_seconds = 900;
  double rejoin_seconds = 60;
  int broker_queue = 0;          // the broker's --queue-max-messages; 0: its default
  int presence_interval_ms = 0;  // the broker's --presence-interval-ms; 0: its default
  std::string presence = "on";
  bool assert_mode = false;
  bool keep = false;
  std::string bin_dir;
};

// ---- /proc ------------------------------------------------------------------

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

long RssKib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string l; std::getline(in, l);) {
    if (l.rfind("VmRSS:", 0) == 0) return std::stol(l.substr(6));
  }
  return -1;
}

// "Slab:" of /proc/meminfo, KiB.
long SlabKib() {
  std::ifstream in("/proc/meminfo");
  for (std::string l; std::getline(in, l);) {
    if (l.rfind("Slab:", 0) == 0) return std::stol(l.substr(5));
  }
  return -1;
}

// The TCP line's "mem" of /proc/net/sockstat: pages charged to TCP buffers.
long TcpMemPages() {
  std::string s = ReadText("/proc/net/sockstat");
  size_t at = s.find("TCP:");
  if (at == std::string::npos) return -1;
  at = s.find(" mem ", at);
  return at == std::string::npos ? -1 : std::stol(s.substr(at + 5));
}

// User + system CPU seconds of `pid` so far; 0 if it is gone.
double CpuSeconds(pid_t pid) {
  std::string s = ReadText("/proc/" + std::to_string(pid) + "/stat");
  size_t p = s.rfind(')');
  if (p == std::string::npos) return 0;
  std::istringstream rest(s.substr(p + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {  // field 3 is state; 14, 15 utime, stime
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

long SysctlValue(const char* path) {
  std::string s = ReadText(path);
  return s.empty() ? -1 : std::stol(s);
}

// The daemon's children: the broker (-1) and each shard by its --shard.
struct NodePids {
  pid_t broker = -1;
  std::vector<pid_t> shards;
};

NodePids ReadNodePids(pid_t daemon, int shards) {
  NodePids out;
  out.shards.assign(static_cast<size_t>(shards), -1);
  std::istringstream kids(ReadText("/proc/" + std::to_string(daemon) + "/task/" +
                                   std::to_string(daemon) + "/children"));
  for (pid_t pid; kids >> pid;) {
    std::string cmd = ReadText("/proc/" + std::to_string(pid) + "/cmdline");
    std::vector<std::string> argv;
    for (size_t at = 0; at < cmd.size();) {
      size_t end = cmd.find('\0', at);
      if (end == std::string::npos) end = cmd.size();
      argv.push_back(cmd.substr(at, end - at));
      at = end + 1;
    }
    if (argv.empty()) continue;
    if (argv[0].ends_with("switchboard-broker")) out.broker = pid;
    for (size_t i = 0; i + 1 < argv.size(); ++i) {
      if (argv[i] != "--shard") continue;
      int k = std::atoi(argv[i + 1].c_str());
      if (k >= 0 && k < shards) out.shards[static_cast<size_t>(k)] = pid;
    }
  }
  return out;
}

// ---- metrics ----------------------------------------------------------------

// The shared readers (bench/scrape.h), under this file's names.
std::string Scrape(uint16_t port, uint64_t deadline) { return sb::bench::Scrape(port, deadline); }
double Sample(const std::string& body, const std::string& name) {
  return sb::bench::FirstSample(body, name);
}
double SampleOf(const std::string& body, const std::string& series) {
  return sb::bench::Sample(body, series);
}

// ---- the node -----------------------------------------------------------------

// Ports [base, base + count) all free on 127.0.0.1 just now, below the
// ephemeral range so that the clients' source ports never take one.
uint16_t FreePorts(int count) {
  for (int attempt = 0; attempt < 200; ++attempt) {
    const int base =
        20000 + static_cast<int>((MonoNs() / 7 + static_cast<uint64_t>(attempt) * 97) % 10000);
    bool ok = true;
    for (int p = base; p < base + count && ok; ++p) {
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(static_cast<uint16_t>(p));
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
      ::close(fd);
    }
    if (ok) return static_cast<uint16_t>(base);
  }
  return 0;
}

struct Node {
  std::string dir, yaml, log;
  pid_t daemon = -1;
  uint16_t port = 0, broker_metrics = 0, shard_metrics = 0;
};

// config/cluster.yaml's layout with this run's paths, ports and scale.
std::string NodeYaml(const Options& o, const Node& n) {
  const std::string broker = "ipc://" + n.dir + "/broker";
  std::string y;
  y += "node:\n  name: scale\n  control: " + n.dir + "/node.sock\n";
  y += "  events: " + n.dir + "/node.events\n  metrics: \"127.0.0.1:0\"\n";
  y += "sockets:\n  - {name: gateway, listen: \"127.0.0.1:" + std::to_string(n.port) +
       "\", backlog: 4096";
  if (o.balance != "shared") y += ", balance: " + o.balance;
  y += "}\n";
  y += "supervisor:\n  strategy: one_for_one\n  intensity: 3\n  period: 5s\n  children:\n";
  y += "    - id: broker\n      command: [\"switchboard-broker\", \"--bind\", \"" + broker +
       "\", \"--metrics\", \"{{metrics}}\"";
  if (o.broker_queue > 0) {
    y += ", \"--queue-max-messages\", \"" + std::to_string(o.broker_queue) + "\"";
  }
  if (o.presence_interval_ms > 0) {
    y += ", \"--presence-interval-ms\", \"" + std::to_string(o.presence_interval_ms) + "\"";
  }
  y += "]\n";
  y += "      metrics: \"127.0.0.1:" + std::to_string(n.broker_metrics) + "\"\n";
  y += "      env: {LOG_LEVEL: warn}\n      restart: permanent\n      shutdown: 5s\n";
  y += "      ready: notify\n      start_timeout: 10s\n";
  y += "    - id: shards\n      type: supervisor\n      strategy: one_for_one\n";
  y += "      intensity: 10\n      period: 10s\n      children:\n";
  y += "        - id: shard\n          replicas: " + std::to_string(o.shards) + "\n";
  // No heartbeats from these clients: the idle timeout must outlast the run.
  y +=
      "          command: [\"switchboard-worker\", \"--shard\", \"{{replica}}\", \"--broker\", \"" +
      broker + "\", \"--metrics\", \"{{metrics}}\", \"--idle-timeout\", \"86400\"]\n";
  y += "          metrics: \"127.0.0.1:" + std::to_string(n.shard_metrics) + "\"\n";
  y += "          env: {LOG_LEVEL: warn}\n          sockets: [gateway]\n";
  y += "          shutdown: 10s\n          ready: notify\n";
  return y;
}

std::string Tail(const std::string& path, size_t lines) {
  std::ifstream in(path);
  std::vector<std::string> all;
  for (std::string l; std::getline(in, l);) all.push_back(l);
  std::string out;
  for (size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) {
    out += "  | " + all[i] + "\n";
  }
  return out;
}

bool DaemonAlive(Node& n) {
  if (n.daemon <= 0) return false;
  if (::waitpid(n.daemon, nullptr, WNOHANG) == n.daemon) {
    sb::bench::Untrack(n.daemon);
    n.daemon = -1;
    return false;
  }
  return true;
}

// Every shard's open connections (-1 where the scrape failed).
std::vector<double> ShardConnections(const Options& o, const Node& n, uint64_t deadline) {
  std::vector<double> v;
  for (int k = 0; k < o.shards; ++k) {
    v.push_back(Sample(Scrape(static_cast<uint16_t>(n.shard_metrics + k), deadline),
                       "switchboard_worker_connections"));
  }
  return v;
}

// Sums `name` over every shard (a failed scrape counts -1 and makes the sum
// negative, so it shows).
double ShardSum(const Options& o, const Node& n, const std::string& name, uint64_t deadline) {
  double sum = 0;
  for (int k = 0; k < o.shards; ++k) {
    sum += Sample(Scrape(static_cast<uint16_t>(n.shard_metrics + k), deadline), name);
  }
  return sum;
}

// Waits until the broker has a session with every shard and every shard
// serves metrics.
bool WaitForNode(const Options& o, Node& n, uint64_t deadline) {
  while (MonoNs() < deadline && DaemonAlive(n)) {
    std::string b = Scrape(n.broker_metrics, deadline);
    if (Sample(b, "switchboard_broker_connected_shards") == o.shards) {
      std::vector<double> c = ShardConnections(o, n, deadline);
      if (std::none_of(c.begin(), c.end(), [](double x) { return x < 0; })) return true;
    }
    SleepNs(50'000'000);
  }
  return false;
}

// Waits until the broker holds `want` presences; the last count seen (-1:
// none answered).
double WaitForPresences(const Node& n, double want, uint64_t deadline) {
  double have = -1;
  while (MonoNs() < deadline) {
    // A broker too busy to answer within the scrape's bound keeps the last count.
    const double now = Sample(Scrape(n.broker_metrics, deadline), "switchboard_broker_presences");
    if (now >= 0) have = now;
    if (have == want) break;
    SleepNs(100'000'000);
  }
  return have;
}

std::string StopDaemon(Node& n) {
  if (!DaemonAlive(n)) return "already gone";
  ::kill(n.daemon, SIGTERM);
  const uint64_t deadline = MonoNs() + 30 * kSec;
  int st = 0;
  while (MonoNs() < deadline) {
    if (::waitpid(n.daemon, &st, WNOHANG) == n.daemon) {
      sb::bench::Untrack(n.daemon);
      n.daemon = -1;
      return WIFEXITED(st) ? "exit " + std::to_string(WEXITSTATUS(st))
                           : "signal " + std::to_string(WTERMSIG(st));
    }
    SleepNs(10'000'000);
  }
  ::kill(n.daemon, SIGKILL);  // its children have PDEATHSIG
  ::waitpid(n.daemon, nullptr, 0);
  sb::bench::Untrack(n.daemon);
  n.daemon = -1;
  return "killed after 30 s";
}

// ---- clients ------------------------------------------------------------------

struct Child {
  pid_t pid = -1;
  int ctl = -1;
  NodeReport last;
  bool ok = true;
};

void Send(std::vector<Child>& kids, char op, uint64_t arg = 0) {
  NodeCommand cmd;
  cmd.op = op;
  cmd.arg = arg;
  for (Child& c : kids) {
    if (c.ok && !WriteAll(c.ctl, &cmd, sizeof cmd)) c.ok = false;
  }
}

// One report from every client process; false if one did not answer.
bool Collect(std::vector<Child>& kids, uint64_t deadline) {
  bool all = true;
  for (Child& c : kids) {
    if (c.ok && !ReadAll(c.ctl, &c.last, sizeof c.last, deadline)) {
      std::fprintf(stderr, "%s: no report from client process %d\n", kProgram, c.pid);
      c.ok = false;
    }
    all = all && c.ok;
  }
  return all;
}

NodeReport Sum(const std::vector<Child>& kids) {
  NodeReport s;
  for (const Child& c : kids) {
    const NodeReport& r = c.last;
    s.joined_first += r.joined_first;
    s.held += r.held;
    s.last_first_join_ns = std::max(s.last_first_join_ns, r.last_first_join_ns);
    s.failed_connect += r.failed_connect;
    s.failed_upgrade += r.failed_upgrade;
    s.failed_join += r.failed_join;
    s.failed_other += r.failed_other;
    if (r.last_http_status) s.last_http_status = r.last_http_status;
    if (r.last_close_code) s.last_close_code = r.last_close_code;
    s.closed_before_kill += r.closed_before_kill;
    s.closed_after_kill += r.closed_after_kill;
    s.rejoined += r.rejoined;
    s.rejoin_max_ns = std::max(s.rejoin_max_ns, r.rejoin_max_ns);
    s.rejoin.Merge(r.rejoin);
    s.survivors += r.survivors;
    s.leave_diffs_0 += r.leave_diffs_0;
    s.leave_diffs_1 += r.leave_diffs_1;
    s.leave_diffs_more += r.leave_diffs_more;
    s.leave_diffs += r.leave_diffs;
    s.leave_keys += r.leave_keys;
    s.leave_max_ns = std::max(s.leave_max_ns, r.leave_max_ns);
    s.leave.Merge(r.leave);
    s.diffs += r.diffs;
    s.states += r.states;
    s.state_bytes += r.state_bytes;
    s.messages += r.messages;
    s.ticks_sent += r.ticks_sent;
    s.ticks_received += r.ticks_received;
    s.tick_gap_max_ns = std::max(s.tick_gap_max_ns, r.tick_gap_max_ns);
    s.tick_latency_max_ns = std::max(s.tick_latency_max_ns, r.tick_latency_max_ns);
    s.tick_publisher_closed += r.tick_publisher_closed;
    s.tick_receivers_open += r.tick_receivers_open;
    s.tick_latency.Merge(r.tick_latency);
  }
  return s;
}

// CPU seconds so far of the shards (all but `skip`, -1 for none), the
// broker and the client processes.
struct Cpu {
  double shards = 0, broker = 0, clients = 0;
};
Cpu CpuNow(const NodePids& pids, const std::vector<Child>& kids, int skip = -1) {
  Cpu c;
  for (size_t k = 0; k < pids.shards.size(); ++k) {
    if (static_cast<int>(k) != skip) c.shards += CpuSeconds(pids.shards[k]);
  }
  c.broker = CpuSeconds(pids.broker);
  for (const Child& k : kids) c.clients += CpuSeconds(k.pid);
  return c;
}

void Reap(std::vector<Child>& kids) {
  for (Child& c : kids) {
    const uint64_t until = MonoNs() + 5 * kSec;
    bool reaped = false;
    while (!(reaped = ::waitpid(c.pid, nullptr, WNOHANG) == c.pid) && MonoNs() < until) {
      SleepNs(2'000'000);
    }
    if (!reaped) {
      ::kill(c.pid, SIGKILL);
      ::waitpid(c.pid, nullptr, 0);
    }
    sb::bench::Untrack(c.pid);
    ::close(c.ctl);
  }
}

bool StartClients(const NodeClientConfig& cfg, std::vector<Child>* kids) {
  sb::bench::Forked fk = sb::bench::ForkWithControl([&cfg](int ctl) {
    auto clients = std::make_unique<PresenceClients>(cfg, ctl);
    return clients->Run();
  });
  if (fk.pid < 0) {
    std::fprintf(stderr, "%s: fork failed\n", kProgram);
    sb::bench::KillChildren();
    return false;
  }
  kids->push_back(Child{fk.pid, fk.ctl, {}, true});
  return true;
}

using sb::bench::Figures;

void CpuFigures(Figures& f, const std::string& phase, const Cpu& a, const Cpu& b) {
  f.Num(phase + "_cpu_shards_s", b.shards - a.shards, 2);
  f.Num(phase + "_cpu_broker_s", b.broker - a.broker, 2);
  f.Num(phase + "_cpu_clients_s", b.clients - a.clients, 2);
}

// What the broker shed or repaired so far: its queues to slow shards.
void BrokerQueueFigures(Figures& f, const std::string& when, const std::string& body) {
  f.Num("broker_shed_" + when, SampleOf(body, "switchboard_broker_dropped_total{reason=\"shed\"}"));
  f.Num("broker_expired_" + when,
        SampleOf(body, "switchboard_broker_dropped_total{reason=\"expired\"}"));
  f.Num("broker_snapshots_" + when,
        SampleOf(body, "switchboard_broker_presence_messages_total{kind=\"snapshot\"}"));
  f.Num("broker_hellos_" + when,
        SampleOf(body, "switchboard_broker_link_events_total{event=\"hello\"}"));
}

std::string Join(const std::vector<double>& v) {
  std::string s;
  for (double x : v) s += (s.empty() ? "" : " ") + std::to_string(static_cast<long>(x));
  return s;
}

int Usage(const char* why) {
  std::fprintf(stderr,
               "%s: %s\nusage: %s [--connections N] [--shards S] [--topics T] [--procs P]\n"
               "         [--balance round_robin|shared] [--victim K] [--inflight H]\n"
               "         [--max-seconds S] [--rejoin-seconds R] [--broker-queue Q]\n"
               "         [--presence on|off] [--assert] [--bin-dir DIR] [--keep]\n",
               kProgram, why, kProgram);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  o.bin_dir = fs::read_symlink("/proc/self/exe").parent_path().string();
  CLI::App app{"bench-node-scale: connections with presence on a whole node, then kill a shard"};
  app.add_option("--connections", o.connections, "WebSocket connections")->capture_default_str();
  app.add_option("--shards", o.shards, "shard replicas")->capture_default_str();
  app.add_option("--topics", o.topics, "topics (connection g joins room:<g % T>)")
      ->capture_default_str();
  app.add_option("--procs", o.procs, "client processes (0: one per 15000 connections, >= 2)")
      ->capture_default_str();
  app.add_option("--balance", o.balance,
                 "the socket's balance (shared: the key is left out of the YAML)")
      ->capture_default_str();
  app.add_option("--victim", o.victim, "the shard killed")->capture_default_str();
  app.add_option("--inflight", o.inflight, "handshakes in flight per client process")
      ->capture_default_str();
  app.add_option("--max-seconds", o.max_seconds, "bound on the whole bench")->capture_default_str();
  app.add_option("--rejoin-seconds", o.rejoin_seconds, "bound on the rejoin after the kill")
      ->capture_default_str();
  app.add_option("--presence", o.presence, "on: every join tracks a presence; off: none")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  app.add_option("--broker-queue", o.broker_queue,
                 "the broker's --queue-max-messages per shard (0: its default)")
      ->capture_default_str();
  app.add_option("--presence-interval-ms", o.presence_interval_ms,
                 "the broker's --presence-interval-ms (0: its default)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--assert", o.assert_mode,
               "also fail unless every shard holds within 10 % of the mean and the kill "
               "disconnected only the victim's clients");
  app.add_option("--bin-dir", o.bin_dir, "where switchboard and its programs are")
      ->capture_default_str();
  app.add_flag("--keep", o.keep, "keep the runtime directory (logs, YAML)");
  if (std::optional<int> exit = sb::ParseCommandLine(app, argc, argv)) return *exit;
  if (o.connections < 1 || o.shards < 2 || o.shards > 64 || o.topics < 1 || o.victim < 0 ||
      o.victim >= o.shards || o.inflight < 1 || o.broker_queue < 0 || o.max_seconds <= 0 ||
      o.rejoin_seconds <= 0) {
    return Usage("out-of-range value");
  }
  if (o.procs <= 0) o.procs = std::max(2, (o.connections + kFdsPerProcess - 1) / kFdsPerProcess);
  if (o.procs > 250 || (o.connections + o.procs - 1) / o.procs > kFdsPerProcess) {
    return Usage("--procs must leave each process at most 15000 connections (and be <= 250)");
  }

  sb::bench::KillChildrenOnSignal(kProgram,
                                  "interrupted or over time, killed the node and clients");
  alarm(static_cast<unsigned>(o.max_seconds) + 30);  // backstop over every phase's deadline
  const uint64_t t_start = MonoNs();
  const uint64_t deadline = t_start + static_cast<uint64_t>(o.max_seconds * 1e9);
  Figures f;
  f.Num("connections", o.connections);
  f.Num("shards", o.shards);
  f.Num("topics", o.topics);
  f.Num("client_procs", o.procs);
  f.Str("balance", o.balance);
  f.Str("presence", o.presence);
  const double want_presences = o.presence == "on" ? o.connections : 0;
  f.Num("somaxconn", SysctlValue("/proc/sys/net/core/somaxconn"));
  f.Num("tcp_max_syn_backlog", SysctlValue("/proc/sys/net/ipv4/tcp_max_syn_backlog"));

  // ---- the node ----
  char tmpl[] = "/tmp/sb-node-scale-XXXXXX";
  if (!mkdtemp(tmpl)) return 1;
  Node node;
  node.dir = tmpl;
  node.yaml = node.dir + "/node.yaml";
  node.log = node.dir + "/switchboard.log";
  const uint16_t base = FreePorts(2 + o.shards);
  if (base == 0) {
    std::fprintf(stderr, "%s: no %d free ports in a row\n", kProgram, 2 + o.shards);
    return 1;
  }
  node.port = base;
  node.broker_metrics = static_cast<uint16_t>(base + 1);
  node.shard_metrics = static_cast<uint16_t>(base + 2);
  std::ofstream(node.yaml) << NodeYaml(o, node);
  ::setenv("LOG_LEVEL", "warn", 1);
  node.daemon = sb::bench::SpawnProgram(o.bin_dir + "/switchboard", {"run", node.yaml}, node.log);
  const long slab0 = SlabKib(), tcp0 = TcpMemPages();
  if (node.daemon < 0 ||
      !WaitForNode(o, node, std::min(deadline, MonoNs() + 30 * kSec + o.shards * kSec))) {
    std::fprintf(stderr, "%s: the node did not come up; %s:\n%s", kProgram, node.log.c_str(),
                 Tail(node.log, 20).c_str());
    sb::bench::KillChildren();
    return 1;
  }
  const uint64_t t_up = MonoNs();
  NodePids pids = ReadNodePids(node.daemon, o.shards);
  std::vector<long> rss0;
  for (pid_t p : pids.shards) rss0.push_back(RssKib(p));
  const long daemon_rss0 = RssKib(node.daemon), broker_rss0 = RssKib(pids.broker);
  f.Num("node_start_s", static_cast<double>(t_up - t_start) / 1e9, 3);

  // ---- connect and join ----
  std::vector<Child> kids;
  const uint64_t t_fork = MonoNs();
  for (int p = 0; p < o.procs; ++p) {
    NodeClientConfig cfg;
    cfg.first = static_cast<int>(static_cast<long>(o.connections) * p / o.procs);
    cfg.count = static_cast<int>(static_cast<long>(o.connections) * (p + 1) / o.procs) - cfg.first;
    cfg.topics = o.topics;
    cfg.presence = o.presence == "on";
    cfg.source = htonl(INADDR_LOOPBACK + 2 + static_cast<uint32_t>(p));
    cfg.port = node.port;
    cfg.inflight = o.inflight;
    cfg.deadline_ns = deadline + 10 * kSec;  // the parent ends first and says so
    if (!StartClients(cfg, &kids)) return 1;
  }
  const Cpu cpu_fork = CpuNow(pids, kids);
  bool ok = Collect(kids, deadline);
  const Cpu cpu_joined = CpuNow(pids, kids);
  NodeReport joined = Sum(kids);
  const double connect_s = joined.last_first_join_ns > t_fork
                               ? static_cast<double>(joined.last_first_join_ns - t_fork) / 1e9
                               : 0;
  std::printf("%llu of %d connections joined in %.3f s by %d client processes\n",
              static_cast<unsigned long long>(joined.joined_first), o.connections, connect_s,
              o.procs);
  std::fflush(stdout);
  ok = ok && joined.joined_first == static_cast<uint64_t>(o.connections);
  f.Num("joined", joined.joined_first);
  f.Num("connect_join_all_s", connect_s, 3);
  f.Num("joins_per_s", connect_s > 0 ? static_cast<double>(joined.joined_first) / connect_s : 0);
  f.Num("failed_connect", joined.failed_connect);
  f.Num("failed_upgrade", joined.failed_upgrade);
  f.Num("failed_join", joined.failed_join);
  f.Num("failed_other", joined.failed_other);
  f.Num("last_http_status", joined.last_http_status);
  CpuFigures(f, "connect", cpu_fork, cpu_joined);

  // The ticker: two sockets per shard on "tick" (evenly spread or not), two
  // of them publishing to the others every 20 ms each.
  {
    NodeClientConfig cfg;
    cfg.count = 2 + 2 * o.shards;
    cfg.ticker = true;
    cfg.source = htonl(INADDR_LOOPBACK + 2 + static_cast<uint32_t>(o.procs));
    cfg.port = node.port;
    cfg.deadline_ns = deadline + 10 * kSec;
    if (!StartClients(cfg, &kids)) return 1;
    Child& t = kids.back();
    if (!ReadAll(t.ctl, &t.last, sizeof t.last, deadline) ||
        t.last.joined_first != static_cast<uint64_t>(cfg.count)) {
      std::fprintf(stderr, "%s: the ticker's sockets did not all join\n", kProgram);
      ok = false;
    }
  }

  // Presence settles when the broker holds one meta per connection.
  const uint64_t t_joined = MonoNs();
  const double presences =
      WaitForPresences(node, want_presences, std::min(deadline, t_joined + 120 * kSec));
  f.Num("presence_settle_s", static_cast<double>(MonoNs() - t_joined) / 1e9, 3);
  // Then the shards' copies of the others' presence: memory is read once
  // they hold it all (every shard then has every other shard's metas of its
  // topics: connections × (shards − 1) when each shard has every topic), or
  // have not grown for 3 s, within 120 s more.
  if (o.presence == "on") {
    const uint64_t t0 = MonoNs();
    const double whole = static_cast<double>(o.connections) * (o.shards - 1);
    double last = -1;
    int still = 0;
    while (MonoNs() < std::min(deadline, t0 + 120 * kSec) && still < 3) {
      const double now =
          ShardSum(o, node, "switchboard_worker_remote_presence_metas", MonoNs() + 10 * kSec);
      if (now >= whole) break;
      still = now == last ? still + 1 : 0;
      last = now;
      SleepNs(1'000'000'000);
    }
    f.Num("shards_presence_settle_s", static_cast<double>(MonoNs() - t0) / 1e9, 3);
  }
  const long slab1 = SlabKib(), tcp1 = TcpMemPages();
  std::vector<double> spread = ShardConnections(o, node, MonoNs() + 10 * kSec);
  const std::string broker_body = Scrape(node.broker_metrics, MonoNs() + 10 * kSec);
  long rss_growth = 0;
  std::vector<double> rss_mib;
  for (size_t k = 0; k < pids.shards.size(); ++k) {
    const long now = RssKib(pids.shards[k]);
    rss_growth += now - rss0[k];
    rss_mib.push_back(static_cast<double>(now) / 1024.0);
  }
  double mean = 0, lo = 1e18, hi = 0;
  for (double c : spread) {
    mean += c / static_cast<double>(spread.size());
    lo = std::min(lo, c);
    hi = std::max(hi, c);
  }
  const bool spread_ok = lo >= mean * 0.9 && hi <= mean * 1.1;
  const double n = static_cast<double>(o.connections);
  f.Str("shard_connections", Join(spread));
  f.Num("shard_connections_min_pct_of_mean", mean > 0 ? lo * 100 / mean : 0, 1);
  f.Num("shard_connections_max_pct_of_mean", mean > 0 ? hi * 100 / mean : 0, 1);
  f.Str("shard_rss_mib", Join(rss_mib));
  f.Num("user_bytes_per_connection", static_cast<double>(rss_growth) * 1024.0 / n);
  // Both ends of every connection are sockets of this machine: the figures
  // are per connection, client and server socket together.
  f.Num("kernel_slab_bytes_per_connection", static_cast<double>(slab1 - slab0) * 1024.0 / n);
  f.Num("kernel_tcp_buffer_bytes_per_connection", static_cast<double>(tcp1 - tcp0) * 4096.0 / n);
  f.Num("daemon_rss_kib", RssKib(node.daemon));
  f.Num("daemon_rss_before_kib", daemon_rss0);
  f.Num("broker_rss_kib", RssKib(pids.broker));
  f.Num("broker_rss_before_kib", broker_rss0);
  f.Num("broker_presences", presences);
  // The presence state, cluster-wide: every shard's copy of the other
  // shards' metas (text: keys, refs and metas' JSON; the heap holds a few
  // times this) and how many metas those copies hold.
  f.Num("shards_remote_presence_metas",
        ShardSum(o, node, "switchboard_worker_remote_presence_metas", MonoNs() + 10 * kSec));
  f.Num("shards_remote_presence_text_bytes",
        ShardSum(o, node, "switchboard_worker_remote_presence_bytes", MonoNs() + 10 * kSec));
  f.Num("broker_topics", Sample(broker_body, "switchboard_broker_topics"));
  f.Num("broker_subscriptions", Sample(broker_body, "switchboard_broker_subscriptions"));
  BrokerQueueFigures(f, "joined", broker_body);
  f.Num("presence_states_received", joined.states);
  f.Num("presence_state_mean_bytes",
        joined.states ? static_cast<double>(joined.state_bytes) / static_cast<double>(joined.states)
                      : 0);
  f.Num("presence_diffs_received", joined.diffs);
  if (o.assert_mode && !spread_ok) {
    std::fprintf(stderr, "%s: uneven spread: shard connections %s, mean %.0f (allowed +-10 %%)\n",
                 kProgram, Join(spread).c_str(), mean);
  }
  ok = ok && presences == want_presences;

  // ---- kill one shard ----
  const size_t victim = static_cast<size_t>(o.victim);
  const double victim_conns = spread[victim];
  Send(kids, 'a');
  ok = Collect(kids, deadline) && ok;
  const Cpu cpu_kill = CpuNow(pids, kids, o.victim);
  const uint64_t t_kill = MonoNs();
  ::kill(pids.shards[victim], SIGKILL);
  Send(kids, 'k', t_kill);
  const uint64_t rejoin_by =
      std::min(deadline, t_kill + static_cast<uint64_t>(o.rejoin_seconds * 1e9));
  NodeReport st;
  while (MonoNs() < rejoin_by) {
    SleepNs(100'000'000);
    Send(kids, 'q');
    if (!Collect(kids, rejoin_by + 5 * kSec)) break;
    st = Sum(kids);
    if (st.closed_after_kill >= victim_conns && st.rejoined >= st.closed_after_kill) break;
  }
  const double rejoin_wait_s = static_cast<double>(MonoNs() - t_kill) / 1e9;
  // The restarted victim counts whole: it started after the kill.
  const Cpu cpu_rejoined = CpuNow(ReadNodePids(node.daemon, o.shards), kids);
  const double after =
      WaitForPresences(node, want_presences, std::min(deadline, MonoNs() + 30 * kSec));
  // The shards hand the broker's leaves to their clients after it counted
  // them: wait until the survivors' leave diffs stop coming.
  const uint64_t settle_by = std::min(deadline, MonoNs() + 10 * kSec);
  uint64_t leave_seen = ~0ULL, stable_since = MonoNs();
  while (MonoNs() < settle_by && MonoNs() - stable_since < kSec / 2) {
    SleepNs(100'000'000);
    Send(kids, 'q');
    if (!Collect(kids, settle_by + 5 * kSec)) break;
    const uint64_t seen = Sum(kids).leave_diffs;
    if (seen != leave_seen) {
      leave_seen = seen;
      stable_since = MonoNs();
    }
  }
  const NodePids pids2 = ReadNodePids(node.daemon, o.shards);
  std::vector<double> spread2 = ShardConnections(o, node, MonoNs() + 10 * kSec);
  Send(kids, 's');
  ok = Collect(kids, deadline + 5 * kSec) && ok;
  NodeReport fin = Sum(kids);
  f.Num("victim_shard", o.victim);
  f.Num("victim_connections", victim_conns);
  f.Num("victim_restarted",
        pids2.shards[victim] > 0 && pids2.shards[victim] != pids.shards[victim]);
  f.Num("closed_by_kill", fin.closed_after_kill);
  f.Num("rejoined", fin.rejoined);
  f.Num("rejoin_p50_ms", fin.rejoin.Percentile(50) / 1e6, 1);
  f.Num("rejoin_p99_ms", fin.rejoin.Percentile(99) / 1e6, 1);
  f.Num("rejoin_all_ms", static_cast<double>(fin.rejoin_max_ns) / 1e6, 1);
  f.Num("rejoin_wait_s", rejoin_wait_s, 3);
  CpuFigures(f, "rejoin", cpu_kill, cpu_rejoined);
  f.Num("failed_connect_total", fin.failed_connect);
  f.Num("failed_upgrade_total", fin.failed_upgrade);
  f.Num("failed_join_total", fin.failed_join);
  f.Num("failed_other_total", fin.failed_other);
  f.Num("closed_before_kill", fin.closed_before_kill);
  f.Num("survivors", fin.survivors);
  f.Num("survivors_with_0_leave_diffs", fin.leave_diffs_0);
  f.Num("survivors_with_1_leave_diff", fin.leave_diffs_1);
  f.Num("survivors_with_more_leave_diffs", fin.leave_diffs_more);
  f.Num("leave_keys_per_leave_diff",
        fin.leave_diffs ? static_cast<double>(fin.leave_keys) / static_cast<double>(fin.leave_diffs)
                        : 0,
        1);
  f.Num("leave_diff_p50_ms", fin.leave.Percentile(50) / 1e6, 1);
  f.Num("leave_diff_p99_ms", fin.leave.Percentile(99) / 1e6, 1);
  f.Num("leave_diff_max_ms", static_cast<double>(fin.leave_max_ns) / 1e6, 1);
  f.Num("broker_presences_after", after);
  BrokerQueueFigures(f, "end", Scrape(node.broker_metrics, MonoNs() + 10 * kSec));
  f.Num("ticks_sent", fin.ticks_sent);
  f.Num("ticks_received", fin.ticks_received);
  f.Num("tick_publishers_on_victim", fin.tick_publisher_closed);
  f.Num("tick_receivers_not_on_victim", fin.tick_receivers_open);
  f.Num("tick_latency_p50_ms", fin.tick_latency.Percentile(50) / 1e6, 2);
  f.Num("tick_latency_p99_ms", fin.tick_latency.Percentile(99) / 1e6, 2);
  f.Num("tick_latency_max_ms", static_cast<double>(fin.tick_latency_max_ns) / 1e6, 2);
  f.Num("tick_gap_max_ms", static_cast<double>(fin.tick_gap_max_ns) / 1e6, 1);
  f.Str("shard_connections_after", Join(spread2));
  const bool rejoin_ok = fin.closed_after_kill > 0 && fin.rejoined == fin.closed_after_kill &&
                         after == want_presences && fin.closed_before_kill == 0;
  if (!rejoin_ok) {
    std::fprintf(stderr,
                 "%s: after the kill %llu of %llu closed clients rejoined, broker presences %.0f "
                 "of %.0f, %llu closed before the kill\n",
                 kProgram, static_cast<unsigned long long>(fin.rejoined),
                 static_cast<unsigned long long>(fin.closed_after_kill), after, want_presences,
                 static_cast<unsigned long long>(fin.closed_before_kill));
  }
  const bool others_ok = fin.closed_after_kill == static_cast<uint64_t>(victim_conns);
  if (o.assert_mode && !others_ok) {
    std::fprintf(stderr, "%s: the kill closed %llu sockets, the victim held %.0f\n", kProgram,
                 static_cast<unsigned long long>(fin.closed_after_kill), victim_conns);
  }
  ok = ok && rejoin_ok && (!o.assert_mode || (spread_ok && others_ok));

  f.Str("stop", StopDaemon(node));
  Reap(kids);
  sb::bench::KillChildren();
  if (!ok) {
    std::fprintf(stderr, "%s: failed; the node's log %s:\n%s", kProgram, node.log.c_str(),
                 Tail(node.log, 20).c_str());
  }
  if (ok && !o.keep) fs::remove_all(node.dir);
  f.Print();
  return ok ? 0 : 1;
}
