// bench-ws-load: WebSocket load against one gateway shard (switchboard-worker).
//
// Two scenarios; each starts its own worker and stops it at the end:
//   idle    N connections upgraded and joined to one topic each (idle:<i % 100>),
//           held while the worker's VmRSS is read: user-space bytes per connection.
//   fanout  S subscribers joined to "fan" and one publisher pushing to it at
//           --rate per second (0: as fast as a window of W unacknowledged pushes
//           allows) for --duration seconds: deliveries, worker CPU per delivery,
//           publish -> deliver latency (CLOCK_MONOTONIC stamped in the payload).
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
//        common: [--worker PATH] [--max-seconds S] [--inflight H]
// --procs defaults to ceil(N / 15000) client processes (the fanout publisher
// is one more); --worker to switchboard-worker beside this program; --rate 0,
// --window 64, --payload-bytes 64, --max-seconds 120, --inflight 500.
// Prints a summary, then one JSON line with every figure. Exits 0 when every
// connection was held (idle) or every acknowledged push reached every
// subscriber (fanout), 1 otherwise, 2 on a usage error.
#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "bench/client_process.h"

namespace fs = std::filesystem;
using sb::bench::ClientConfig;
using sb::bench::ClientProcess;
using sb::bench::ClientRole;
using sb::bench::Command;
using sb::bench::kSec;
using sb::bench::MonoNs;
using sb::bench::ReadAll;
using sb::bench::Report;
using sb::bench::SleepNs;
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
};

// Every process the parent started, for the signal handler to kill.
volatile pid_t g_pids[512];
volatile sig_atomic_t g_npids = 0;

int Tracked() {
  int n = g_npids;
  return n < 512 ? n : 512;
}

void Track(pid_t pid) {
  if (g_npids < 512) g_pids[g_npids] = pid;
  g_npids = g_npids + 1;
}

// After waitpid: the pid may be reused by an unrelated process.
void Untrack(pid_t pid) {
  for (int i = 0; i < Tracked(); ++i) {
    if (g_pids[i] == pid) g_pids[i] = 0;
  }
}

void KillAll() {
  for (int i = 0; i < Tracked(); ++i) {
    if (g_pids[i] > 0) ::kill(g_pids[i], SIGKILL);
  }
}

void OnSignal(int sig) {
  KillAll();
  const char msg[] = "bench-ws-load: interrupted or over time, killed the worker and children\n";
  (void)!::write(2, msg, sizeof msg - 1);
  _exit(128 + sig);
}

struct Worker {
  pid_t pid = -1;
  uint16_t port = 0;
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

bool StartWorker(const std::string& exe, const std::vector<std::string>& args,
                 const std::string& log, uint64_t deadline, Worker* w) {
  w->log = log;
  w->pid = ::fork();
  if (w->pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGPIPE, SIG_DFL);
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    std::vector<char*> argv{const_cast<char*>(exe.c_str())};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(exe.c_str(), argv.data());
    std::fprintf(stderr, "exec %s: %s\n", exe.c_str(), std::strerror(errno));
    _exit(127);
  }
  Track(w->pid);
  static constexpr std::string_view kListening = "listening on 127.0.0.1:";
  while (MonoNs() < deadline) {
    std::ifstream in(log);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    size_t at = text.find(kListening);
    if (at != std::string::npos) {
      w->port = static_cast<uint16_t>(std::atoi(text.c_str() + at + kListening.size()));
      if (w->port != 0) return true;
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
  int sv[2];
  Child c;
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return c;
  pid_t parent = ::getpid();
  std::fflush(stdout);
  c.pid = ::fork();
  if (c.pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) _exit(1);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGALRM, SIG_IGN);
    // Keep only our end: siblings' control sockets would hide the parent's EOF.
    if (::dup2(sv[1], 3) < 0) _exit(1);
    ::close_range(4, ~0U, 0);
    auto child = std::make_unique<ClientProcess>(cfg, 3);
    _exit(child->Run());
  }
  ::close(sv[1]);
  c.ctl = sv[0];
  if (c.pid > 0) Track(c.pid);
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

// Named figures in order: printed as a table for people, then as one JSON line.
class Figures {
 public:
  void Num(const std::string& key, double v, int decimals = 0) {
    char b[64];
    std::snprintf(b, sizeof b, "%.*f", decimals, v);
    items_.emplace_back(key, b);
  }
  void Str(const std::string& key, const std::string& v) {
    items_.emplace_back(key, '"' + v + '"');
  }
  void Failures(const Report& r) {
    Num("failed_connect", r.failed_connect);
    Num("failed_upgrade", r.failed_upgrade);
    Num("failed_accept", r.failed_accept);
    Num("failed_join", r.failed_join);
    Num("failed_other", r.failed_other);
    Num("unfinished", r.unfinished);
    Num("closed_after_join", r.closed_after_join);
    Num("last_http_status", r.last_http_status);
    Num("last_close_code", r.last_close_code);
  }
  void Print() const {
    std::string json = "{";
    for (const auto& [k, v] : items_) {
      std::printf("  %-28s %s\n", k.c_str(), v.c_str());
      json += (json.size() > 1 ? ",\"" : "\"") + k + "\":" + v;
    }
    std::printf("%s}\n", json.c_str());
  }

 private:
  std::vector<std::pair<std::string, std::string>> items_;
};

struct Run {
  const Options& o;
  int n;
  Worker& w;
  long rss_before;
  std::vector<Child>& kids;
  std::vector<Child*> subs;
  uint64_t deadline, teardown;
  Figures& f;
};

bool RunIdle(Run& r) {
  SleepNs(2 * kSec);
  const long rss_after = RssKib(r.w.pid);
  for (Child* c : r.subs) Send(*c, 's');
  CollectFinal(r.subs, r.teardown);
  Report fin = Sum(r.kids, true);
  r.f.Num("held", fin.held);
  r.f.Num("worker_rss_before_kib", r.rss_before);
  r.f.Num("worker_rss_after_kib", rss_after);
  // Divided by the connections actually held (== N when the run is clean).
  r.f.Num("bytes_per_connection",
          fin.held ? static_cast<double>(rss_after - r.rss_before) * 1024.0 / fin.held : 0);
  r.f.Failures(fin);
  return fin.held == static_cast<uint64_t>(r.n);
}

bool RunFanout(Run& r, Child& pub) {
  const double cpu0 = CpuSeconds(r.w.pid);
  Send(pub, 'g');
  CollectFinal({&pub},
               std::min(r.teardown, MonoNs() + static_cast<uint64_t>((r.o.duration + 15) * 1e9)));
  const double cpu_pub = CpuSeconds(r.w.pid);
  const Report& pr = pub.final;
  for (Child* c : r.subs) Send(*c, 'd', pr.sent);
  CollectFinal(r.subs, r.teardown);
  // Deliveries still being written after the last publish count too.
  const double cpu = CpuSeconds(r.w.pid) - cpu0;
  const long rss_after = RssKib(r.w.pid);
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
  f.Num("worker_cpu_publishing_s", cpu_pub - cpu0, 2);
  f.Num("deliveries_per_cpu_s", cpu > 0 ? static_cast<double>(fin.deliveries) / cpu : 0);
  f.Num("latency_p50_us", fin.latency.Percentile(50) / 1e3, 1);
  f.Num("latency_p99_us", fin.latency.Percentile(99) / 1e3, 1);
  f.Num("latency_p999_us", fin.latency.Percentile(99.9) / 1e3, 1);
  f.Num("unparsed", fin.unparsed);
  f.Num("worker_rss_before_kib", r.rss_before);
  f.Num("worker_rss_after_kib", rss_after);
  f.Failures(fin);
  if (cpu <= 0.05) std::printf("note: worker CPU below the clock tick resolution\n");
  return pub.got_final && pr.acked > 0 && fin.deliveries >= expected && fin.unparsed == 0 &&
         fin.closed_after_join == 0;
}

int Usage(const char* why) {
  std::fprintf(stderr,
               "bench-ws-load: %s\nusage: bench-ws-load --scenario idle --connections N "
               "[--procs P]\n       bench-ws-load --scenario fanout --subscribers S --rate R "
               "--duration D [--payload-bytes B] [--window W] [--procs P]\n       common: "
               "[--worker PATH] [--max-seconds S] [--inflight H]\n",
               why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  o.worker = (fs::read_symlink("/proc/self/exe").parent_path() / "switchboard-worker").string();
  const std::vector<std::pair<std::string, int*>> ints = {{"--connections", &o.connections},
                                                          {"--subscribers", &o.subscribers},
                                                          {"--procs", &o.procs},
                                                          {"--payload-bytes", &o.payload_bytes},
                                                          {"--window", &o.window},
                                                          {"--inflight", &o.inflight}};
  const std::vector<std::pair<std::string, double*>> reals = {
      {"--rate", &o.rate}, {"--duration", &o.duration}, {"--max-seconds", &o.max_seconds}};
  for (int i = 1; i < argc; i += 2) {
    std::string a = argv[i];
    if (i + 1 >= argc) return Usage(("missing value for " + a).c_str());
    char* end = nullptr;
    bool known = a == "--scenario" || a == "--worker";
    if (a == "--scenario") o.scenario = argv[i + 1];
    if (a == "--worker") o.worker = argv[i + 1];
    for (const auto& [name, p] : ints) {
      if (a == name) known = true, *p = static_cast<int>(std::strtol(argv[i + 1], &end, 10));
    }
    for (const auto& [name, p] : reals) {
      if (a == name) known = true, *p = std::strtod(argv[i + 1], &end);
    }
    if (!known) return Usage(("unknown option " + a).c_str());
    if (end && *end != '\0') return Usage(("bad number for " + a).c_str());
  }
  const bool idle = o.scenario == "idle";
  if (!idle && o.scenario != "fanout") return Usage("--scenario must be idle or fanout");
  const int n = idle ? o.connections : o.subscribers;
  if (n < 1 || o.window < 1 || o.duration <= 0 || o.rate < 0 || o.payload_bytes > (1 << 20) ||
      o.max_seconds <= 0) {
    return Usage("out-of-range value");
  }
  if (o.procs <= 0) o.procs = (n + kFdsPerProcess - 1) / kFdsPerProcess;
  if (o.procs > 200 || (n + o.procs - 1) / o.procs > kFdsPerProcess) {
    return Usage("--procs must leave each process at most 15000 connections (and be <= 200)");
  }

  signal(SIGPIPE, SIG_IGN);
  signal(SIGINT, OnSignal);
  signal(SIGTERM, OnSignal);
  signal(SIGALRM, OnSignal);
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
  Worker w;
  if (!StartWorker(o.worker, args, dir + "/worker.log", std::min(deadline, t_start + 20 * kSec),
                   &w)) {
    std::fprintf(stderr, "bench-ws-load: worker %s did not report listening; log %s:\n%s",
                 o.worker.c_str(), w.log.c_str(), Tail(w.log, 20).c_str());
    KillAll();
    return 1;
  }
  SleepNs(kSec);  // let start-up allocations settle
  const long rss_before = RssKib(w.pid);

  std::vector<Child> kids;
  const uint64_t t_fork = MonoNs();
  for (int p = 0; p < o.procs; ++p) {
    int first = static_cast<int>(static_cast<long>(n) * p / o.procs);
    int count = static_cast<int>(static_cast<long>(n) * (p + 1) / o.procs) - first;
    kids.push_back(SpawnChild(o, idle ? ClientRole::kIdle : ClientRole::kSubscriber, p, first,
                              count, w.port, deadline));
  }
  Child pub;
  if (!idle) pub = SpawnChild(o, ClientRole::kPublisher, o.procs, 0, 1, w.port, deadline);
  Figures f;
  Run run{o, n, w, rss_before, kids, {}, deadline, 0, f};
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
  f.Num("joined", joined.joined);
  f.Num("connect_all_s", connect_s, 3);
  const bool ok = idle ? RunIdle(run) : RunFanout(run, pub);
  f.Str("worker_stop", StopWorker(&w));
  if (!idle) kids.push_back(pub);
  Reap(kids);
  KillAll();
  if (ok) {
    fs::remove_all(dir);
  } else {
    std::fprintf(stderr, "bench-ws-load: not every connection/delivery made it; worker log %s:\n%s",
                 w.log.c_str(), Tail(w.log, 20).c_str());
  }
  f.Print();
  return ok ? 0 : 1;
}
