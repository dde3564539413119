// bench-restart-latency: crash -> ready restart latency of a supervised shard.
//
// Starts `switchboard run` on a generated topology (one switchboard-worker
// shard holding an inherited listening socket, ready: notify), then N times:
// reads the shard's pid, takes t0 = CLOCK_MONOTONIC, SIGKILLs the shard, and
// waits for the daemon's next `ready` event for it. The latency is the
// event's own `ts` (the daemon's CLOCK_MONOTONIC) minus t0, so how often this
// program polls the events file does not enter the figure. It covers exit
// detection (pidfd), the restart decision, fork/exec, the shard's start-up
// and its READY=1 datagram. Bounded in count and in time.
//
// Usage: bench-restart-latency [--cycles N] [--max-seconds S] [--child PROGRAM]
// PROGRAM is switchboard-worker (default: a shard, with its socket) or
// notify_child (the smallest sd_notify child: the supervisor's own share).
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/command_line.h"
#include "common/mono_time.h"

namespace fs = std::filesystem;

namespace {

// The clock of the events file's "ts", in seconds.
double MonoNow() { return sb::ToSeconds(sb::MonoNow()); }

struct Ready {
  int pid;
  double ts;
  double exited_ts;   // the daemon saw the previous incarnation exit
  double started_ts;  // the daemon had forked/exec'd this one
};

// Tails the events file from `offset`, returning `ready` events of `id` with
// the `exited` and `started` timestamps that preceded each.
std::vector<Ready> NewReady(const std::string& path, std::streamoff& offset,
                            const std::string& id) {
  std::vector<Ready> out;
  std::ifstream in(path);
  if (!in) return out;
  in.seekg(offset);
  std::string line;
  static double exited_ts = 0, started_ts = 0;
  while (std::getline(in, line)) {
    if (in.eof()) break;  // partial last line: read it again next time
    offset = in.tellg();
    boost::system::error_code ec;
    auto v = boost::json::parse(line, ec);
    if (ec || !v.is_object()) continue;
    auto& o = v.as_object();
    if (o["id"] != id.c_str()) continue;
    double ts = o["ts"].to_number<double>();
    if (o["event"] == "exited") exited_ts = ts;
    if (o["event"] == "started") started_ts = ts;
    if (o["event"] == "ready" && o["pid"].is_int64()) {
      out.push_back({static_cast<int>(o["pid"].as_int64()), ts, exited_ts, started_ts});
    }
  }
  return out;
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

}  // namespace

int main(int argc, char** argv) {
  int cycles = 1000;
  double max_seconds = 120;
  std::string child = "switchboard-worker";
  CLI::App app{"bench-restart-latency: crash -> ready restart latency of a supervised child"};
  app.add_option("--cycles", cycles, "restarts to measure")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-seconds", max_seconds, "bound on the whole bench")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--child", child, "the supervised program: switchboard-worker or notify_child")
      ->capture_default_str();
  if (std::optional<int> exit = sb::ParseCommandLine(app, argc, argv)) return *exit;
  fs::path bin = fs::read_symlink("/proc/self/exe").parent_path();
  char tmpl[] = "/tmp/sb-bench-XXXXXX";
  fs::path dir = mkdtemp(tmpl);
  std::string events = (dir / "events").string();
  std::ofstream(dir / "bench.yaml") << "node:\n"
                                    << "  name: bench\n"
                                    << "  control: " << (dir / "ctl.sock").string() << "\n"
                                    << "  events: " << events << "\n"
                                    << "sockets:\n"
                                    << "  - {name: gateway, listen: \"127.0.0.1:0\"}\n"
                                    << "supervisor:\n"
                                    << "  intensity: 1000000\n"
                                    << "  period: 1s\n"
                                    << "  children:\n"
                                    << "    - id: shard\n"
                                    << "      command: [\"" << child << "\"]\n"
                                    << "      env: {LOG_LEVEL: warn}\n"
                                    << "      sockets: [gateway]\n";
  pid_t daemon = fork();
  if (daemon == 0) {
    std::string cfg = (dir / "bench.yaml").string();
    std::string exe = (bin / "switchboard").string();
    setenv("LOG_LEVEL", "warn", 1);
    execl(exe.c_str(), exe.c_str(), "run", cfg.c_str(), nullptr);
    _exit(127);
  }

  std::streamoff offset = 0;
  double deadline = MonoNow() + max_seconds;
  int pid = 0;
  while (pid == 0 && MonoNow() < deadline) {
    for (const Ready& r : NewReady(events, offset, "shard")) pid = r.pid;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::vector<double> lat_ms, detect_ms, spawn_ms, child_ms;
  while (static_cast<int>(lat_ms.size()) < cycles && pid != 0 && MonoNow() < deadline) {
    double t0 = MonoNow();
    kill(pid, SIGKILL);
    int next = 0;
    while (next == 0 && MonoNow() < deadline) {
      for (const Ready& r : NewReady(events, offset, "shard")) {
        if (r.pid != pid) {
          next = r.pid;
          lat_ms.push_back((r.ts - t0) * 1000.0);
          detect_ms.push_back((r.exited_ts - t0) * 1000.0);
          spawn_ms.push_back((r.started_ts - r.exited_ts) * 1000.0);
          child_ms.push_back((r.ts - r.started_ts) * 1000.0);
        }
      }
      if (next == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    pid = next;
  }
  kill(daemon, SIGTERM);
  int st = 0;
  waitpid(daemon, &st, 0);
  fs::remove_all(dir);
  if (lat_ms.empty()) {
    std::fprintf(stderr, "bench-restart-latency: no restart measured\n");
    return 1;
  }
  std::printf("child=%s ", child.c_str());
  std::printf("restarts=%zu p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f\n", lat_ms.size(),
              Percentile(lat_ms, 50), Percentile(lat_ms, 90), Percentile(lat_ms, 99),
              *std::max_element(lat_ms.begin(), lat_ms.end()));
  std::printf(
      "p50 breakdown: kill->exited_ms=%.3f exited->started_ms=%.3f started->ready_ms=%.3f\n",
      Percentile(detect_ms, 50), Percentile(spawn_ms, 50), Percentile(child_ms, 50));
  return static_cast<int>(lat_ms.size()) == cycles ? 0 : 1;
}
