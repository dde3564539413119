// DaemonHarness: one real `switchboard run` for an integration test.
//
// Owns: a temp dir holding the test's YAML (a `node:` section pointing the
// control socket and events file into the dir is prepended), the daemon
// process (stdout+stderr in <dir>/daemon.log), and helpers to wait on its
// events file. Every wait has a deadline; nothing sleeps a fixed time.
// `{{dir}}` in the YAML is replaced by the temp dir and `{{bin}}` by the
// directory holding the built programs (sb-testchild lives there).
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tests/testutil/testutil.h"

namespace sb::testutil {

class DaemonHarness {
 public:
  // Writes the config and starts the daemon (does not wait for readiness) with `env`
  // ("KEY=VALUE") added to the test's environment.
  explicit DaemonHarness(const std::string& yaml, std::vector<std::string> env = {});
  ~DaemonHarness();

  bool started() const { return proc_.has_value(); }
  pid_t pid() const { return proc_ ? proc_->pid() : -1; }
  Process& process() { return *proc_; }
  const TempDir& dir() const { return dir_; }
  std::string config_path() const { return dir_.File("config.yaml"); }
  std::string events_path() const { return dir_.File("events"); }
  std::string log() const { return ReadFile(dir_.File("daemon.log")); }

  std::vector<EventRecord> Events() const { return ReadEvents(events_path()); }
  // "event:id" strings in file order, e.g. {"started:a", "ready:a"}; `filter_ids` empty = all.
  std::vector<std::string> Trace(const std::vector<std::string>& filter_ids = {}) const;
  // Waits until at least `count` events match (id, event); "" matches any.
  bool WaitFor(const std::string& id, const std::string& event, size_t count = 1,
               std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;
  // Waits until the root supervisor has reported ready.
  bool WaitReady(std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;
  // Pid of the latest `started` event of `id`, or 0.
  int PidOf(const std::string& id) const;
  // SIGTERM and wait for the daemon to exit; returns the raw wait status or nullopt on timeout.
  std::optional<int> Stop(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // Wait for the daemon to exit on its own; raw wait status or nullopt.
  std::optional<int> WaitExit(std::chrono::milliseconds timeout = std::chrono::seconds(20));

 private:
  TempDir dir_;
  std::optional<Process> proc_;
};

// A test that runs one daemon at a time (Start) and, when it fails, prints
// that daemon's events file and log: what a reader of the failure needs.
class DaemonTest : public ::testing::Test {
 protected:
  DaemonHarness& Start(const std::string& yaml, std::vector<std::string> env = {}) {
    daemon_.emplace(yaml, std::move(env));
    return *daemon_;
  }
  void TearDown() override;

 private:
  std::optional<DaemonHarness> daemon_;
};

// GET /metrics from 127.0.0.1:`port` over a plain socket; the body of a 200 reply, or "".
std::string Scrape(int port);
// The value of the sample `name{...}` (or `name` without labels) in a scraped `body` whose
// labels include every one of `want`; nullopt if none.
std::optional<double> Sample(const std::string& body, std::string_view name,
                             const std::map<std::string, std::string>& want);

// Runs `switchboard <args...>` to completion; returns the exit code (or -1) and the
// combined stdout+stderr in *output.
int RunSwitchboard(const std::vector<std::string>& args, std::string* output,
                   std::chrono::milliseconds timeout = std::chrono::seconds(20));

}  // namespace sb::testutil
