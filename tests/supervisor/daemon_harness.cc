#include "tests/supervisor/daemon_harness.h"

#include <signal.h>
#include <sys/wait.h>

#include <exception>
#include <iostream>
#include <regex>
#include <sstream>

#include "common/unique_fd.h"

namespace sb::testutil {

namespace {

std::string ReplaceAll(std::string s, const std::string& from, const std::string& to) {
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size())) {
    s.replace(pos, from.size(), to);
  }
  return s;
}

}  // namespace

DaemonHarness::DaemonHarness(const std::string& yaml, std::vector<std::string> env) {
  std::string body = ReplaceAll(ReplaceAll(yaml, "{{dir}}", dir_.path()), "{{bin}}", BinDir());
  if (body.find("node:") == std::string::npos) {
    body = "node:\n  name: test\n  control: " + dir_.File("ctl.sock") +
           "\n  events: " + events_path() + "\n" + body;
  }
  WriteFile(config_path(), body);
  SpawnOptions opts;
  opts.args = {"run", config_path()};
  opts.output = dir_.File("daemon.log");
  opts.env = std::move(env);
  auto p = Process::Start(BinPath("switchboard"), opts);
  if (p.ok()) proc_.emplace(std::move(p.value()));
}

DaemonHarness::~DaemonHarness() {
  if (proc_ && proc_->Running()) Stop(std::chrono::seconds(10));
}

std::vector<std::string> DaemonHarness::Trace(const std::vector<std::string>& filter_ids) const {
  std::vector<std::string> out;
  for (const EventRecord& e : Events()) {
    bool keep = filter_ids.empty();
    for (const std::string& id : filter_ids) keep |= (e.id == id);
    if (keep) out.push_back(e.event + ":" + e.id);
  }
  return out;
}

bool DaemonHarness::WaitFor(const std::string& id, const std::string& event, size_t count,
                            std::chrono::milliseconds timeout) const {
  return WaitUntil([&] { return FilterEvents(Events(), id, event).size() >= count; }, timeout);
}

bool DaemonHarness::WaitReady(std::chrono::milliseconds timeout) const {
  return WaitFor("root", "ready", 1, timeout);
}

int DaemonHarness::PidOf(const std::string& id) const {
  auto started = FilterEvents(Events(), id, "started");
  return started.empty() ? 0 : started.back().pid;
}

std::optional<int> DaemonHarness::Stop(std::chrono::milliseconds timeout) {
  if (!proc_) return std::nullopt;
  proc_->Signal(SIGTERM);
  return WaitExit(timeout);
}

std::optional<int> DaemonHarness::WaitExit(std::chrono::milliseconds timeout) {
  if (!proc_) return std::nullopt;
  int status = 0;
  if (!proc_->WaitExit(timeout, &status)) return std::nullopt;
  return status;
}

std::string Scrape(int port) {
  int fd = ConnectTcp("127.0.0.1", port, std::chrono::milliseconds(5'000));
  if (fd < 0) return "";
  UniqueFd guard(fd);
  if (!WriteAll(fd, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")) return "";
  std::string reply = ReadAll(fd, std::chrono::milliseconds(10'000));
  size_t body = reply.find("\r\n\r\n");
  if (body == std::string::npos || !reply.starts_with("HTTP/1.")) return "";
  std::string status_line = reply.substr(0, reply.find("\r\n"));
  if (status_line.find(" 200") == std::string::npos) return "";
  return reply.substr(body + 4);
}

std::optional<double> Sample(const std::string& body, std::string_view name,
                             const std::map<std::string, std::string>& want) {
  std::istringstream in(body);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    size_t open = line.find('{');
    size_t close = line.rfind('}');
    if (open == std::string::npos) {
      // A series without labels: "name value".
      open = line.find(' ');
      if (open == std::string::npos) continue;
      close = open;
    } else if (close == std::string::npos || close < open) {
      continue;
    }
    if (std::string_view(line).substr(0, open) != name) continue;
    std::map<std::string, std::string> labels;
    static const std::regex kLabel(R"re(([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)")re");
    std::string inside = close > open ? line.substr(open + 1, close - open - 1) : "";
    for (auto it = std::sregex_iterator(inside.begin(), inside.end(), kLabel);
         it != std::sregex_iterator(); ++it) {
      labels[(*it)[1]] = (*it)[2];
    }
    bool match = true;
    for (const auto& [k, v] : want) match = match && labels.contains(k) && labels[k] == v;
    if (!match) continue;
    try {
      return std::stod(line.substr(close + 1));
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }
  return std::nullopt;
}

int RunSwitchboard(const std::vector<std::string>& args, std::string* output,
                   std::chrono::milliseconds timeout) {
  TempDir dir;
  SpawnOptions opts;
  opts.args = args;
  opts.output = dir.File("out");
  auto p = Process::Start(BinPath("switchboard"), opts);
  if (!p.ok()) return -1;
  int status = 0;
  bool exited = p.value().WaitExit(timeout, &status);
  if (output) *output = ReadFile(dir.File("out"));
  if (!exited || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

void DaemonTest::TearDown() {
  if (HasFailure() && daemon_) {
    std::cerr << "---- events\n"
              << ReadFile(daemon_->events_path()) << "---- daemon log\n"
              << daemon_->log() << "----\n";
  }
}

}  // namespace sb::testutil
