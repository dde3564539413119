// TreeEngine: the whole supervision tree as a pure state machine.
//
// Owns: every running SupervisorNode, and the tables that route what the
// outside world reports (a process incarnation's readiness or exit, a timer)
// to the supervisor that is waiting for it. Input: the On*() calls; output:
// the Actions returned by TakeActions(), which the daemon performs in order
// and answers with further On*() calls. No clock, fork, signal or I/O here:
// time is passed in, so every OTP rule is unit-tested with a fake world
// (tree_engine_test.cc). Single-threaded, on the daemon's loop.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "supervisor/engine_types.h"
#include "supervisor/supervisor_node.h"
#include "supervisor/tree_spec.h"

namespace sb::supervisor {

class TreeEngine : private NodeHost {
 public:
  explicit TreeEngine(SupervisorSpec root);
  ~TreeEngine() override;

  // Starts the root supervisor (ordered, synchronous start of the whole tree).
  void Start(Time now);
  // The daemon was asked to stop (SIGTERM/SIGINT): stop everything in reverse
  // order. A second request kills whatever is still running.
  void RequestShutdown(Time now);

  void OnSpawned(Token token, int pid, Time now);
  void OnSpawnFailed(Token token, const std::string& error, Time now);
  void OnReady(Token token, Time now);
  // A STATUS= line from an incarnation (its value): an upgrade's report.
  void OnStatus(Token token, std::string text, Time now);
  void OnExited(Token token, ExitInfo exit, Time now);
  void OnTimer(TimerToken timer, Time now);

  // Operator requests. Each is answered by exactly one action::Reply with
  // the same id, when the work is done (stop/start wait for the child).
  enum class Op { kStop, kStart, kRestart };
  void Operator(RequestId request, Op op, const std::string& id, Time now);
  // Grows or shrinks a replica set, or a simple_one_for_one supervisor's
  // instances, to `n`.
  void Scale(RequestId request, const std::string& id, int n, Time now);
  // Hands a worker with upgrade: handoff over to a new incarnation, or, for
  // a supervisor, each such worker below it in start order (pre-order), one
  // at a time, stopping at the first failure. The reply lists what moved.
  void Upgrade(RequestId request, const std::string& id, Time now);
  // Applies a reload, one supervisor after another (parents first).
  void Reload(RequestId request, std::vector<std::pair<std::string, ReloadPart>> parts, Time now);

  std::vector<Action> TakeActions() { return std::exchange(actions_, {}); }

  // What runs now, for status; and as a spec, for the next reload's diff.
  TreeView View(Time now) const;
  SupervisorSpec RunningSpec() const;

  // Read-only view for status and tests.
  const SupervisorNode* root() const;
  const SupervisorNode* node(Instance i) const;
  bool finished() const { return finished_; }

 private:
  // NodeHost
  Token Spawn(Instance owner, const std::string& id, const ChildSpec& spec) override;
  void Signal(Token token, int sig) override;
  TimerToken StartTimer(Instance owner, Millis after) override;
  void CancelTimer(TimerToken timer) override;
  void Emit(TreeEvent ev) override;
  void Log(action::Log::Level level, std::string text) override;
  Instance StartSub(Instance parent, const SupervisorSpec& spec) override;
  void Send(Instance to, NodeMsg msg) override;
  void KillSubtree(Instance sub) override;
  void Ready(Instance self) override;
  void StartFailed(Instance self, const std::string& reason) override;
  void Terminated(Instance self, bool gave_up) override;
  void Reply(action::Reply reply) override;

  SupervisorNode* Owner(const std::string& child_id);  // the supervisor holding it
  SupervisorNode* ById(const std::string& supervisor_id);
  TreeView ViewOf(const SupervisorNode& n, Time now) const;
  SupervisorSpec RunningSpecOf(const SupervisorNode& n) const;
  void NextReloadPart(Time now);
  struct UpgradeRun;
  void NextUpgrade(UpgradeRun run);

  void PumpAll(Time now);
  void Reap(Instance i);

  struct Incarnation {
    Instance owner;
    std::string id;
    int pid = 0;
  };

  SupervisorSpec root_spec_;
  Instance root_ = 0;
  Instance next_instance_ = 1;
  uint64_t next_token_ = 1;
  std::map<Instance, std::unique_ptr<SupervisorNode>> nodes_;
  std::unordered_map<Token, Incarnation> live_;      // spawned, exit not yet seen
  std::unordered_map<TimerToken, Instance> timers_;  // armed
  std::vector<Instance> dirty_;                      // have mail to process
  std::vector<Instance> dead_;                       // terminated, delete after pumping
  std::vector<Action> actions_;
  // A reload in progress: the client's request, parts still to apply, and the
  // internal id of the part being applied.
  struct PendingReload {
    RequestId client = 0;
    RequestId current = 0;
    std::deque<std::pair<std::string, ReloadPart>> parts;
  };
  std::optional<PendingReload> reload_;
  // Upgrades of a supervisor's workers in progress, by the internal id of
  // the one being handed over.
  struct UpgradeRun {
    RequestId client = 0;
    std::deque<std::string> ids;  // still to do
    std::vector<UpgradeOutcome> done;
  };
  std::map<RequestId, UpgradeRun> upgrades_;
  RequestId next_internal_ = 1ull << 62;  // never collides with the daemon's ids
  bool shutdown_requested_ = false;
  bool finished_ = false;
};

}  // namespace sb::supervisor
