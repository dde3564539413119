// bench-ws-load: WebSocket load against one gateway shard (switchboard-worker),
// or (fanout --shards 2 or more) against shards joined by a node broker.
//
// Two scenarios; each starts its own worker(s) and stops them at the end:
//   idle    N connections upgraded and joined to one topic each (idle:<i % 100>),
//           held while the worker's VmRSS is read: user-space bytes per connection.
//   fanout  S subscribers joined to "fan" and one publisher pushing to it at
//           --rate per second (0: as fast as a window of W unacknowledged pushes
//           allows) for --duration seconds: deliveries, worker CPU per delivery,
//           publish -> deliver latency (CLOCK_MONOTONIC stamped in the payload).
//           With --shards K > 1 it starts switchboard-broker (tcp loopback, an
//           ephemeral port) and K workers connected to it (--broker), spreads
//           the subscribers evenly over the shards (client process p talks to
//           shard p % K; --procs is rounded up to a multiple of K), puts the
//           publisher on shard 0, waits until the broker holds every shard's
//           subscription and its settle window is over, and reports each
//           shard's and the broker's CPU and both sides' counters of the mesh
//           session (published, delivered, duplicates, shed).
// Clients are forked processes (the open-files cap is per process), each a
// single-threaded epoll loop over non-blocking sockets (bench/client_process.h
// over bench/ws_client.h), each bound to its own source address (127.0.0.2,
// .3, ...), reporting to this parent over a socketpair. Every phase has a deadline inside
// --max-seconds; the worker and the children die with the parent (PR_SET_PDEATHSIG) and on
// SIGINT/SIGTERM.
//
// Usage: bench-ws-load --scenario idle --connections N [--procs P]
//        bench-ws-load --scenario fanout --subscribers S --rate R --duration D
//                      [--payload-bytes B] [--window W] [--procs P]
//                      [--shards K] [--broker PATH] [--broker-queue Q]
//        common: [--worker PATH] [--max-seconds S] [--inflight H]
// --procs defaults to ceil(N / 15000) client processes (the fanout publisher
// is one more); --worker and --broker to the programs beside this one;
// --rate 0, --window 64, --payload-bytes 64, --max-seconds 120, --inflight
// 500, --shards 1, --broker-queue 0 (the broker's own --queue-max-messages).
// Prints a summary, then one JSON line with every figure. Exits 0 when every
// connection was held (idle) or every acknowledged push reached every
// subscriber (fanout), 1 otherwise, 2 on a usage error.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "bench/children.h"
#include "bench/client_process.h"
#include "bench/figures.h"
#include "bench/scrape.h"
#include "common/command_line.h"

namespace fs = std::filesystem;
using sb::bench::ClientConfig;
using sb::bench::ClientProcess;
using sb::bench::ClientRole;
using sb::bench::Command;
using sb::bench::Figures;
using sb::bench::KillChildren;
using sb::bench::kSec;
using sb::bench::MonoNs;
using sb::bench::ReadAll;
using sb::bench::ReadHistogram;
using sb::bench::Report;
using sb::bench::Sample;
using sb::bench::Scrape;
using sb::bench::ScrapedHistogram;
using sb::bench::SleepNs;
using sb::bench::Untrack;
using sb::bench::WriteAll;

namespace {

constexpr int kFdsPerProcess = 15000;

struct Options {
  std::string scenario;
  int connections = 1000;
  int subscribers = 100;
  int procs = 0;
  double rate = 0;
  double duration = 10;
  int payload_bytes = 64;
  int window = 64;
  int inflight = 500;
  double max_seconds = 120;
  std::string worker;
  int shards = 1;
  int broker_queue = 0;
  std::string broker;
  std::string history;  // SIZE/TTL for "fan", or empty
};

struct Worker {
  pid_t pid = -1;
  uint16_t port = 0;
  uint16_t metrics_port = 0;  // multi-shard runs only
  std::string log;
};

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

// Waits for `w`'s log to say `pattern` followed by a nonzero port.
bool WaitForPort(Worker* w, std::string_view pattern, uint64_t deadline, uint16_t* port) {
  while (MonoNs() < deadline) {
    std::ifstream in(w->log);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    size_t at = text.find(pattern);
    if (at != std::string::npos && text.find('\n', at) != std::string::npos) {
      *port = static_cast<uint16_t>(std::atoi(text.c_str() + at + pattern.size()));
      if (*port != 0) return true;
    }
    if (::waitpid(w->pid, nullptr, WNOHANG) == w->pid) {
      Untrack(w->pid);
      w->pid = -1;
      return false;
    }
    SleepNs(10000000);
  }
  return false;
}

// Starts `exe` with its output in `log` and waits for the log to say
// `pattern` followed by a nonzero port (the worker's "listening on
// 127.0.0.1:", the broker's "bound tcp://127.0.0.1:").
bool StartWorker(const std::string& exe, const std::vector<std::string>& args,
                 const std::string& log, uint64_t deadline, Worker* w,
                 std::string_view pattern = "listening on 127.0.0.1:") {
  w->log = log;
  w->pid = sb::bench::SpawnProgram(exe, args, log);
  if (w->pid < 0) return false;
  return WaitForPort(w, pattern, deadline, &w->port);
}

// Returns "exit N", "signal N" or "killed after timeout".
std::string StopWorker(Worker* w) {
  if (w->pid <= 0) return "already gone";
  ::kill(w->pid, SIGTERM);
  uint64_t deadline = MonoNs() + 10 * kSec;
  int st = 0;
  while (MonoNs() < deadline) {
    if (::waitpid(w->pid, &st, WNOHANG) == w->pid) {
      Untrack(w->pid);
      w->pid = -1;
      return WIFEXITED(st) ? "exit " + std::to_string(WEXITSTATUS(st))
                           : "signal " + std::to_string(WTERMSIG(st));
    }
    SleepNs(5000000);
  }
  ::kill(w->pid, SIGKILL);
  ::waitpid(w->pid, &st, 0);
  Untrack(w->pid);
  w->pid = -1;
  return "killed after timeout";
}

long RssKib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string l; std::getline(in, l);) {
    if (l.rfind("VmRSS:", 0) == 0) return std::stol(l.substr(6));
  }
  return -1;
}

double CpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t p = s.rfind(')');
  if (p == std::string::npos) return -1;
  std::istringstream rest(s.substr(p + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {  // field 3 is state; 14, 15 utime, stime
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// A new broker holds publishes for 2 x its heartbeat interval (1 s, the
// default, not overridden here) + 500 ms after it starts (its settle window,
// docs/PROTOCOL.md); the publisher starts after it, with a margin.
constexpr uint64_t kBrokerSettleNs = 3 * kSec;

// The node broker of a multi-shard run: its process and metrics port.
struct Broker {
  Worker proc;
  uint16_t metrics_port = 0;
  uint64_t started_ns = 0;
};

// Waits until the broker has a session with every shard and each of them
// subscribes to the fanout topic (one topic: subscriptions == shards).
bool WaitForMesh(const Broker& b, int shards, uint64_t deadline) {
  while (MonoNs() < deadline) {
    std::string body = Scrape(b.metrics_port, deadline);
    if (Sample(body, "switchboard_broker_connected_shards") == shards &&
        Sample(body, "switchboard_broker_subscriptions") == shards) {
      return true;
    }
    SleepNs(20000000);
  }
  return false;
}

struct Child {
  pid_t pid = -1;
  int ctl = -1;
  Report joined, final;
  bool got_joined = false, got_final = false;
};

Child SpawnChild(const Options& o, ClientRole role, int index, int first, int count, uint16_t port,
                 uint64_t deadline) {
  ClientConfig cfg;
  cfg.role = role;
  cfg.first = first;
  cfg.count = count;
  cfg.source = htonl(INADDR_LOOPBACK + 2 + static_cast<uint32_t>(index));
  cfg.port = port;
  cfg.inflight = o.inflight;
  cfg.rate = o.rate;
  cfg.window = o.window;
  cfg.duration = o.duration;
  cfg.payload_bytes = o.payload_bytes;
  cfg.deadline_ns = deadline;
  Child c;
  sb::bench::Forked f = sb::bench::ForkWithControl([&cfg](int ctl) {
    auto child = std::make_unique<ClientProcess>(cfg, ctl);
    return child->Run();
  });
  c.pid = f.pid;
  c.ctl = f.ctl;
  return c;
}

void Send(Child& c, char op, uint64_t target = 0) {
  Command cmd;
  cmd.op = op;
  cmd.target = target;
  if (!WriteAll(c.ctl, &cmd, sizeof cmd)) {
    std::fprintf(stderr, "bench-ws-load: client process %d is gone\n", c.pid);
  }
}

void CollectJoined(std::vector<Child*> cs, uint64_t deadline) {
  for (Child* c : cs) {
    c->got_joined = ReadAll(c->ctl, &c->joined, sizeof(Report), deadline);
    if (!c->got_joined) std::fprintf(stderr, "bench-ws-load: no join report from %d\n", c->pid);
  }
}
void CollectFinal(std::vector<Child*> cs, uint64_t deadline) {
  for (Child* c : cs) {
    c->got_final = ReadAll(c->ctl, &c->final, sizeof(Report), deadline);
    if (!c->got_final) std::fprintf(stderr, "bench-ws-load: no final report from %d\n", c->pid);
  }
}

void Reap(std::vector<Child>& cs) {
  for (Child& c : cs) {
    if (c.pid <= 0) continue;
    uint64_t until = MonoNs() + 2 * kSec;
    bool reaped = false;
    while (!(reaped = ::waitpid(c.pid, nullptr, WNOHANG) == c.pid) && MonoNs() < until) {
      SleepNs(2000000);
    }
    if (!reaped) {
      ::kill(c.pid, SIGKILL);
      ::waitpid(c.pid, nullptr, 0);
    }
    Untrack(c.pid);
    ::close(c.ctl);
  }
}

Report Sum(const std::vector<Child>& cs, bool final) {
  Report s;
  s.min_per_socket = ~0ULL;
  for (const Child& c : cs) {
    if (!(final ? c.got_final : c.got_joined)) continue;
    const Report& r = final ? c.final : c.joined;
    s.joined += r.joined;
    s.failed_connect += r.failed_connect;
    s.failed_upgrade += r.failed_upgrade;
    s.failed_accept += r.failed_accept;
    s.failed_join += r.failed_join;
    s.failed_other += r.failed_other;
    s.closed_after_join += r.closed_after_join;
    s.last_join_ns = std::max(s.last_join_ns, r.last_join_ns);
    s.held += r.held;
    s.unfinished += r.unfinished;
    s.deliveries += r.deliveries;
    s.unparsed += r.unparsed;
    s.min_per_socket = std::min(s.min_per_socket, r.min_per_socket);
    s.max_per_socket = std::max(s.max_per_socket, r.max_per_socket);
    s.last_delivery_ns = std::max(s.last_delivery_ns, r.last_delivery_ns);
    if (r.last_http_status) s.last_http_status = r.last_http_status;
    if (r.last_close_code) s.last_close_code = r.last_close_code;
    s.latency.Merge(r.latency);
  }
  if (s.min_per_socket == ~0ULL) s.min_per_socket = 0;
  return s;
}

// Why clients failed, by kind (bench/client_process.h's Report).
void FailureFigures(Figures& f, const Report& r) {
  f.Num("failed_connect", r.failed_connect);
  f.Num("failed_upgrade", r.failed_upgrade);
  f.Num("failed_accept", r.failed_accept);
  f.Num("failed_join", r.failed_join);
  f.Num("failed_other", r.failed_other);
  f.Num("unfinished", r.unfinished);
  f.Num("closed_after_join", r.closed_after_join);
  f.Num("last_http_status", r.last_http_status);
  f.Num("last_close_code", r.last_close_code);
}

struct Run {
  const Options& o;
  int n;
  std::vector<Worker>& ws;  // ws[0]: the publisher's shard (the only one with --shards 1)
  Broker* broker;           // null with --shards 1
  long rss_before;
  std::vector<Child>& kids;
  std::vector<Child*> subs;
  uint64_t deadline, teardown;
  Figures& f;
};

bool RunIdle(Run& r) {
  SleepNs(2 * kSec);
  const long rss_after = RssKib(r.ws[0].pid);
  for (Child* c : r.subs) Send(*c, 's');
  CollectFinal(r.subs, r.teardown);
  Report fin = Sum(r.kids, true);
  r.f.Num("held", fin.held);
  r.f.Num("worker_rss_before_kib", r.rss_before);
  r.f.Num("worker_rss_after_kib", rss_after);
  // Divided by the connections actually held (== N when the run is clean).
  r.f.Num("bytes_per_connection",
          fin.held ? static_cast<double>(rss_after - r.rss_before) * 1024.0 / fin.held : 0);
  FailureFigures(r.f, fin);
  return fin.held == static_cast<uint64_t>(r.n);
}

// CPU seconds of every worker, then (multi-shard) the broker's.
std::vector<double> CpuOf(const Run& r) {
  std::vector<double> v;
  for (const Worker& w : r.ws) v.push_back(CpuSeconds(w.pid));
  if (r.broker) v.push_back(CpuSeconds(r.broker->proc.pid));
  return v;
}

bool RunFanout(Run& r, Child& pub) {
  const std::vector<double> cpu0 = CpuOf(r);
  Send(pub, 'g');
  CollectFinal({&pub},
               std::min(r.teardown, MonoNs() + static_cast<uint64_t>((r.o.duration + 15) * 1e9)));
  const std::vector<double> cpu_pub = CpuOf(r);
  const Report& pr = pub.final;
  for (Child* c : r.subs) Send(*c, 'd', pr.sent);
  CollectFinal(r.subs, r.teardown);
  // Deliveries still being written after the last publish count too.
  const std::vector<double> cpu_end = CpuOf(r);
  std::vector<double> used(cpu0.size());
  double workers_cpu = 0, workers_cpu_pub = 0, total_cpu = 0;
  for (size_t i = 0; i < cpu0.size(); ++i) {
    used[i] = cpu_end[i] - cpu0[i];
    total_cpu += used[i];
    if (i < r.ws.size()) {
      workers_cpu += used[i];
      workers_cpu_pub += cpu_pub[i] - cpu0[i];
    }
  }
  const double cpu = workers_cpu;
  const long rss_after = RssKib(r.ws[0].pid);
  Report fin = Sum(r.kids, true);
  const uint64_t expected = pr.acked * fin.held;
  const double wall_s = fin.last_delivery_ns > pr.first_send_ns
                            ? static_cast<double>(fin.last_delivery_ns - pr.first_send_ns) / 1e9
                            : 0;
  Figures& f = r.f;
  f.Num("subscribers_held", fin.held);
  f.Num("rate", r.o.rate);
  f.Num("window", r.o.window);
  f.Num("duration_s", r.o.duration, 1);
  f.Num("payload_bytes", r.o.payload_bytes);
  f.Num("published", pr.sent);
  f.Num("acked", pr.acked);
  f.Num("refused", pr.nacked);
  f.Num("publish_s", static_cast<double>(pr.last_send_ns - pr.first_send_ns) / 1e9, 3);
  f.Num("deliveries", fin.deliveries);
  f.Num("expected", expected);
  f.Num("min_per_subscriber", fin.min_per_socket);
  f.Num("max_per_subscriber", fin.max_per_socket);
  f.Num("delivery_s", wall_s, 3);
  f.Num("deliveries_per_s", wall_s > 0 ? static_cast<double>(fin.deliveries) / wall_s : 0);
  f.Num("worker_cpu_s", cpu, 2);
  f.Num("worker_cpu_publishing_s", workers_cpu_pub, 2);
  if (r.broker) {
    for (size_t i = 0; i < r.ws.size(); ++i) {
      f.Num("worker" + std::to_string(i) + "_cpu_s", used[i], 2);
    }
    f.Num("broker_cpu_s", used.back(), 2);
    f.Num("total_cpu_s", total_cpu, 2);
  }
  // Per CPU-second of every Switchboard process in the run (the broker too).
  f.Num("deliveries_per_cpu_s",
        total_cpu > 0 ? static_cast<double>(fin.deliveries) / total_cpu : 0);
  f.Num("latency_p50_us", fin.latency.Percentile(50) / 1e3, 1);
  f.Num("latency_p99_us", fin.latency.Percentile(99) / 1e3, 1);
  f.Num("latency_p999_us", fin.latency.Percentile(99.9) / 1e3, 1);
  if (r.broker) {
    // Per shard: client process p's subscribers are on shard p % K.
    for (size_t k = 0; k < r.ws.size(); ++k) {
      std::vector<Child> on;
      for (size_t p = k; p < r.kids.size(); p += r.ws.size()) on.push_back(r.kids[p]);
      Report sk = Sum(on, true);
      const std::string p = "shard" + std::to_string(k) + "_";
      f.Num(p + "deliveries", sk.deliveries);
      f.Num(p + "latency_p50_us", sk.latency.Percentile(50) / 1e3, 1);
      f.Num(p + "latency_p99_us", sk.latency.Percentile(99) / 1e3, 1);
    }
  }
  f.Num("unparsed", fin.unparsed);
  f.Num("worker_rss_before_kib", r.rss_before);
  f.Num("worker_rss_after_kib", rss_after);
  FailureFigures(f, fin);
  bool broker_ok = true;
  if (r.broker) {
    std::string body = Scrape(r.broker->metrics_port, MonoNs() + 5 * kSec);
    const double shed = Sample(body, "switchboard_broker_dropped_total{reason=\"shed\"}");
    f.Num("broker_publishes", Sample(body, "switchboard_broker_publishes_total"));
    f.Num("broker_delivered", Sample(body, "switchboard_broker_delivered_total"));
    f.Num("broker_shed", shed);
    f.Num("broker_refused_duplicates",
          Sample(body, "switchboard_broker_refused_frames_total{reason=\"duplicate\"}"));
    broker_ok = shed == 0;
    // Each shard's own account of its broker session.
    for (size_t k = 0; k < r.ws.size(); ++k) {
      std::string wb = Scrape(r.ws[k].metrics_port, MonoNs() + 5 * kSec);
      const std::string p = "worker" + std::to_string(k) + "_";
      const std::string shard = "{shard=\"" + std::to_string(k) + "\"";
      for (const char* kind : {"published", "acked", "delivered", "duplicate", "hello"}) {
        f.Num(p + "cluster_" + kind, Sample(wb, "switchboard_worker_cluster_messages_total" +
                                                    shard + ",kind=\"" + kind + "\"}"));
      }
      f.Num(p + "broadcasts_refused",
            Sample(wb, "switchboard_worker_broadcasts_refused_total" + shard + "}"));
      // The shard's own publish → deliver histogram (read on the publishing
      // shard to handed to the kernel here), beside the clients' figures
      // (which add the client's read and parse): by where it was published.
      for (const char* source : {"local", "cluster", "sequenced"}) {
        const ScrapedHistogram h = ReadHistogram(wb, "switchboard_worker_deliver_latency_seconds",
                                                 std::string("source=\"") + source + "\"");
        const std::string q = p + "server_latency_" + source + "_";
        f.Num(q + "count", h.count);
        if (h.count > 0) {
          f.Num(q + "mean_us", h.sum / h.count * 1e6, 1);
          f.Num(q + "p50_us", h.Quantile(0.5) * 1e6, 1);
          f.Num(q + "p99_us", h.Quantile(0.99) * 1e6, 1);
        }
      }
    }
  }
  if (cpu <= 0.05) std::printf("note: worker CPU below the clock tick resolution\n");
  return pub.got_final && pr.acked > 0 && fin.deliveries >= expected && fin.unparsed == 0 &&
         fin.closed_after_join == 0 && broker_ok;
}

int Usage(const char* why) {
  std::fprintf(stderr,
               "bench-ws-load: %s\nusage: bench-ws-load --scenario idle --connections N "
               "[--procs P]\n       bench-ws-load --scenario fanout --subscribers S --rate R "
               "--duration D [--payload-bytes B] [--window W] [--procs P]\n"
               "                     [--shards K] [--broker PATH] [--broker-queue Q]\n"
               "       common: [--worker PATH] [--max-seconds S] [--inflight H]\n",
               why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  const fs::path here = fs::read_symlink("/proc/self/exe").parent_path();
  o.worker = (here / "switchboard-worker").string();
  o.broker = (here / "switchboard-broker").string();
  CLI::App app{"bench-ws-load: WebSocket load against gateway shards (idle or fanout)"};
  app.add_option("--scenario", o.scenario, "idle or fanout");
  app.add_option("--connections", o.connections, "idle: connections held")->capture_default_str();
  app.add_option("--subscribers", o.subscribers, "fanout: subscribers of the topic")
      ->capture_default_str();
  app.add_option("--procs", o.procs, "client processes (0: one per 15000 connections)")
      ->capture_default_str();
  app.add_option("--rate", o.rate, "fanout: pushes per second (0: as fast as the window allows)")
      ->capture_default_str();
  app.add_option("--duration", o.duration, "fanout: seconds of pushing")->capture_default_str();
  app.add_option("--payload-bytes", o.payload_bytes, "fanout: push payload size")
      ->capture_default_str();
  app.add_option("--window", o.window, "fanout: unacknowledged pushes at --rate 0")
      ->capture_default_str();
  app.add_option("--inflight", o.inflight,
                 "handshakes (connect to join reply) in flight per client process")
      ->capture_default_str();
  app.add_option("--max-seconds", o.max_seconds, "bound on the whole bench")->capture_default_str();
  app.add_option("--worker", o.worker, "switchboard-worker to run")->capture_default_str();
  app.add_option("--shards", o.shards, "fanout: shards joined by a broker")->capture_default_str();
  app.add_option("--broker-queue", o.broker_queue,
                 "the broker's --queue-max-messages (0: its own default)")
      ->capture_default_str();
  app.add_option("--history", o.history,
                 "fanout: the topic keeps history (SIZE/TTL given to the broker and the shards "
                 "as --history fan=SIZE/TTL; --shards 2 or more)");
  app.add_option("--broker", o.broker, "switchboard-broker to run (--shards 2 or more)")
      ->capture_default_str();
  if (std::optional<int> exit = sb::ParseCommandLine(app, argc, argv)) return *exit;
  const bool idle = o.scenario == "idle";
  if (!idle && o.scenario != "fanout") return Usage("--scenario must be idle or fanout");
  const int n = idle ? o.connections : o.subscribers;
  if (n < 1 || o.window < 1 || o.duration <= 0 || o.rate < 0 || o.payload_bytes > (1 << 20) ||
      o.max_seconds <= 0) {
    return Usage("out-of-range value");
  }
  if (o.shards < 1 || o.shards > 16 || o.broker_queue < 0) return Usage("out-of-range value");
  if (o.shards > 1 && idle) return Usage("--shards applies to the fanout scenario");
  if (!o.history.empty() && (idle || o.shards < 2)) {
    return Usage("--history needs the fanout scenario and --shards 2 or more (a broker)");
  }
  if (o.procs <= 0) o.procs = (n + kFdsPerProcess - 1) / kFdsPerProcess;
  // Each client process talks to one shard: as many per shard.
  o.procs = (o.procs + o.shards - 1) / o.shards * o.shards;
  if (o.procs > 200 || (n + o.procs - 1) / o.procs > kFdsPerProcess) {
    return Usage("--procs must leave each process at most 15000 connections (and be <= 200)");
  }

  sb::bench::KillChildrenOnSignal("bench-ws-load",
                                  "interrupted or over time, killed the worker and children");
  alarm(static_cast<unsigned>(o.max_seconds) + 30);  // backstop over every phase's deadline
  const uint64_t t_start = MonoNs();
  const uint64_t deadline = t_start + static_cast<uint64_t>(o.max_seconds * 1e9);

  char tmpl[] = "/tmp/sb-ws-load-XXXXXX";
  if (!mkdtemp(tmpl)) return 1;
  const std::string dir = tmpl;
  std::vector<std::string> args = {
      "--listen", "127.0.0.1:0", "--idle-timeout",    "3600",
      "--rate",   "0",           "--max-connections", std::to_string(n + 100)};
  if (!idle) args.insert(args.end(), {"--max-outbound", "16777216"});
  const uint64_t start_by = std::min(deadline, t_start + 20 * kSec);
  std::unique_ptr<Broker> broker;
  if (o.shards > 1) {
    broker = std::make_unique<Broker>();
    std::vector<std::string> bargs = {"--bind", "tcp://127.0.0.1:0", "--metrics", "127.0.0.1:0"};
    broker->started_ns = MonoNs();
    if (o.broker_queue > 0) {
      bargs.insert(bargs.end(), {"--queue-max-messages", std::to_string(o.broker_queue)});
    }
    if (!o.history.empty()) bargs.insert(bargs.end(), {"--history", "fan=" + o.history});
    if (!StartWorker(o.broker, bargs, dir + "/broker.log", start_by, &broker->proc,
                     "bound tcp://127.0.0.1:") ||
        !WaitForPort(&broker->proc, "metrics on 127.0.0.1:", start_by, &broker->metrics_port)) {
      std::fprintf(stderr, "bench-ws-load: broker %s did not report its ports; log %s:\n%s",
                   o.broker.c_str(), broker->proc.log.c_str(), Tail(broker->proc.log, 20).c_str());
      KillChildren();
      return 1;
    }
  }
  std::vector<Worker> ws(static_cast<size_t>(o.shards));
  for (int k = 0; k < o.shards; ++k) {
    std::vector<std::string> wargs = args;
    std::string log = dir + "/worker.log";
    if (broker) {
      wargs.insert(wargs.end(), {"--shard", std::to_string(k), "--broker",
                                 "tcp://127.0.0.1:" + std::to_string(broker->proc.port),
                                 "--metrics", "127.0.0.1:0"});
      if (!o.history.empty()) wargs.insert(wargs.end(), {"--history", "fan=" + o.history});
      log = dir + "/worker" + std::to_string(k) + ".log";
    }
    Worker& w = ws[static_cast<size_t>(k)];
    if (!StartWorker(o.worker, wargs, log, start_by, &w) ||
        (broker && !WaitForPort(&w, "metrics on 127.0.0.1:", start_by, &w.metrics_port))) {
      std::fprintf(stderr, "bench-ws-load: worker %s did not report listening; log %s:\n%s",
                   o.worker.c_str(), log.c_str(), Tail(log, 20).c_str());
      KillChildren();
      return 1;
    }
  }
  SleepNs(kSec);  // let start-up allocations settle
  const long rss_before = RssKib(ws[0].pid);

  std::vector<Child> kids;
  const uint64_t t_fork = MonoNs();
  for (int p = 0; p < o.procs; ++p) {
    int first = static_cast<int>(static_cast<long>(n) * p / o.procs);
    int count = static_cast<int>(static_cast<long>(n) * (p + 1) / o.procs) - first;
    kids.push_back(SpawnChild(o, idle ? ClientRole::kIdle : ClientRole::kSubscriber, p, first,
                              count, ws[static_cast<size_t>(p % o.shards)].port, deadline));
  }
  Child pub;
  if (!idle) pub = SpawnChild(o, ClientRole::kPublisher, o.procs, 0, 1, ws[0].port, deadline);
  Figures f;
  Run run{o, n, ws, broker.get(), rss_before, kids, {}, deadline, 0, f};
  for (Child& c : kids) run.subs.push_back(&c);
  CollectJoined(run.subs, deadline);
  if (!idle) CollectJoined({&pub}, deadline);
  Report joined = Sum(kids, false);
  const double connect_s =
      joined.last_join_ns > t_fork ? static_cast<double>(joined.last_join_ns - t_fork) / 1e9 : 0;
  std::printf("%s: %llu of %d connections joined in %.3f s by %d client processes\n",
              o.scenario.c_str(), static_cast<unsigned long long>(joined.joined), n, connect_s,
              o.procs);
  run.teardown = std::max(deadline, MonoNs()) + 15 * kSec;
  f.Str("scenario", o.scenario);
  f.Num(idle ? "connections" : "subscribers", n);
  f.Num("procs", o.procs);
  f.Num("shards", o.shards);
  f.Num("joined", joined.joined);
  f.Num("connect_all_s", connect_s, 3);
  bool mesh_ok = true;
  if (broker) {
    // A publish routed before a shard's subscription reached the broker
    // would never reach that shard's subscribers.
    mesh_ok = WaitForMesh(*broker, o.shards, std::min(deadline, MonoNs() + 20 * kSec));
    if (!mesh_ok) {
      std::fprintf(stderr, "bench-ws-load: the broker never saw every shard subscribe\n");
    }
    if (MonoNs() < broker->started_ns + kBrokerSettleNs) {
      SleepNs(broker->started_ns + kBrokerSettleNs - MonoNs());
    }
  }
  const bool ok = mesh_ok && (idle ? RunIdle(run) : RunFanout(run, pub));
  for (size_t k = 0; k < ws.size(); ++k) {
    f.Str(ws.size() == 1 ? "worker_stop" : "worker" + std::to_string(k) + "_stop",
          StopWorker(&ws[k]));
  }
  if (broker) f.Str("broker_stop", StopWorker(&broker->proc));
  if (!idle) kids.push_back(pub);
  Reap(kids);
  KillChildren();
  if (ok) {
    fs::remove_all(dir);
  } else {
    for (const Worker& w : ws) {
      std::fprintf(stderr,
                   "bench-ws-load: not every connection/delivery made it; worker log %s:\n%s",
                   w.log.c_str(), Tail(w.log, 20).c_str());
    }
    if (broker) {
      std::fprintf(stderr, "bench-ws-load: broker log %s:\n%s", broker->proc.log.c_str(),
                   Tail(broker->proc.log, 20).c_str());
    }
  }
  f.Print(28);
  return ok ? 0 : 1;
}
