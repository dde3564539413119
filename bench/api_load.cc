// bench-api-load: HTTP API publishes (POST /api/publish) against shards
// joined by a node broker: how many a shard answers per second, and how long
// a publish takes to reach WebSocket subscribers on every shard.
//
// Starts switchboard-broker (tcp loopback, an ephemeral port) and --shards
// workers with --api-key-file, connects --subscribers WebSocket subscribers
// to each shard (all joined to "bench"), waits until a probe publish reaches
// every one of them (the broker routes to every shard), then for --duration
// seconds keeps --conns keep-alive HTTP connections per shard busy, each
// with up to --window requests pipelined. Every payload carries the
// CLOCK_MONOTONIC time it was sent ({"t":NS,"p":"..."}): delivery latency
// is the subscriber's receive time minus it, over every delivery. Then it
// waits for every delivery of every accepted publish.
// One process, one epoll loop (on the same machine as the shards: its CPU
// is part of the load). Prints a summary, then one JSON line.
//
// Usage: bench-api-load [--shards K] [--subscribers S] [--conns C] [--window W]
//                       [--duration D] [--payload-bytes B] [--worker PATH] [--broker PATH]
// Defaults: 2 shards, 10 subscribers and 4 connections per shard, window 8,
// 5 s, 64 payload bytes. Exits 0 when every accepted publish reached every
// subscriber, 1 otherwise, 2 on a usage error.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "bench/children.h"
#include "bench/io_util.h"
#include "bench/ws_client.h"
#include "common/command_line.h"

namespace {

using sb::bench::kSec;
using sb::bench::MonoNs;
using sb::bench::SleepNs;
using sb::bench::WsClient;

constexpr char kKey[] = "bench-api-load-key-0123456789abcdef";

struct Proc {
  pid_t pid = -1;
  uint16_t port = 0;
  std::string log;
};

bool WaitForPort(Proc* p, std::string_view pattern, uint64_t deadline) {
  while (MonoNs() < deadline) {
    std::ifstream in(p->log);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    const size_t at = text.find(pattern);
    if (at != std::string::npos && text.find('\n', at) != std::string::npos) {
      p->port = static_cast<uint16_t>(std::atoi(text.c_str() + at + pattern.size()));
      if (p->port != 0) return true;
    }
    if (::waitpid(p->pid, nullptr, WNOHANG) == p->pid) return false;
    SleepNs(10'000'000);
  }
  return false;
}

void Stop(Proc* p) {
  if (p->pid <= 0) return;
  ::kill(p->pid, SIGTERM);
  int st = 0;
  ::waitpid(p->pid, &st, 0);
  sb::bench::Untrack(p->pid);
  p->pid = -1;
}

double CpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t p = s.rfind(')');
  if (p == std::string::npos) return 0;
  std::istringstream rest(s.substr(p + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

sockaddr_in Loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

// One keep-alive API connection with pipelined requests.
struct Publisher {
  int fd = -1;
  int shard = 0;
  int inflight = 0;
  std::string out;
  size_t out_off = 0;
  std::string in;
  uint64_t ok = 0, refused = 0;
};

std::string Request(const std::string& payload_fill) {
  std::string body =
      "{\"topic\":\"bench\",\"event\":\"m\",\"payload\":{\"t\":" + std::to_string(MonoNs()) +
      ",\"p\":\"" + payload_fill + "\"}}";
  return "POST /api/publish HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer " + std::string(kKey) +
         "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n\r\n" + body;
}

bool FlushPublisher(Publisher& p) {
  while (p.out_off < p.out.size()) {
    ssize_t n = ::send(p.fd, p.out.data() + p.out_off, p.out.size() - p.out_off, MSG_NOSIGNAL);
    if (n < 0) return errno == EAGAIN;
    p.out_off += static_cast<size_t>(n);
  }
  p.out.clear();
  p.out_off = 0;
  return true;
}

// Consumes complete responses from p.in.
void TakeResponses(Publisher& p) {
  for (;;) {
    const size_t end = p.in.find("\r\n\r\n");
    if (end == std::string::npos) return;
    const size_t cl = p.in.find("Content-Length: ");
    if (cl == std::string::npos || cl > end) return;
    const size_t len = std::strtoul(p.in.c_str() + cl + 16, nullptr, 10);
    if (p.in.size() < end + 4 + len) return;
    if (p.in.compare(9, 3, "200") == 0) {
      ++p.ok;
    } else {
      ++p.refused;
    }
    --p.inflight;
    p.in.erase(0, end + 4 + len);
  }
}

double Percentile(std::vector<uint64_t>& v, double q) {
  if (v.empty()) return 0;
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(i), v.end());
  return static_cast<double>(v[i]) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench-api-load: HTTP API publishes per second and their delivery latency"};
  int shards = 2, subscribers = 10, conns = 4, window = 8, payload_bytes = 64;
  double duration = 5;
  const std::string self_dir = std::filesystem::canonical("/proc/self/exe").parent_path().string();
  std::string worker = self_dir + "/switchboard-worker",
              broker_exe = self_dir + "/switchboard-broker";
  app.add_option("--shards", shards)->check(CLI::Range(1, 16))->capture_default_str();
  app.add_option("--subscribers", subscribers, "per shard")->check(CLI::Range(1, 5000));
  app.add_option("--conns", conns, "API connections per shard")->check(CLI::Range(1, 256));
  app.add_option("--window", window, "requests pipelined per connection")
      ->check(CLI::Range(1, 1024));
  app.add_option("--duration", duration, "seconds")->check(CLI::PositiveNumber);
  app.add_option("--payload-bytes", payload_bytes)->check(CLI::Range(0, 1 << 20));
  app.add_option("--worker", worker);
  app.add_option("--broker", broker_exe);
  if (std::optional<int> rc = sb::ParseCommandLine(app, argc, argv)) return *rc;

  sb::bench::KillChildrenOnSignal("bench-api-load", "interrupted or over time, killed the node");
  alarm(static_cast<unsigned>(duration) + 90);
  char tmpl[] = "/tmp/sb-api-load-XXXXXX";
  if (!mkdtemp(tmpl)) return 1;
  const std::string dir = tmpl;
  const std::string key_file = dir + "/key";
  {
    std::ofstream(key_file) << kKey << "\n";
    ::chmod(key_file.c_str(), 0600);
  }
  const uint64_t start_by = MonoNs() + 20 * kSec;
  Proc broker{.log = dir + "/broker.log"};
  broker.pid = sb::bench::SpawnProgram(broker_exe, {"--bind", "tcp://127.0.0.1:0"}, broker.log);
  if (broker.pid < 0 || !WaitForPort(&broker, "bound tcp://127.0.0.1:", start_by)) {
    std::fprintf(stderr, "bench-api-load: the broker did not start (%s)\n", broker.log.c_str());
    sb::bench::KillChildren();
    return 1;
  }
  std::vector<Proc> ws(static_cast<size_t>(shards));
  for (int k = 0; k < shards; ++k) {
    Proc& w = ws[static_cast<size_t>(k)];
    w.log = dir + "/worker" + std::to_string(k) + ".log";
    w.pid = sb::bench::SpawnProgram(
        worker,
        {"--listen", "127.0.0.1:0", "--shard", std::to_string(k), "--broker",
         "tcp://127.0.0.1:" + std::to_string(broker.port), "--api-key-file", key_file, "--rate",
         "0", "--idle-timeout", "3600", "--max-outbound", "16777216"},
        w.log);
    if (w.pid < 0 || !WaitForPort(&w, "listening on 127.0.0.1:", start_by)) {
      std::fprintf(stderr, "bench-api-load: worker %d did not start (%s)\n", k, w.log.c_str());
      sb::bench::KillChildren();
      return 1;
    }
  }

  const int epfd = ::epoll_create1(EPOLL_CLOEXEC);
  sb::bench::Rng rng(MonoNs());
  const size_t n_subs = static_cast<size_t>(shards * subscribers);
  std::vector<WsClient> subs(n_subs);
  std::vector<bool> joined(n_subs, false);
  std::vector<uint64_t> received(n_subs, 0);
  std::vector<uint64_t> latencies;
  latencies.reserve(1 << 22);
  bool measuring = false;
  uint64_t probes_seen = 0;
  std::vector<bool> probed(n_subs, false);
  const sockaddr_in source = Loopback(0);
  for (size_t i = 0; i < n_subs; ++i) {
    subs[i].Connect(epfd, i, source, Loopback(ws[i % static_cast<size_t>(shards)].port), "b", rng);
  }
  const uint64_t kPubTag = uint64_t{1} << 40;
  std::vector<Publisher> pubs(static_cast<size_t>(shards * conns));
  uint64_t reconnects = 0;
  auto Open = [&](Publisher& p, uint64_t tag) {
    p.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in dest = Loopback(ws[static_cast<size_t>(p.shard)].port);
    if (::connect(p.fd, reinterpret_cast<sockaddr*>(&dest), sizeof dest) != 0) {
      std::fprintf(stderr, "bench-api-load: connect: %s\n", strerror(errno));
      return false;
    }
    int one = 1;
    ::setsockopt(p.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ::fcntl(p.fd, F_SETFL, O_NONBLOCK);
    epoll_event ev{.events = EPOLLIN, .data = {.u64 = tag}};
    ::epoll_ctl(epfd, EPOLL_CTL_ADD, p.fd, &ev);
    return true;
  };
  for (size_t i = 0; i < pubs.size(); ++i) {
    pubs[i].shard = static_cast<int>(i % static_cast<size_t>(shards));
    if (!Open(pubs[i], kPubTag + i)) {
      sb::bench::KillChildren();
      return 1;
    }
  }
  const std::string fill(static_cast<size_t>(payload_bytes), 'x');
  std::vector<char> buf(1 << 16);
  epoll_event events[256];
  auto on_sub = [&](size_t i) {
    return [&, i](const sb::ws::Event& ev) {
      std::string_view m = ev.payload;
      if (!joined[i]) {
        if (m.find("phx_reply") != std::string_view::npos) joined[i] = true;
        return;
      }
      if (m.find("\"probe\"") != std::string_view::npos) {
        if (!probed[i]) ++probes_seen;
        probed[i] = true;
        return;
      }
      const size_t t = m.find("{\"t\":");
      if (t == std::string_view::npos) return;
      const uint64_t sent = std::strtoull(m.data() + t + 5, nullptr, 10);
      ++received[i];
      if (measuring) latencies.push_back(MonoNs() - sent);
    };
  };
  auto poll_once = [&](int timeout_ms) {
    const int n = ::epoll_wait(epfd, events, 256, timeout_ms);
    for (int e = 0; e < n; ++e) {
      const uint64_t tag = events[e].data.u64;
      if (tag >= kPubTag) {
        Publisher& p = pubs[tag - kPubTag];
        if (events[e].events & EPOLLOUT) FlushPublisher(p);
        bool eof = false;
        for (;;) {
          ssize_t r = ::read(p.fd, buf.data(), buf.size());
          if (r == 0) eof = true;
          if (r <= 0) break;
          p.in.append(buf.data(), static_cast<size_t>(r));
        }
        TakeResponses(p);
        // The shard ends a keep-alive connection after so many requests:
        // what was pipelined behind the last answer was never read (not
        // accepted, not delivered). Connect again, as an HTTP client does.
        if (eof) {
          ::close(p.fd);
          p.inflight = 0;
          p.in.clear();
          p.out.clear();
          p.out_off = 0;
          ++reconnects;
          if (!Open(p, tag)) return;
        }
      } else {
        const size_t i = tag;
        const bool was_open = subs[i].state() == WsClient::State::kOpen;
        subs[i].OnEvents(epfd, events[e].events, buf.data(), buf.size(), on_sub(i));
        if (!was_open && subs[i].state() == WsClient::State::kOpen) {
          subs[i].SendText(epfd, R"(["1","1","bench","phx_join",{}])", rng);
        }
      }
    }
  };
  const uint64_t ready_by = MonoNs() + 20 * kSec;
  while (std::count(joined.begin(), joined.end(), true) < static_cast<long>(n_subs) &&
         MonoNs() < ready_by) {
    poll_once(50);
  }
  // Probes until one reaches every subscriber: the broker routes to every shard.
  uint64_t next_probe = 0;
  while (probes_seen < n_subs && MonoNs() < ready_by) {
    if (MonoNs() >= next_probe) {
      Publisher& p = pubs[0];
      const std::string body = R"({"topic":"bench","event":"probe","payload":{}})";
      p.out += "POST /api/publish HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer " +
               std::string(kKey) + "\r\nContent-Length: " + std::to_string(body.size()) +
               "\r\n\r\n" + body;
      ++p.inflight;
      FlushPublisher(p);
      next_probe = MonoNs() + 200'000'000;
    }
    poll_once(20);
  }
  while (pubs[0].inflight > 0 && MonoNs() < ready_by) poll_once(20);
  if (probes_seen < n_subs) {
    std::fprintf(stderr, "bench-api-load: %llu of %zu subscribers ready\n",
                 static_cast<unsigned long long>(probes_seen), n_subs);
    sb::bench::KillChildren();
    return 1;
  }
  for (Publisher& p : pubs) p.ok = p.refused = 0;
  std::fill(received.begin(), received.end(), 0);

  std::vector<double> cpu0;
  for (const Proc& w : ws) cpu0.push_back(CpuSeconds(w.pid));
  const double broker_cpu0 = CpuSeconds(broker.pid);
  const double self_cpu0 = CpuSeconds(::getpid());
  measuring = true;
  const uint64_t t0 = MonoNs();
  const uint64_t t_end = t0 + static_cast<uint64_t>(duration * 1e9);
  while (MonoNs() < t_end) {
    for (Publisher& p : pubs) {
      if (p.inflight < window && p.out.empty()) {
        while (p.inflight < window) {
          p.out += Request(fill);
          ++p.inflight;
        }
        if (!FlushPublisher(p)) break;
        if (!p.out.empty()) {
          epoll_event ev{.events = EPOLLIN | EPOLLOUT,
                         .data = {.u64 = kPubTag + (&p - pubs.data())}};
          ::epoll_ctl(epfd, EPOLL_CTL_MOD, p.fd, &ev);
        }
      }
    }
    poll_once(1);
  }
  const double elapsed = static_cast<double>(MonoNs() - t0) / 1e9;
  std::vector<double> cpu;
  for (size_t k = 0; k < ws.size(); ++k) cpu.push_back(CpuSeconds(ws[k].pid) - cpu0[k]);
  const double broker_cpu = CpuSeconds(broker.pid) - broker_cpu0;
  const double self_cpu = CpuSeconds(::getpid()) - self_cpu0;
  // Drain: every answer, then every delivery of every accepted publish.
  const uint64_t drain_by = MonoNs() + 30 * kSec;
  auto outstanding = [&] {
    for (const Publisher& p : pubs) {
      if (p.inflight > 0) return true;
    }
    return false;
  };
  while (outstanding() && MonoNs() < drain_by) poll_once(10);
  uint64_t accepted = 0, refused = 0;
  std::vector<uint64_t> per_shard(ws.size(), 0);
  for (const Publisher& p : pubs) {
    accepted += p.ok;
    refused += p.refused;
    per_shard[static_cast<size_t>(p.shard)] += p.ok;
  }
  auto delivered = [&] {
    uint64_t d = 0;
    for (uint64_t r : received) d += r;
    return d;
  };
  const uint64_t expected = accepted * n_subs;
  while (delivered() < expected && MonoNs() < drain_by) poll_once(10);
  const uint64_t got = delivered();

  std::printf(
      "api publish: %d shard(s), %d subscriber(s)/shard, %d conn(s)/shard, window %d, %.2f s\n",
      shards, subscribers, conns, window, elapsed);
  std::string shard_json;
  for (size_t k = 0; k < ws.size(); ++k) {
    const double rate = static_cast<double>(per_shard[k]) / elapsed;
    std::printf("  shard %zu: %.0f publishes/s answered 200, CPU %.2f s (%.1f us/publish)\n", k,
                rate, cpu[k], per_shard[k] ? cpu[k] * 1e6 / static_cast<double>(per_shard[k]) : 0);
    shard_json += (k ? "," : "") + std::to_string(static_cast<long long>(rate));
  }
  std::vector<uint64_t> lat = latencies;
  const double p50 = Percentile(lat, 0.50), p99 = Percentile(lat, 0.99),
               max = lat.empty()
                         ? 0
                         : static_cast<double>(*std::max_element(lat.begin(), lat.end())) / 1e6;
  std::printf(
      "  total %.0f publishes/s, %llu refused (503), %llu reconnects, CPU: broker %.2f s, this "
      "load generator %.2f s\n",
      static_cast<double>(accepted) / elapsed, static_cast<unsigned long long>(refused),
      static_cast<unsigned long long>(reconnects), broker_cpu, self_cpu);
  std::printf("  deliveries %llu of %llu; latency p50 %.3f ms, p99 %.3f ms, max %.3f ms\n",
              static_cast<unsigned long long>(got), static_cast<unsigned long long>(expected), p50,
              p99, max);
  std::printf(
      "{\"shards\":%d,\"subscribers_per_shard\":%d,\"conns_per_shard\":%d,\"window\":%d,"
      "\"seconds\":%.3f,\"publishes_per_s_per_shard\":[%s],\"publishes_per_s\":%.0f,"
      "\"refused\":%llu,\"delivered\":%llu,\"expected\":%llu,\"latency_p50_ms\":%.3f,"
      "\"latency_p99_ms\":%.3f,\"latency_max_ms\":%.3f}\n",
      shards, subscribers, conns, window, elapsed, shard_json.c_str(),
      static_cast<double>(accepted) / elapsed, static_cast<unsigned long long>(refused),
      static_cast<unsigned long long>(got), static_cast<unsigned long long>(expected), p50, p99,
      max);
  for (Publisher& p : pubs) ::close(p.fd);
  for (WsClient& s : subs) s.Close();
  for (Proc& w : ws) Stop(&w);
  Stop(&broker);
  std::filesystem::remove_all(dir);
  return got == expected ? 0 : 1;
}
