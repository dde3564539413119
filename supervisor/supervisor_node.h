// SupervisorNode: one supervisor of the tree, with OTP semantics.
//
// Owns: the runtime children of one supervisor (their spec, state and current
// incarnation), its restart-intensity window, and its mailbox. It behaves
// like an OTP supervisor process: messages queue in the mailbox; a
// synchronous operation (start a child and wait until it is ready, stop a
// child and wait until it is gone) is a Step that takes only the messages it
// is waiting for ("selective receive") and leaves the rest queued, so a
// second crash during a restart is handled after it, exactly as OTP does.
// Pure: no clock, fork or I/O; every effect goes through NodeHost. Runs on
// the daemon's loop thread; owned by TreeEngine.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "supervisor/engine_types.h"
#include "supervisor/restart_intensity.h"
#include "supervisor/tree_spec.h"

namespace sb::supervisor {

// One supervisor's share of a reload (see reload_diff.h): adopt `next`
// (flags, child specs and order), stop `removed`, restart `changed` one at a
// time, start `added` in their place.
struct ReloadPart {
  SupervisorSpec next;
  std::vector<std::string> removed;  // reverse start order
  std::vector<std::string> changed;  // new order
  std::vector<std::string> added;    // new order
  // Workers with upgrade: handoff whose command or env changed: handed over
  // to a process with the new spec instead of restarted (new order).
  std::vector<std::string> upgraded;
};

// Messages in a supervisor's mailbox, one struct each, carrying exactly
// their own fields.
namespace msg {
// Start every static child in order (the supervisor's init).
struct Init {};
// About one incarnation of a worker child.
struct Spawned {
  Token token;
  int pid;
};
struct SpawnFailed {
  Token token;
  std::string error;
};
struct Ready {
  Token token;
};
// A STATUS= line an incarnation sent on NOTIFY_SOCKET (its value).
struct StatusLine {
  Token token;
  std::string text;
};
struct Exit {
  Token token;
  ExitInfo exit;
};
struct Timer {
  TimerToken timer;
};
// About a child supervisor: it finished starting, its start failed (`reason`:
// "failed to start child 'w3': <why>"), or it terminated (reason `shutdown`).
struct SubReady {
  Instance sub;
};
struct SubStartFailed {
  Instance sub;
  std::string reason;
};
struct SubExited {
  Instance sub;
};
// Stop all children and terminate (the parent or the daemon asks).
struct Stop {};
// Retry the failed restart of child `id`.
struct Retry {
  std::string id;
};
// Operator requests: each carries the `request` its Reply answers. Never
// counted as restarts.
struct OpStop {
  RequestId request;
  std::string id;
};
struct OpStart {
  RequestId request;
  std::string id;
};
struct OpRestart {
  RequestId request;
  std::string id;
};
// Grow or shrink replica set `id` (or this simple_one_for_one's instances,
// when `id` is the supervisor's own) to `count`.
struct OpScale {
  RequestId request;
  std::string id;
  int count;
};
// Hand worker `id` (upgrade: handoff) over to a new incarnation.
struct OpUpgrade {
  RequestId request;
  std::string id;
};
struct OpReload {
  RequestId request;
  std::shared_ptr<const ReloadPart> part;  // this supervisor's share
};
}  // namespace msg

using NodeMsg = std::variant<msg::Init, msg::Spawned, msg::SpawnFailed, msg::Ready, msg::StatusLine,
                             msg::Exit, msg::Timer, msg::SubReady, msg::SubStartFailed,
                             msg::SubExited, msg::Stop, msg::Retry, msg::OpStop, msg::OpStart,
                             msg::OpRestart, msg::OpScale, msg::OpUpgrade, msg::OpReload>;

// The operator request `m` carries, if it is one (the Op* messages).
std::optional<RequestId> OperatorRequest(const NodeMsg& m);

// Effects a node may ask for. Implemented by TreeEngine.
class NodeHost {
 public:
  virtual ~NodeHost() = default;
  virtual Token Spawn(Instance owner, const std::string& id, const ChildSpec& spec) = 0;
  virtual void Signal(Token token, int sig) = 0;
  virtual TimerToken StartTimer(Instance owner, Millis after) = 0;
  virtual void CancelTimer(TimerToken timer) = 0;
  virtual void Emit(TreeEvent ev) = 0;
  virtual void Log(action::Log::Level level, std::string text) = 0;
  // Creates a child supervisor and sends it kInit; returns its instance.
  virtual Instance StartSub(Instance parent, const SupervisorSpec& spec) = 0;
  virtual void Send(Instance to, NodeMsg msg) = 0;
  // SIGKILL every process below `sub` (a supervisor's shutdown timeout expired).
  virtual void KillSubtree(Instance sub) = 0;
  // The node finished: tell its parent (or end the daemon, for the root).
  virtual void Ready(Instance self) = 0;
  virtual void StartFailed(Instance self, const std::string& reason) = 0;
  virtual void Terminated(Instance self, bool gave_up) = 0;
  // An operator request is done.
  virtual void Reply(action::Reply reply) = 0;
};

class SupervisorNode {
 public:
  struct Child {
    ChildSpec spec;
    ChildState state = ChildState::kStopped;
    Token token = 0;   // current incarnation until its exit is consumed
    int pid = 0;       // worker pid while token != 0
    Instance sub = 0;  // running child supervisor
    Time since{0};     // when it became running
    int restarts = 0;  // automatic restarts of this child
    std::optional<ExitInfo> last_exit;
    int backoff_streak = 0;  // consecutive delayed restarts
    // kUpgrading: the new incarnation beside the current one, until it
    // becomes the child or is gone.
    Token next_token = 0;
    int next_pid = 0;
  };

  // How long an upgrade waits, once the old process has exited, for the new
  // one's "STATUS=upgraded ..." (both are sent at the end of a hand-off, and
  // either may be seen first).
  static constexpr Millis kUpgradeReportWait{1000};

  SupervisorNode(Instance self, Instance parent, SupervisorSpec spec, NodeHost& host);

  void Deliver(NodeMsg msg) { mailbox_.push_back(std::move(msg)); }
  // Processes messages until the node is blocked or its mailbox is empty.
  void Pump(Time now);
  // Every later Stop step kills at once (an ancestor's shutdown timeout fired).
  void SetBrutal() { brutal_ = true; }

  Instance self() const { return self_; }
  Instance parent() const { return parent_; }
  const SupervisorSpec& spec() const { return spec_; }
  const std::vector<Child>& children() const { return children_; }
  bool terminated() const { return terminated_; }
  int restarts_in_window(Time now) const { return intensity_.CountInWindow(now); }
  // The spec this supervisor runs now: children as they are (scaling and
  // reloads included), for the next reload's diff.
  SupervisorSpec RunningSpec() const;

 private:
  enum class StartMode { kInitial, kRestart, kOperator };
  struct Step {
    enum class Kind {
      kStart,
      kStop,
      kStopAllParallel,
      kForget,   // drop the child's spec (scale down, reload removal)
      kAdopt,    // take a reload's new spec and child order
      kReply,    // answer the operator request
      kUpgrade,  // hand the child over to a new incarnation (docs/UPGRADE.md)
    } kind;
    std::string id;  // kStart / kStop / kForget
    StartMode mode = StartMode::kInitial;
    RequestId request = 0;                     // kOperator starts, kReply
    std::shared_ptr<const ReloadPart> reload;  // kAdopt
    std::vector<std::string> added, removed;   // kReply
    // Progress of the step.
    bool begun = false;
    bool killing = false;  // start timed out: killed, waiting for the exit
    TimerToken timer = 0;
    std::string failure;      // why a start failed
    std::set<Token> waiting;  // kStopAllParallel: incarnations not yet gone
    // kUpgrade.
    bool from_reload = false;          // part of a reload: the reload's reply says how it went
    bool signalled = false;            // the old process was told to hand over (SIGUSR2)
    bool taken_over = false;           // the new process is the child; waiting for its report
    std::optional<ExitInfo> old_exit;  // the old process ended before it was told to
    std::optional<UpgradeOutcome> report;
    std::string note;  // why the hand-off ended the way it did, when not plainly
  };
  enum class After { kNothing, kReportReady, kReportStartFailed, kReportTerminated };

  Child* Find(const std::string& id);
  Child* FindByToken(Token t);
  Child* FindBySub(Instance i);
  // By value: callers pass the id of the very element being erased.
  void Erase(std::string id);

  // Idle: a message taken from the head of the mailbox.
  void Handle(NodeMsg m, Time now);
  void OnChildExit(Child& c, bool normal, const std::string& why, Time now);
  void Restart(const std::string& id, const std::string& why, Time now);
  void PlanRestart(const std::string& id, const std::string& why, bool announced);
  void GiveUp(const std::string& offender, Time now);
  void PlanStopAll();
  Millis BackoffDelay(Child& c);
  // The child an operator request names; null (and the request answered
  // not_found) when there is none.
  Child* OperatorTarget(RequestId request, const std::string& id);
  void HandleOpStop(const msg::OpStop& m);
  void HandleOpStart(const msg::OpStart& m);
  void HandleOpRestart(const msg::OpRestart& m);
  void HandleScale(const msg::OpScale& m);
  void HandleReload(const msg::OpReload& m);
  void HandleOpUpgrade(const msg::OpUpgrade& m);
  // The upgrade step: one message about either incarnation, and its ends.
  void OnUpgradeMsg(Step& s, Child& c, NodeMsg m, Time now);
  void UpgradeDone(Step& s, Child& c);
  void UpgradeFailed(Step& s, Child& c, const std::string& reason);
  void PlanReply(RequestId request);
  void Adopt(const ReloadPart& r);
  void ReplyNow(RequestId request, Status status);
  // Drops the plan, answering every operator request still waiting in it
  // (except `answered`, already replied to).
  void ClearPlan(const Status& why, RequestId answered = 0);

  // Steps.
  void Begin(Step& s, Time now);
  bool Wants(const Step& s, const NodeMsg& m) const;
  void OnStepMsg(Step& s, NodeMsg m, Time now);
  void StartSucceeded(Step& s, Time now);
  void StartFailedStep(Step& s, const std::string& reason);
  void StopDone(Step& s, Child& c);
  void Finish(Time now);
  // Sends the stop signal `sd` asks for. Arms the kill timer in `*timer`
  // unless `timer` is null (a parallel stop shares one timer).
  void StopSignal(Child& c, const ShutdownSpec& sd, TimerToken* timer);

  Instance self_;
  Instance parent_;
  SupervisorSpec spec_;
  NodeHost& host_;
  RestartIntensity intensity_;
  std::vector<Child> children_;  // start order
  std::deque<NodeMsg> mailbox_;
  std::deque<Step> plan_;
  std::optional<Step> step_;
  After after_ = After::kNothing;
  std::string start_failure_;
  bool gave_up_ = false;
  bool brutal_ = false;
  bool stopping_ = false;
  bool terminated_ = false;
  std::map<TimerToken, std::string> backoff_timers_;  // delayed restarts in flight
};

}  // namespace sb::supervisor
