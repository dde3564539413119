// SupervisorMetrics: the daemon's Prometheus endpoint (node.metrics).
//
// Owns: a prometheus-cpp registry holding the series of common/metric_names.h
// (per child, per supervisor, the daemon itself) and the Exposer serving it.
// Threads: Create() starts civetweb's listener and two worker threads, which
// only read the registry to answer scrapes; every method is called on the
// daemon's loop thread (prometheus-cpp metrics are safe against those reads).
// Does not: decide anything or read the clock; the daemon feeds it.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "supervisor/engine_types.h"

namespace sb::supervisor {

class SupervisorMetrics {
 public:
  // Listens on `listen` ("host:port" as the spec loader writes it; port 0 =
  // any free port) and labels every series node=`node`. Call it after the
  // daemon has blocked the signals it reads through its signalfd: the new
  // threads inherit the caller's signal mask. Every fd it opens is
  // close-on-exec. Fails with "unable to listen for metrics on host:port:
  // <why>" (the civetweb in Debian 12 is built without IPv6, so "[::1]:p"
  // fails too, saying so).
  static Result<std::unique_ptr<SupervisorMetrics>> Create(const std::string& listen,
                                                           const std::string& node);
  // Stops and joins the HTTP threads. It briefly runs one more thread that
  // connects to the listener, so civetweb notices the stop at once instead of
  // after its 2 s poll timeout.
  ~SupervisorMetrics();

  int port() const;  // the bound port (useful with port 0)

  // Creates a child's series (up 0, restarts 0, last exit status -1, exits
  // 0, empty histogram), at start and when reload or scale adds it.
  // `supervisor_path` is "root/shards"; `success_exit_codes` are the
  // ChildSpec's, used to tell normal exits from abnormal ones. Declaring an
  // existing child again keeps its series unless the path changed.
  void DeclareChild(const std::string& id, const std::string& supervisor_path,
                    std::vector<int> success_exit_codes = {});
  // Removes every series of a child that reload/scale removed, so dashboards
  // do not show a ghost. Unknown ids are ignored.
  void ForgetChild(const std::string& id);

  // Creates or updates a supervisor's series. `path` is its own supervisor
  // path ("root/shards"), the value child series carry for it; empty = `id`.
  void DeclareSupervisor(const std::string& id, int intensity, const std::string& path = "");
  void ForgetSupervisor(const std::string& id);

  // Feeds one engine event (the same ones written to the events file) with
  // ts = CLOCK_MONOTONIC seconds:
  //   started    remember ts (the start being timed)
  //   ready      child_up = 1; observe ts - started ts
  //   exited     child_up = 0; last exit status; exits_total{reason}, where an
  //              exit after `stopping` counts as normal (OTP's `shutdown`)
  //   stopped    child_up = 0 (ends a sub-supervisor declared as a child)
  //   stopping   remembered, so the coming exit counts as normal
  //   restarting restarts_total + 1
  //   gave_up    gave_up_total + 1 (`id` is a supervisor)
  // Events for undeclared ids and daemon_exit change nothing.
  void OnEvent(const TreeEvent& ev, double ts);

  // One event could not be written to the events file (kEventsWriteFailuresTotal).
  void CountEventsWriteFailure();

  // Restarts in the supervisor's current intensity window (RestartIntensity).
  void SetRestartsInWindow(const std::string& supervisor_id, int n);

  // The balance mode of every socket (name -> ListenSockets::kMode*), as
  // kSocketBalanceInfo; sockets missing from `modes` lose their series.
  void SetSocketModes(const std::map<std::string, std::string>& modes);

  // Samples /proc/self/fd (open fds) and /proc/self/statm (resident memory)
  // and records the loop lag. Call from Cron(); a failed read keeps the old value.
  void UpdateDaemonStats(double loop_lag_seconds);

 private:
  struct Impl;
  explicit SupervisorMetrics(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sb::supervisor
