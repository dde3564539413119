// TreeEngine against a fake world: every rule of OTP-SEMANTICS.md that the
// engine implements, checked through the exact order of its actions.

#include "supervisor/tree_engine.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "supervisor/engine_types.h"
#include "supervisor/supervisor_node.h"
#include "supervisor/tree_spec.h"

namespace sb::supervisor {
namespace {

using namespace std::chrono_literals;
using Strings = std::vector<std::string>;

// ---- specs ------------------------------------------------------------------

ChildSpec Worker(const std::string& id, RestartType restart = RestartType::kPermanent) {
  ChildSpec c;
  c.id = id;
  c.restart = restart;
  c.command = {"/usr/bin/" + id};
  return c;
}

ChildSpec WithShutdown(ChildSpec c, ShutdownSpec::Kind kind, Millis timeout = 0ms) {
  c.shutdown = ShutdownSpec{kind, timeout};
  return c;
}

SupervisorSpec Sup(const std::string& id, Strategy strategy, std::vector<ChildSpec> children,
                   int intensity = 1, Millis period = 5000ms) {
  SupervisorSpec s;
  s.id = id;
  s.strategy = strategy;
  s.children = std::move(children);
  s.intensity = intensity;
  s.period = period;
  return s;
}

ChildSpec SubSup(SupervisorSpec spec, RestartType restart = RestartType::kPermanent,
                 ShutdownSpec shutdown = {ShutdownSpec::Kind::kInfinity, 0ms}) {
  ChildSpec c;
  c.id = spec.id;
  c.is_supervisor = true;
  c.restart = restart;
  c.shutdown = shutdown;
  c.sub.push_back(std::move(spec));
  return c;
}

// ---- the fake world ---------------------------------------------------------

// How a spawned process behaves until it is ready.
enum class Boot {
  kReady,       // reports ready at once
  kNeverReady,  // runs, never reports ready
  kExitEarly,   // exits with kEarlyStatus before reporting ready
  kExecFails,   // fork/exec fails: OnSpawnFailed
};
constexpr int kEarlyStatus = 3;

// Performs the engine's actions the way the daemon would, answering at once:
// spawns succeed with increasing pids, SIGTERM ends a process unless it is set
// to ignore it, SIGKILL always does (a signal to a process already reaped is a
// no-op and is not recorded). Timers fire only when the test says so.
// Records every action as a compact string ("spawn:a", "TERM:a", "KILL:a",
// "arm:5000ms", "cancel", "fire:5000ms", "exit:0") and every Emit as
// "event:id" ("started:a", "gave_up:root").
class World {
 public:
  explicit World(SupervisorSpec root) : engine_(std::move(root)) {}

  // Every later spawn of `id` behaves like `boot`, after the queued ones.
  void SetBoot(const std::string& id, Boot boot) { boot_[id] = boot; }
  // The next spawn of `id` (then the one after, ...) behaves like `boot`.
  void QueueBoot(const std::string& id, Boot boot) { queued_[id].push_back(boot); }
  void IgnoreTerm(const std::string& id) { ignore_term_.insert(id); }

  void Start() {
    engine_.Start(now_);
    Settle();
  }
  void Shutdown() {
    engine_.RequestShutdown(now_);
    Settle();
  }
  void Crash(const std::string& id, ExitInfo exit = ExitInfo::Code(1)) {
    CrashTogether({id}, exit);
  }
  // All of `ids` exit before the world performs any of the engine's answers.
  void CrashTogether(const Strings& ids, ExitInfo exit = ExitInfo::Code(1)) {
    for (const std::string& id : ids) {
      ASSERT_TRUE(current_.contains(id)) << id << " is not running";
      Exit(current_[id], exit);
    }
    Settle();
  }
  void Ready(const std::string& id) {
    ASSERT_TRUE(current_.contains(id)) << id << " is not running";
    engine_.OnReady(current_[id], now_);
    Settle();
  }
  // Fires the oldest armed timer of duration `after`.
  void Fire(Millis after) {
    auto it = std::find_if(timers_.begin(), timers_.end(),
                           [&](const auto& t) { return t.second == after; });
    ASSERT_NE(it, timers_.end()) << "no armed timer of " << after.count() << "ms";
    TimerToken timer = it->first;
    timers_.erase(it);
    Record("fire:" + std::to_string(after.count()) + "ms");
    engine_.OnTimer(timer, now_);
    Settle();
  }
  void Advance(Time d) { now_ += d; }

  // Operator requests; each reply is recorded as "reply:ok" or "reply:error".
  RequestId Op(TreeEngine::Op op, const std::string& id) {
    RequestId r = next_request_++;
    engine_.Operator(r, op, id, now_);
    Settle();
    return r;
  }
  RequestId Scale(const std::string& id, int n) {
    RequestId r = next_request_++;
    engine_.Scale(r, id, n, now_);
    Settle();
    return r;
  }
  RequestId Upgrade(const std::string& id) {
    RequestId r = next_request_++;
    engine_.Upgrade(r, id, now_);
    Settle();
    return r;
  }
  // The new incarnation of an upgrade (spawned with SWITCHBOARD_HANDOFF=receive)
  // until the old one is gone.
  void NewReady(const std::string& id) {
    ASSERT_TRUE(next_.contains(id)) << id << " has no new incarnation";
    engine_.OnReady(next_[id], now_);
    Settle();
  }
  void NewExit(const std::string& id, ExitInfo exit) {
    ASSERT_TRUE(next_.contains(id)) << id << " has no new incarnation";
    Exit(next_[id], exit);
    Settle();
  }
  // A STATUS= line from the newest incarnation of `id`.
  void Status(const std::string& id, const std::string& text) {
    Token t = next_.contains(id) ? next_[id] : current_.at(id);
    engine_.OnStatus(t, text, now_);
    Settle();
  }
  int NewPid(const std::string& id) const {
    auto it = next_.find(id);
    return it == next_.end() ? 0 : procs_.at(it->second).pid;
  }
  // On SIGUSR2 the old process of `id` hands over as a shard does: the new
  // one reports `connections`, then the old one exits 0.
  void HandOverOnUsr2(const std::string& id, int connections) { hand_over_[id] = connections; }

  RequestId Reload(std::vector<std::pair<std::string, ReloadPart>> parts) {
    RequestId r = next_request_++;
    engine_.Reload(r, std::move(parts), now_);
    Settle();
    return r;
  }
  // The reply to `r`, if it came.
  std::optional<action::Reply> ReplyTo(RequestId r) const {
    auto it = replies_.find(r);
    if (it == replies_.end()) return std::nullopt;
    return it->second;
  }

  const Strings& Trace() const { return trace_; }
  const Strings& Events() const { return events_; }
  // The events themselves, reasons included, in the order of Events().
  const std::vector<TreeEvent>& Emitted() const { return emitted_; }
  void Clear() {
    trace_.clear();
    events_.clear();
    emitted_.clear();
  }
  int Count(const std::string& entry) const {
    return static_cast<int>(std::count(trace_.begin(), trace_.end(), entry));
  }
  int Pid(const std::string& id) const {
    auto it = current_.find(id);
    return it == current_.end() ? 0 : procs_.at(it->second).pid;
  }
  bool Running(const std::string& id) const { return current_.contains(id); }
  int spawns(const std::string& id) const { return spawns_.contains(id) ? spawns_.at(id) : 0; }
  const ChildSpec& LastSpawnSpec(const std::string& id) const { return specs_.at(id); }
  size_t armed_timers() const { return timers_.size(); }
  const ChildSpec& spec(const std::string& id) const { return specs_.at(id); }
  std::optional<int> exit_code() const { return exit_code_; }
  const std::string& exit_reason() const { return exit_reason_; }

  const TreeEngine& engine() const { return engine_; }
  const SupervisorNode& root() const { return *engine_.root(); }
  int RootRestarts() const { return engine_.root()->restarts_in_window(now_); }
  // The running supervisor node of child supervisor `id` (a child of root).
  const SupervisorNode* SubNode(const std::string& id) const {
    const SupervisorNode::Child* c = FindChild(root(), id);
    return c ? engine_.node(c->sub) : nullptr;
  }
  static const SupervisorNode::Child* FindChild(const SupervisorNode& n, const std::string& id) {
    for (const auto& c : n.children())
      if (c.spec.id == id) return &c;
    return nullptr;
  }
  static Strings Ids(const SupervisorNode& n) {
    Strings ids;
    for (const auto& c : n.children()) ids.push_back(c.spec.id);
    return ids;
  }

 private:
  struct Proc {
    std::string id;
    int pid;
  };

  void Settle() {
    std::deque<Action> queue;
    auto pull = [&] {
      for (Action& a : engine_.TakeActions()) queue.push_back(std::move(a));
    };
    pull();
    while (!queue.empty()) {
      Action a = std::move(queue.front());
      queue.pop_front();
      std::visit([this](const auto& act) { Perform(act); }, a);
      pull();
    }
  }

  void Record(std::string s) { trace_.push_back(std::move(s)); }

  void Exit(Token token, ExitInfo exit) {
    const std::string id = procs_.at(token).id;
    auto it = current_.find(id);
    if (it != current_.end() && it->second == token) {
      current_.erase(it);
      // The new incarnation of an upgrade, if any, is what runs now.
      if (auto n = next_.find(id); n != next_.end()) {
        current_[id] = n->second;
        next_.erase(n);
      }
    }
    if (auto n = next_.find(id); n != next_.end() && n->second == token) next_.erase(n);
    procs_.erase(token);
    engine_.OnExited(token, exit, now_);
  }

  Boot NextBoot(const std::string& id) {
    auto q = queued_.find(id);
    if (q != queued_.end() && !q->second.empty()) {
      Boot b = q->second.front();
      q->second.pop_front();
      return b;
    }
    auto it = boot_.find(id);
    return it == boot_.end() ? Boot::kReady : it->second;
  }

  void Perform(const action::Spawn& a) {
    const std::string& id = a.spec.id;
    Record("spawn:" + id);
    spawns_[id]++;
    specs_[id] = a.spec;
    Boot boot = NextBoot(id);
    if (boot == Boot::kExecFails) {
      engine_.OnSpawnFailed(a.token, "exec failed", now_);
      return;
    }
    procs_[a.token] = Proc{id, next_pid_++};
    const bool receiver = std::find(a.spec.env.begin(), a.spec.env.end(),
                                    std::pair<std::string, std::string>{
                                        "SWITCHBOARD_HANDOFF", "receive"}) != a.spec.env.end();
    (receiver ? next_ : current_)[id] = a.token;
    engine_.OnSpawned(a.token, procs_[a.token].pid, now_);
    if (boot == Boot::kReady) engine_.OnReady(a.token, now_);
    if (boot == Boot::kExitEarly) Exit(a.token, ExitInfo::Code(kEarlyStatus));
  }
  void Perform(const action::Signal& a) {
    auto it = procs_.find(a.token);
    if (it == procs_.end()) return;  // already reaped: a no-op, as for the daemon
    const std::string id = it->second.id;
    if (a.signal == SIGUSR2) {  // hand over: only a process that does so reacts
      Record("USR2:" + id);
      auto h = hand_over_.find(id);
      if (h == hand_over_.end() || !next_.contains(id)) return;
      engine_.OnStatus(next_[id], "upgraded connections=" + std::to_string(h->second) + " ms=1",
                       now_);
      Exit(a.token, ExitInfo::Code(0));
      return;
    }
    Record((a.signal == SIGKILL ? "KILL:" : a.signal == SIGTERM ? "TERM:" : "SIG?:") + id);
    if (a.signal == SIGKILL || !ignore_term_.contains(id))
      Exit(a.token, ExitInfo::Signal(a.signal));
  }
  void Perform(const action::StartTimer& a) {
    Record("arm:" + std::to_string(a.after.count()) + "ms");
    timers_.emplace_back(a.timer, a.after);
  }
  void Perform(const action::CancelTimer& a) {
    Record("cancel");
    std::erase_if(timers_, [&](const auto& t) { return t.first == a.timer; });
  }
  void Perform(const action::Emit& a) {
    std::string e = std::string(EventName(a.event.kind)) + ":" + a.event.id;
    Record(e);
    events_.push_back(e);
    emitted_.push_back(a.event);
  }
  void Perform(const action::Log&) {}
  void Perform(const action::Reply& a) {
    Record(a.status.ok() ? "reply:ok" : "reply:error");
    EXPECT_FALSE(replies_.contains(a.request)) << "request answered twice";
    replies_[a.request] = a;
  }
  void Perform(const action::Exit& a) {
    Record("exit:" + std::to_string(a.code));
    EXPECT_FALSE(exit_code_.has_value()) << "Exit performed twice";
    exit_code_ = a.code;
    exit_reason_ = a.reason;
  }

  TreeEngine engine_;
  Time now_ = 1000s;
  int next_pid_ = 100;
  std::map<std::string, Boot> boot_;
  std::map<std::string, std::deque<Boot>> queued_;
  std::set<std::string> ignore_term_;
  std::map<Token, Proc> procs_;           // live processes
  std::map<std::string, Token> current_;  // id -> its live incarnation
  std::map<std::string, Token> next_;     // id -> the new incarnation of an upgrade
  std::map<std::string, int> hand_over_;  // ids that hand over on SIGUSR2, with their count
  std::map<std::string, int> spawns_;
  std::map<std::string, ChildSpec> specs_;             // last Spawn spec per id
  std::vector<std::pair<TimerToken, Millis>> timers_;  // armed, oldest first
  Strings trace_;
  Strings events_;
  std::vector<TreeEvent> emitted_;
  std::optional<int> exit_code_;
  std::string exit_reason_;
  RequestId next_request_ = 1;
  std::map<RequestId, action::Reply> replies_;
};

constexpr auto kOneForOne = Strategy::kOneForOne;
constexpr auto kOneForAll = Strategy::kOneForAll;
constexpr auto kRestForOne = Strategy::kRestForOne;
constexpr auto kTransient = RestartType::kTransient;
constexpr auto kTemporary = RestartType::kTemporary;

// ---- ordered synchronous start ----------------------------------------------

TEST(StartTest, NextChildIsSpawnedOnlyAfterThePreviousIsReady) {
  World w(Sup("root", kOneForOne, {Worker("a"), Worker("b")}));
  w.SetBoot("a", Boot::kNeverReady);
  w.Start();
  EXPECT_EQ(w.Trace(), (Strings{"started:root", "spawn:a", "started:a", "arm:10000ms"}));
  w.Clear();
  w.Ready("a");
  EXPECT_EQ(w.Trace(), (Strings{"cancel", "ready:a", "spawn:b", "started:b", "arm:10000ms",
                                "cancel", "ready:b", "ready:root"}));
}

TEST(StartTest, NestedTreeStartsDepthFirstInListOrderAndRootIsReadyLast) {
  World w(
      Sup("root", kOneForOne,
          {Worker("a"), SubSup(Sup("s", kOneForOne, {Worker("x"), Worker("y")})), Worker("b")}));
  w.Start();
  EXPECT_EQ(w.Events(),
            (Strings{"started:root", "started:a", "ready:a", "started:s", "started:x", "ready:x",
                     "started:y", "ready:y", "ready:s", "started:b", "ready:b", "ready:root"}));
  EXPECT_FALSE(w.exit_code().has_value());
}

// ---- strategies -------------------------------------------------------------

TEST(StrategyTest, OneForOneRestartsOnlyTheCrashedChild) {
  World w(Sup("root", kOneForOne, {Worker("a"), Worker("b"), Worker("c")}));
  w.Start();
  int a = w.Pid("a"), b = w.Pid("b"), c = w.Pid("c");
  w.Clear();
  w.Crash("b");
  EXPECT_EQ(w.Events(), (Strings{"exited:b", "restarting:b", "started:b", "ready:b"}));
  EXPECT_EQ(w.Pid("a"), a);
  EXPECT_EQ(w.Pid("c"), c);
  EXPECT_NE(w.Pid("b"), b);
  EXPECT_EQ(w.RootRestarts(), 1);
}

TEST(StrategyTest, OneForAllStopsOthersInReverseThenStartsAllInOrderCountingOnce) {
  World w(Sup("root", kOneForAll, {Worker("a"), Worker("b"), Worker("c")}, /*intensity=*/1));
  w.Start();
  w.Clear();
  w.Crash("b");
  EXPECT_EQ(w.Events(),
            (Strings{"exited:b", "restarting:a", "restarting:b", "restarting:c", "stopping:c",
                     "exited:c", "stopped:c", "stopping:a", "exited:a", "stopped:a", "started:a",
                     "ready:a", "started:b", "ready:b", "started:c", "ready:c"}));
  EXPECT_EQ(w.RootRestarts(), 1);
  EXPECT_FALSE(w.exit_code().has_value());
  EXPECT_TRUE(w.Running("a") && w.Running("b") && w.Running("c"));
}

TEST(StrategyTest, RestForOneRestartsTheCrashedChildAndThoseAfterIt) {
  World w(Sup("root", kRestForOne, {Worker("a"), Worker("b"), Worker("c"), Worker("d")}));
  w.Start();
  int a = w.Pid("a");
  w.Clear();
  w.Crash("b");
  EXPECT_EQ(w.Events(),
            (Strings{"exited:b", "restarting:b", "restarting:c", "restarting:d", "stopping:d",
                     "exited:d", "stopped:d", "stopping:c", "exited:c", "stopped:c", "started:b",
                     "ready:b", "started:c", "ready:c", "started:d", "ready:d"}));
  EXPECT_EQ(w.Pid("a"), a);
  EXPECT_EQ(w.RootRestarts(), 1);
}

TEST(StrategyTest, RestForOneRestartsTheLastChildAlone) {
  World w(Sup("root", kRestForOne, {Worker("a"), Worker("b")}));
  w.Start();
  int a = w.Pid("a");
  w.Clear();
  w.Crash("b");
  EXPECT_EQ(w.Events(), (Strings{"exited:b", "restarting:b", "started:b", "ready:b"}));
  EXPECT_EQ(w.Pid("a"), a);
}

TEST(StrategyTest, CrashDuringInitIsHandledOnceInitIsDone) {
  World w(Sup("root", kOneForOne, {Worker("a"), Worker("b")}));
  w.SetBoot("b", Boot::kNeverReady);
  w.Start();
  w.Crash("a");  // root is blocked starting b
  EXPECT_EQ(w.spawns("a"), 1);
  w.Clear();
  w.Ready("b");
  EXPECT_EQ(w.Events(), (Strings{"ready:b", "ready:root", "restarting:a", "started:a", "ready:a"}));
}

TEST(StrategyTest, TwoOneForOneCrashesAreTwoRestarts) {
  World w(Sup("root", kOneForOne, {Worker("a"), Worker("b")}, /*intensity=*/1));
  w.Start();
  w.CrashTogether({"a", "b"});
  EXPECT_EQ(w.Count("gave_up:root"), 1);
  EXPECT_EQ(w.exit_code(), 1);
}

TEST(StrategyTest, ExecReadyModeIsReadyWhenSpawned) {
  ChildSpec a = Worker("a");
  a.ready = ReadyMode::kExec;
  World w(Sup("root", kOneForOne, {a}));
  w.SetBoot("a", Boot::kNeverReady);
  w.Start();
  EXPECT_EQ(w.Trace(), (Strings{"started:root", "spawn:a", "started:a", "ready:a", "ready:root"}));
}

// ---- restart types ----------------------------------------------------------

TEST(RestartTypeTest, PermanentRestartsOnExitZeroAndCountsIt) {
  World w(Sup("root", kOneForOne, {Worker("a")}));
  w.Start();
  w.Clear();
  w.Crash("a", ExitInfo::Code(0));
  EXPECT_EQ(w.Events(), (Strings{"exited:a", "restarting:a", "started:a", "ready:a"}));
  EXPECT_EQ(w.RootRestarts(), 1);
}

TEST(RestartTypeTest, TransientRestartsOnlyOnAbnormalExit) {
  ChildSpec t = Worker("t", kTransient);
  t.success_exit_codes = {42};
  World w(Sup("root", kOneForOne, {t, Worker("a")}, /*intensity=*/10));
  w.Start();
  w.Clear();

  w.Crash("t", ExitInfo::Code(0));
  EXPECT_EQ(w.Events(), (Strings{"exited:t"}));
  const SupervisorNode::Child* c = World::FindChild(w.root(), "t");
  ASSERT_NE(c, nullptr);  // spec kept
  EXPECT_EQ(c->state, ChildState::kStopped);
  EXPECT_EQ(w.RootRestarts(), 0);

  // A configured success exit code is normal too.
  World w2(Sup("root", kOneForOne, {t}, 10));
  w2.Start();
  w2.Clear();
  w2.Crash("t", ExitInfo::Code(42));
  EXPECT_EQ(w2.Events(), (Strings{"exited:t"}));
  EXPECT_EQ(w2.RootRestarts(), 0);

  World w3(Sup("root", kOneForOne, {t}, 10));
  w3.Start();
  w3.Clear();
  w3.Crash("t", ExitInfo::Code(1));
  EXPECT_EQ(w3.Events(), (Strings{"exited:t", "restarting:t", "started:t", "ready:t"}));
  w3.Clear();
  w3.Crash("t", ExitInfo::Signal(SIGKILL));  // `killed` is abnormal
  EXPECT_EQ(w3.Events(), (Strings{"exited:t", "restarting:t", "started:t", "ready:t"}));
  w3.Clear();
  w3.Crash("t", ExitInfo::Signal(SIGTERM));
  EXPECT_EQ(w3.Events(), (Strings{"exited:t", "restarting:t", "started:t", "ready:t"}));
  EXPECT_EQ(w3.RootRestarts(), 3);
}

TEST(RestartTypeTest, TemporaryIsNeverRestartedAndItsSpecIsDeleted) {
  World w(Sup("root", kOneForOne, {Worker("a"), Worker("t", kTemporary), Worker("u", kTemporary)}));
  w.Start();
  w.Clear();
  w.Crash("t", ExitInfo::Code(1));
  w.Crash("u", ExitInfo::Code(0));
  EXPECT_EQ(w.Events(), (Strings{"exited:t", "exited:u"}));
  EXPECT_EQ(World::Ids(w.root()), (Strings{"a"}));
  EXPECT_EQ(w.RootRestarts(), 0);
}

// ---- restart intensity ------------------------------------------------------

TEST(IntensityTest, GivesUpOnTheThirdCrashWithinThePeriodAndStopsInReverse) {
  World w(Sup("root", kOneForOne, {Worker("a"), Worker("b"), Worker("c")}, /*intensity=*/2,
              /*period=*/5000ms));
  w.Start();
  w.Crash("a");
  w.Advance(1s);
  w.Crash("b");
  w.Advance(1s);
  w.Clear();
  w.Crash("a");
  EXPECT_EQ(w.Trace(), (Strings{"exited:a", "gave_up:root", "stopping:c", "TERM:c", "arm:5000ms",
                                "exited:c", "cancel", "stopped:c", "stopping:b", "TERM:b",
                                "arm:5000ms", "exited:b", "cancel", "stopped:b", "exit:1"}));
  EXPECT_EQ(w.exit_code(), 1);
  EXPECT_TRUE(w.engine().finished());
}

TEST(IntensityTest, CrashesSpacedMoreThanThePeriodApartNeverGiveUp) {
  World w(Sup("root", kOneForOne, {Worker("a")}, /*intensity=*/1, /*period=*/5000ms));
  w.Start();
  for (int i = 0; i < 5; ++i) {
    w.Crash("a");
    w.Advance(5s + 1ms);
  }
  EXPECT_EQ(w.Count("gave_up:root"), 0);
  EXPECT_EQ(w.spawns("a"), 6);
  EXPECT_FALSE(w.exit_code().has_value());
}

TEST(IntensityTest, AttemptsExactlyOnePeriodApartShareTheWindow) {
  World w(Sup("root", kOneForOne, {Worker("a")}, /*intensity=*/1, /*period=*/5000ms));
  w.Start();
  w.Crash("a");
  w.Advance(5s);
  w.Crash("a");
  EXPECT_EQ(w.Count("gave_up:root"), 1);
  EXPECT_EQ(w.exit_code(), 1);
}

TEST(IntensityTest, IntensityZeroGivesUpOnFirstRestartWorthyExitOnly) {
  World w(Sup("root", kOneForOne, {Worker("t", kTransient), Worker("a")}, /*intensity=*/0));
  w.Start();
  w.Crash("t", ExitInfo::Code(0));  // normal: not restart-worthy, changes nothing
  EXPECT_EQ(w.Count("gave_up:root"), 0);
  EXPECT_TRUE(w.Running("a"));
  w.Clear();
  w.Crash("a");
  EXPECT_EQ(w.Events(), (Strings{"exited:a", "gave_up:root"}));
  EXPECT_EQ(w.exit_code(), 1);
}

// ---- escalation -------------------------------------------------------------

TEST(EscalationTest, PermanentSubSupervisorThatGivesUpIsRestartedAndCountedInParent) {
  World w(Sup("root", kOneForOne,
              {Worker("a"), SubSup(Sup("s", kOneForOne, {Worker("x"), Worker("y")}, 0))},
              /*intensity=*/1));
  w.Start();
  const SupervisorNode* old_s = w.SubNode("s");
  int a = w.Pid("a");
  w.Clear();
  w.Crash("x");
  EXPECT_EQ(w.Events(), (Strings{"exited:x", "gave_up:s", "stopping:y", "exited:y", "stopped:y",
                                 "exited:s", "restarting:s", "started:s", "started:x", "ready:x",
                                 "started:y", "ready:y", "ready:s"}));
  EXPECT_EQ(w.RootRestarts(), 1);
  const SupervisorNode* s = w.SubNode("s");
  ASSERT_NE(s, nullptr);
  EXPECT_NE(s, old_s);
  EXPECT_EQ(World::Ids(*s), (Strings{"x", "y"}));  // its static children
  EXPECT_EQ(w.Pid("a"), a);
  EXPECT_FALSE(w.exit_code().has_value());
}

TEST(EscalationTest, TransientSubSupervisorThatGivesUpIsNotRestarted) {
  World w(Sup("root", kOneForOne,
              {Worker("a"), SubSup(Sup("s", kOneForOne, {Worker("x")}, 0), kTransient)}, 1));
  w.Start();
  w.Clear();
  w.Crash("x");
  EXPECT_EQ(w.Events(), (Strings{"exited:x", "gave_up:s", "exited:s"}));
  const SupervisorNode::Child* s = World::FindChild(w.root(), "s");
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->state, ChildState::kStopped);
  EXPECT_EQ(s->sub, 0u);
  EXPECT_EQ(w.RootRestarts(), 0);
  EXPECT_TRUE(w.Running("a"));
  EXPECT_FALSE(w.exit_code().has_value());
}

TEST(EscalationTest, GivingUpCascadesToTheRootWhichExitsWithCodeOne) {
  World w(Sup("root", kOneForOne, {Worker("a"), SubSup(Sup("s", kOneForOne, {Worker("x")}, 0))},
              /*intensity=*/0));
  w.Start();
  w.Clear();
  w.Crash("x");
  EXPECT_EQ(w.Events(), (Strings{"exited:x", "gave_up:s", "exited:s", "gave_up:root", "stopping:a",
                                 "exited:a", "stopped:a"}));
  EXPECT_EQ(w.exit_code(), 1);
}

// ---- failed restarts --------------------------------------------------------

TEST(FailedRestartTest, OneForOneRetriesAtOnceCountingEveryAttemptUntilGivingUp) {
  World w(Sup("root", kOneForOne, {Worker("a"), Worker("b")}, /*intensity=*/3));
  w.Start();
  w.SetBoot("a", Boot::kExitEarly);
  w.Clear();
  w.Crash("a");
  // Attempt 1 and retries 2 and 3 fail; attempt 4 would exceed intensity 3.
  EXPECT_EQ(w.Events(),
            (Strings{"exited:a", "restarting:a", "started:a", "exited:a", "restarting:a",
                     "started:a", "exited:a", "restarting:a", "started:a", "exited:a",
                     "gave_up:root", "stopping:b", "exited:b", "stopped:b"}));
  EXPECT_EQ(w.spawns("a"), 4);
  EXPECT_EQ(w.exit_code(), 1);
}

TEST(FailedRestartTest, RetryRunsAfterMessagesAlreadyQueuedAndChildShowsRestarting) {
  World w(Sup("root", kOneForOne, {Worker("a"), Worker("b")}, /*intensity=*/5));
  w.Start();
  w.QueueBoot("a", Boot::kExitEarly);
  w.QueueBoot("b", Boot::kNeverReady);
  w.CrashTogether({"a", "b"});  // b's exit is queued while a restarts
  // a's restart failed; b's queued exit went first, and b's restart is blocked.
  EXPECT_EQ(World::FindChild(w.root(), "a")->state, ChildState::kRestarting);
  EXPECT_EQ(w.spawns("a"), 2);
  w.Clear();
  w.Ready("b");
  EXPECT_EQ(w.Events(), (Strings{"ready:b", "restarting:a", "started:a", "ready:a"}));
  EXPECT_EQ(World::FindChild(w.root(), "a")->state, ChildState::kRunning);
  EXPECT_EQ(w.RootRestarts(), 3);
}

TEST(FailedRestartTest, ExecFailureIsAFailedStart) {
  World w(Sup("root", kOneForOne, {Worker("a")}, /*intensity=*/2));
  w.Start();
  w.SetBoot("a", Boot::kExecFails);
  w.Clear();
  w.Crash("a");
  EXPECT_EQ(w.Events(), (Strings{"exited:a", "restarting:a", "restarting:a", "gave_up:root"}));
  EXPECT_EQ(w.spawns("a"), 3);
  EXPECT_EQ(w.exit_code(), 1);
}

TEST(FailedRestartTest, ChildNeverReadyIsKilledAtItsStartTimeoutAndCountsAsFailedStart) {
  World w(Sup("root", kOneForOne, {Worker("a")}, /*intensity=*/1));
  w.Start();
  w.SetBoot("a", Boot::kNeverReady);
  w.Crash("a");
  w.Clear();
  w.Fire(10000ms);
  EXPECT_EQ(w.Trace(), (Strings{"fire:10000ms", "KILL:a", "exited:a", "gave_up:root", "exit:1"}));
}

TEST(FailedRestartTest, OneForAllRetryStopsEverythingAgainAndStartsFromTheBeginning) {
  World w(Sup("root", kOneForAll, {Worker("a"), Worker("b"), Worker("c")}, /*intensity=*/5));
  w.Start();
  w.QueueBoot("b", Boot::kExitEarly);  // the first restart of b fails, the retry works
  w.Clear();
  w.Crash("b");
  EXPECT_EQ(w.Events(), (Strings{"exited:b", "restarting:a", "restarting:b", "restarting:c",
                                 "stopping:c", "exited:c", "stopped:c", "stopping:a", "exited:a",
                                 "stopped:a", "started:a", "ready:a", "started:b", "exited:b",
                                 // c was not started; the retry stops the group again.
                                 "restarting:a", "restarting:b", "restarting:c", "stopping:a",
                                 "exited:a", "stopped:a", "started:a", "ready:a", "started:b",
                                 "ready:b", "started:c", "ready:c"}));
  EXPECT_EQ(w.RootRestarts(), 2);
}

TEST(FailedRestartTest, RestForOneRetryRestartsFromTheFailingChildOnward) {
  World w(Sup("root", kRestForOne, {Worker("a"), Worker("b"), Worker("c"), Worker("d")}, 5));
  w.Start();
  w.QueueBoot("c", Boot::kExitEarly);  // the first restart of c fails, the retry works
  int a = w.Pid("a");
  w.Clear();
  w.Crash("b");
  EXPECT_EQ(w.Events(), (Strings{"exited:b", "restarting:b", "restarting:c", "restarting:d",
                                 "stopping:d", "exited:d", "stopped:d", "stopping:c", "exited:c",
                                 "stopped:c", "started:b", "ready:b", "started:c", "exited:c",
                                 // The retry leaves a and the restarted b alone.
                                 "restarting:c", "restarting:d", "started:c", "ready:c",
                                 "started:d", "ready:d"}));
  EXPECT_EQ(w.Pid("a"), a);
  EXPECT_EQ(w.spawns("b"), 2);
  EXPECT_EQ(w.RootRestarts(), 2);
}

TEST(FailedRestartTest, SubSupervisorFailingToStartCountsInParentAndCascadesToRoot) {
  World w(Sup("root", kOneForOne, {Worker("a"), SubSup(Sup("s", kOneForOne, {Worker("x")}, 0))},
              /*intensity=*/2));
  w.Start();
  w.SetBoot("x", Boot::kExitEarly);
  w.Clear();
  w.Crash("x");
  EXPECT_EQ(w.Events(),
            (Strings{"exited:x", "gave_up:s", "exited:s", "restarting:s", "started:s", "started:x",
                     "exited:x", "exited:s", "restarting:s", "started:s", "started:x", "exited:x",
                     "exited:s", "gave_up:root", "stopping:a", "exited:a", "stopped:a"}));
  EXPECT_EQ(w.spawns("x"), 3);
  EXPECT_EQ(w.exit_code(), 1);
}

// Reasons of `id`'s `kind` events, in order.
Strings Reasons(const World& w, const std::string& id, EventKind kind) {
  Strings out;
  for (const TreeEvent& e : w.Emitted()) {
    if (e.id == id && e.kind == kind) out.push_back(e.reason);
  }
  return out;
}

TEST(FailedRestartTest, SubSupervisorWhoseStartFailedExitsSayingWhichChildFailedBeforeTheRetry) {
  // Issue 12, item 9: root one_for_all over sup1 (w1, w2) and sup2 (one_for_one, intensity 2:
  // w3, w4); w3 fails its 2nd and 3rd starts; w4 is killed, then w3.
  World w(Sup("root", kOneForAll,
              {SubSup(Sup("sup1", kOneForOne, {Worker("w1"), Worker("w2")})),
               SubSup(Sup("sup2", kOneForOne, {Worker("w3"), Worker("w4")}, /*intensity=*/2))},
              /*intensity=*/3));
  w.Start();
  w.QueueBoot("w3", Boot::kExitEarly);
  w.QueueBoot("w3", Boot::kExitEarly);
  w.Crash("w4");
  w.Clear();
  w.Crash("w3");
  EXPECT_EQ(
      w.Events(),
      (Strings{// sup2's restart of w3 fails; its retry would exceed intensity 2.
               "exited:w3", "restarting:w3", "started:w3", "exited:w3", "gave_up:sup2",
               "stopping:w4", "exited:w4", "stopped:w4", "exited:sup2",
               // root restarts its group; sup2's start fails on w3's third start...
               "restarting:sup1", "restarting:sup2", "stopping:sup1", "stopping:w2", "exited:w2",
               "stopped:w2", "stopping:w1", "exited:w1", "stopped:w1", "stopped:sup1",
               "started:sup1", "started:w1", "ready:w1", "started:w2", "ready:w2", "ready:sup1",
               "started:sup2", "started:w3", "exited:w3",
               // ...and that incarnation of sup2 exits, saying why, before root retries.
               "exited:sup2", "restarting:sup1", "restarting:sup2", "stopping:sup1", "stopping:w2",
               "exited:w2", "stopped:w2", "stopping:w1", "exited:w1", "stopped:w1", "stopped:sup1",
               "started:sup1", "started:w1", "ready:w1", "started:w2", "ready:w2", "ready:sup1",
               "started:sup2", "started:w3", "ready:w3", "started:w4", "ready:w4", "ready:sup2"}));
  EXPECT_EQ(
      Reasons(w, "sup2", EventKind::kExited),
      (Strings{"gave up", "failed to start child 'w3': exited before ready (exit status 3)"}));
  EXPECT_EQ(Reasons(w, "sup2", EventKind::kRestarting),
            (Strings{"supervisor gave up", "retrying failed start"}));
  EXPECT_EQ(w.spawns("w3"), 4);
  EXPECT_EQ(w.RootRestarts(), 2);
  EXPECT_FALSE(w.exit_code().has_value());
}

// ---- initial start failure --------------------------------------------------

TEST(InitialStartTest, FailureStopsStartedChildrenInReverseAndNeverStartsLaterOnes) {
  World w(Sup("root", kOneForOne, {Worker("a"), Worker("b"), Worker("c"), Worker("d")}, 5));
  w.SetBoot("c", Boot::kExitEarly);
  w.Start();
  EXPECT_EQ(w.Events(), (Strings{"started:root", "started:a", "ready:a", "started:b", "ready:b",
                                 "started:c", "exited:c", "stopping:b", "exited:b", "stopped:b",
                                 "stopping:a", "exited:a", "stopped:a"}));
  EXPECT_EQ(w.spawns("c"), 1);  // no retry
  EXPECT_EQ(w.spawns("d"), 0);
  EXPECT_EQ(w.exit_code(), 1);
  EXPECT_NE(w.exit_reason().find("'c'"), std::string::npos) << w.exit_reason();
}

TEST(InitialStartTest, FailureInsideASubSupervisorFailsTheRoot) {
  World w(Sup("root", kOneForOne,
              {Worker("a"), SubSup(Sup("s", kOneForOne, {Worker("x"), Worker("y")})), Worker("b")},
              5));
  w.SetBoot("y", Boot::kExecFails);
  w.Start();
  EXPECT_EQ(w.Events(), (Strings{"started:root", "started:a", "ready:a", "started:s", "started:x",
                                 "ready:x", "stopping:x", "exited:x", "stopped:x", "exited:s",
                                 "stopping:a", "exited:a", "stopped:a"}));
  EXPECT_EQ(Reasons(w, "s", EventKind::kExited),
            (Strings{"failed to start child 'y': exec failed"}));
  EXPECT_EQ(w.spawns("b"), 0);
  EXPECT_EQ(w.exit_code(), 1);
  EXPECT_NE(w.exit_reason().find("'y'"), std::string::npos) << w.exit_reason();
}

// ---- shutdown ---------------------------------------------------------------

TEST(ShutdownTest, StopsInReverseOrderOneAtATimeAndExitsZero) {
  World w(Sup("root", kOneForOne, {Worker("a"), Worker("b"), Worker("c")}));
  w.Start();
  w.Clear();
  w.Shutdown();
  EXPECT_EQ(w.Trace(), (Strings{"stopping:c", "TERM:c", "arm:5000ms", "exited:c", "cancel",
                                "stopped:c", "stopping:b", "TERM:b", "arm:5000ms", "exited:b",
                                "cancel", "stopped:b", "stopping:a", "TERM:a", "arm:5000ms",
                                "exited:a", "cancel", "stopped:a", "exit:0"}));
  EXPECT_EQ(w.exit_code(), 0);
}

TEST(ShutdownTest, ChildIgnoringTermIsKilledWhenItsTimerFiresAndDelaysTheOthers) {
  World w(Sup("root", kOneForOne,
              {Worker("a"), WithShutdown(Worker("b"), ShutdownSpec::Kind::kTimeout, 300ms)}));
  w.IgnoreTerm("b");
  w.Start();
  w.Clear();
  w.Shutdown();
  EXPECT_EQ(w.Trace(), (Strings{"stopping:b", "TERM:b", "arm:300ms"}));
  w.Clear();
  w.Fire(300ms);
  EXPECT_EQ(w.Trace(),
            (Strings{"fire:300ms", "KILL:b", "exited:b", "stopped:b", "stopping:a", "TERM:a",
                     "arm:5000ms", "exited:a", "cancel", "stopped:a", "exit:0"}));
}

TEST(ShutdownTest, BrutalKillKillsAtOnceAndInfinityArmsNoTimer) {
  World w(Sup("root", kOneForOne,
              {WithShutdown(Worker("a"), ShutdownSpec::Kind::kInfinity),
               WithShutdown(Worker("b"), ShutdownSpec::Kind::kBrutalKill),
               WithShutdown(Worker("c"), ShutdownSpec::Kind::kTimeout, 0ms)}));
  w.Start();
  w.Clear();
  w.Shutdown();
  EXPECT_EQ(w.Trace(), (Strings{"stopping:c", "KILL:c", "exited:c", "stopped:c", "stopping:b",
                                "KILL:b", "exited:b", "stopped:b", "stopping:a", "TERM:a",
                                "exited:a", "stopped:a", "exit:0"}));
}

TEST(ShutdownTest, SecondRequestKillsEverythingStillRunning) {
  World w(
      Sup("root", kOneForOne,
          {Worker("a"), Worker("b"), WithShutdown(Worker("c"), ShutdownSpec::Kind::kInfinity)}));
  w.IgnoreTerm("a");
  w.IgnoreTerm("c");
  w.Start();
  w.Shutdown();
  EXPECT_FALSE(w.exit_code().has_value());  // c ignores SIGTERM and has no timeout
  w.Clear();
  w.Shutdown();
  // Every process is killed at once; the stop steps then drain the exits in order.
  EXPECT_EQ(w.Trace(),
            (Strings{"KILL:a", "KILL:b", "KILL:c", "exited:a", "exited:b", "exited:c", "stopped:c",
                     "stopping:b", "stopped:b", "stopping:a", "stopped:a", "exit:0"}));
  EXPECT_EQ(w.armed_timers(), 0u);
}

TEST(ShutdownTest, SecondRequestDuringASubSupervisorGroupRestart) {
  World w(Sup("root", kOneForOne,
              {SubSup(Sup("s", kOneForAll, {Worker("g"), Worker("h")}, /*intensity=*/5))}));
  w.IgnoreTerm("g");
  w.Start();
  w.SetBoot("g", Boot::kNeverReady);
  w.Crash("h");  // s stops g, which ignores SIGTERM
  w.Shutdown();  // root waits for s (shutdown infinity)
  w.Clear();
  w.Shutdown();  // kill everything now
  EXPECT_EQ(w.exit_code(), 0);
  EXPECT_EQ(w.spawns("g"), 1) << "no new process once everything is being killed";
  EXPECT_EQ(w.armed_timers(), 0u);
}

TEST(ShutdownTest, ShutdownDuringARetryLoopCompletes) {
  World w(Sup("root", kOneForOne, {Worker("a"), Worker("b")}, /*intensity=*/100));
  w.Start();
  w.QueueBoot("b", Boot::kExitEarly);
  w.QueueBoot("b", Boot::kExitEarly);
  w.SetBoot("b", Boot::kNeverReady);
  w.Crash("b");  // attempts 1 and 2 fail, attempt 3 hangs
  EXPECT_EQ(w.spawns("b"), 4);
  w.Clear();
  w.Shutdown();  // queued behind the hanging start
  EXPECT_EQ(w.Trace(), Strings{});
  w.Fire(10000ms);  // the start times out; the retry queues behind the stop
  EXPECT_EQ(w.Trace(), (Strings{"fire:10000ms", "KILL:b", "exited:b", "stopping:a", "TERM:a",
                                "arm:5000ms", "exited:a", "cancel", "stopped:a", "exit:0"}));
  EXPECT_EQ(w.spawns("b"), 4);
}

// ---- group restarts ---------------------------------------------------------

TEST(GroupRestartTest, TwoOneForAllChildrenCrashingAtOnceMakeOneRestart) {
  World w(Sup("root", kOneForAll, {Worker("a"), Worker("b"), Worker("c")}, /*intensity=*/1));
  w.Start();
  w.Clear();
  w.CrashTogether({"b", "a"});
  EXPECT_EQ(w.Count("restarting:b"), 1);
  EXPECT_EQ(w.Count("restarting:a"), 1);
  EXPECT_EQ(w.spawns("a"), 2);
  EXPECT_EQ(w.spawns("b"), 2);
  EXPECT_EQ(w.spawns("c"), 2);
  EXPECT_EQ(w.RootRestarts(), 1);
  EXPECT_FALSE(w.exit_code().has_value());
  EXPECT_TRUE(w.Running("a") && w.Running("b") && w.Running("c"));
}

TEST(GroupRestartTest, SiblingIgnoringTermDelaysTheGroupRestartWhichStillCountsOnce) {
  World w(Sup("root", kOneForAll, {Worker("a"), Worker("b"), Worker("c")}, /*intensity=*/1));
  w.IgnoreTerm("c");
  w.Start();
  w.Crash("a");
  EXPECT_EQ(w.spawns("a"), 1);  // waiting for c
  w.Fire(5000ms);
  EXPECT_EQ(w.spawns("a"), 2);
  EXPECT_EQ(w.spawns("c"), 2);
  EXPECT_EQ(w.RootRestarts(), 1);
  EXPECT_FALSE(w.exit_code().has_value());
}

TEST(GroupRestartTest, TemporaryBystanderIsDeletedAndNeverReappears) {
  World w(Sup("root", kOneForAll, {Worker("a"), Worker("t", kTemporary), Worker("b")}, 5));
  w.Start();
  w.Clear();
  w.Crash("b");
  EXPECT_EQ(w.Events(), (Strings{"exited:b", "restarting:a", "restarting:b", "stopping:t",
                                 "exited:t", "stopped:t", "stopping:a", "exited:a", "stopped:a",
                                 "started:a", "ready:a", "started:b", "ready:b"}));
  EXPECT_EQ(World::Ids(w.root()), (Strings{"a", "b"}));
  w.Crash("a");
  EXPECT_EQ(w.spawns("t"), 1);
  EXPECT_EQ(World::Ids(w.root()), (Strings{"a", "b"}));
}

TEST(GroupRestartTest, OneForAllAlsoStartsTransientChildrenThatExitedNormally) {
  World w(Sup("root", kOneForAll, {Worker("a"), Worker("t", kTransient), Worker("b")}, 5));
  w.Start();
  w.Crash("t", ExitInfo::Code(0));  // no restart, siblings untouched
  EXPECT_EQ(w.spawns("a"), 1);
  EXPECT_FALSE(w.Running("t"));
  w.Crash("b");
  EXPECT_TRUE(w.Running("t"));
  EXPECT_EQ(w.spawns("t"), 2);
  EXPECT_EQ(w.RootRestarts(), 1);
}

TEST(GroupRestartTest, SubSupervisorGivingUpDuringAGroupStopIsDrained) {
  World w(Sup("root", kOneForAll,
              {SubSup(Sup("s", kOneForOne, {Worker("x")}, 0)), Worker("a"), Worker("b")},
              /*intensity=*/1));
  w.IgnoreTerm("a");
  w.Start();
  w.Crash("b");  // root stops a, which ignores SIGTERM
  w.Crash("x");  // s gives up meanwhile
  w.Fire(5000ms);
  EXPECT_EQ(w.RootRestarts(), 1);
  EXPECT_FALSE(w.exit_code().has_value());
  EXPECT_TRUE(w.Running("x") && w.Running("a") && w.Running("b"));
  EXPECT_EQ(w.spawns("x"), 2);
}

TEST(GroupRestartTest, CrashOfAnUntouchedChildDuringRestForOneIsASecondRestart) {
  World w(Sup("root", kRestForOne, {Worker("a"), Worker("b"), Worker("c")}, /*intensity=*/5));
  w.IgnoreTerm("c");
  w.Start();
  w.Crash("b");  // stopping c, which ignores SIGTERM
  w.Crash("a");  // queued: a is before b, not part of this restart
  w.Fire(5000ms);
  // b's restart is done and a's exit is being handled: the new c is stopping.
  EXPECT_EQ(w.RootRestarts(), 2);
  EXPECT_EQ(w.spawns("a"), 1);
  w.Fire(5000ms);
  EXPECT_EQ(w.RootRestarts(), 2);
  EXPECT_EQ(w.spawns("a"), 2);
  EXPECT_EQ(w.spawns("b"), 3);
  EXPECT_EQ(w.spawns("c"), 3);
}

// ---- stopping a sub-supervisor ----------------------------------------------

TEST(SubSupervisorShutdownTest, TimeoutKillsTheSubtreeAndTheStopCompletes) {
  World w(Sup("root", kOneForOne,
              {Worker("a"), SubSup(Sup("s", kOneForOne, {Worker("g")}), RestartType::kPermanent,
                                   {ShutdownSpec::Kind::kTimeout, 1000ms})}));
  w.IgnoreTerm("g");
  w.Start();
  w.Clear();
  w.Shutdown();
  EXPECT_EQ(w.Trace(), (Strings{"stopping:s", "arm:1000ms", "stopping:g", "TERM:g", "arm:5000ms"}));
  w.Clear();
  w.Fire(1000ms);
  EXPECT_EQ(w.Trace(), (Strings{"fire:1000ms", "KILL:g", "exited:g", "cancel", "stopped:g",
                                "stopped:s", "stopping:a", "TERM:a", "arm:5000ms", "exited:a",
                                "cancel", "stopped:a", "exit:0"}));
  EXPECT_EQ(w.armed_timers(), 0u);
}

TEST(SubSupervisorShutdownTest, BrutalKillKillsTheSubtreeAtOnce) {
  World w(Sup("root", kOneForOne,
              {SubSup(Sup("s", kOneForOne, {Worker("g"), Worker("h")}), RestartType::kPermanent,
                      {ShutdownSpec::Kind::kBrutalKill, 0ms})}));
  w.IgnoreTerm("g");
  w.IgnoreTerm("h");
  w.Start();
  w.Clear();
  w.Shutdown();
  EXPECT_EQ(w.Trace(),
            (Strings{"stopping:s", "KILL:g", "KILL:h", "stopping:h", "exited:g", "exited:h",
                     "stopped:h", "stopping:g", "stopped:g", "stopped:s", "exit:0"}));
  EXPECT_EQ(w.exit_code(), 0);
  EXPECT_EQ(w.armed_timers(), 0u);
}

TEST(SubSupervisorShutdownTest, ZeroTimeoutKillsTheSubtreeAtOnce) {
  World w(Sup("root", kOneForOne,
              {SubSup(Sup("s", kOneForOne, {Worker("g")}), RestartType::kPermanent,
                      {ShutdownSpec::Kind::kTimeout, 0ms})}));
  w.IgnoreTerm("g");
  w.Start();
  w.Shutdown();
  EXPECT_EQ(w.Count("KILL:g"), 1);
  EXPECT_EQ(w.Count("TERM:g"), 0);
  EXPECT_EQ(w.exit_code(), 0);
}

TEST(SubSupervisorShutdownTest, SubtreeStopsInReverseBeforeTheParentMovesOn) {
  World w(
      Sup("root", kOneForOne,
          {Worker("a"), SubSup(Sup("s", kOneForOne, {Worker("x"), Worker("y")})), Worker("b")}));
  w.Start();
  w.Clear();
  w.Shutdown();
  EXPECT_EQ(w.Events(), (Strings{"stopping:b", "exited:b", "stopped:b", "stopping:s", "stopping:y",
                                 "exited:y", "stopped:y", "stopping:x", "exited:x", "stopped:x",
                                 "stopped:s", "stopping:a", "exited:a", "stopped:a"}));
  EXPECT_EQ(w.exit_code(), 0);
}

TEST(SubSupervisorShutdownTest, StopReachesASubSupervisorInARetryLoop) {
  World w(Sup("root", kOneForOne,
              {Worker("a"), SubSup(Sup("s", kOneForOne, {Worker("x")}, /*intensity=*/50))}));
  w.Start();
  w.QueueBoot("x", Boot::kExitEarly);
  w.SetBoot("x", Boot::kNeverReady);
  w.Crash("x");  // s: attempt 1 fails, attempt 2 hangs
  w.Clear();
  w.Shutdown();
  EXPECT_EQ(w.Events(), (Strings{"stopping:s"}));
  w.Clear();
  w.Fire(10000ms);
  EXPECT_EQ(w.Events(), (Strings{"exited:x", "stopped:s", "stopping:a", "exited:a", "stopped:a"}));
  EXPECT_EQ(w.exit_code(), 0);
}

// ---- simple_one_for_one -----------------------------------------------------

SupervisorSpec Pool(int instances, Millis shutdown = 5000ms) {
  ChildSpec tmpl = WithShutdown(Worker("w"), ShutdownSpec::Kind::kTimeout, shutdown);
  tmpl.command = {"/usr/bin/w", "--shard={{replica}}"};
  SupervisorSpec s = Sup("root", Strategy::kSimpleOneForOne, {tmpl}, 5);
  s.instances = instances;
  return s;
}

TEST(SimpleOneForOneTest, InstancesStartInOrderWithTheReplicaSubstituted) {
  World w(Pool(3));
  w.Start();
  EXPECT_EQ(w.Events(), (Strings{"started:root", "started:w.0", "ready:w.0", "started:w.1",
                                 "ready:w.1", "started:w.2", "ready:w.2", "ready:root"}));
  EXPECT_EQ(w.LastSpawnSpec("w.1").command, (Strings{"/usr/bin/w", "--shard=1"}));
  EXPECT_EQ(World::Ids(w.root()), (Strings{"w.0", "w.1", "w.2"}));
}

TEST(SimpleOneForOneTest, ACrashedInstanceRestartsAlone) {
  World w(Pool(3));
  w.Start();
  int p0 = w.Pid("w.0"), p2 = w.Pid("w.2");
  w.Clear();
  w.Crash("w.1");
  EXPECT_EQ(w.Events(), (Strings{"exited:w.1", "restarting:w.1", "started:w.1", "ready:w.1"}));
  EXPECT_EQ(w.Pid("w.0"), p0);
  EXPECT_EQ(w.Pid("w.2"), p2);
  EXPECT_EQ(w.LastSpawnSpec("w.1").command, (Strings{"/usr/bin/w", "--shard=1"}));
}

TEST(SimpleOneForOneTest, ShutdownSignalsAllInstancesAtOnceWithOneSharedTimer) {
  World w(Pool(3, 2000ms));
  w.IgnoreTerm("w.0");
  w.IgnoreTerm("w.2");
  w.Start();
  w.Clear();
  w.Shutdown();
  EXPECT_EQ(w.Trace(),
            (Strings{"stopping:w.0", "TERM:w.0", "stopping:w.1", "TERM:w.1", "stopping:w.2",
                     "TERM:w.2", "arm:2000ms", "exited:w.1", "stopped:w.1"}));
  w.Clear();
  w.Fire(2000ms);
  EXPECT_EQ(w.Trace(), (Strings{"fire:2000ms", "KILL:w.0", "KILL:w.2", "exited:w.0", "stopped:w.0",
                                "exited:w.2", "stopped:w.2", "exit:0"}));
  EXPECT_EQ(w.armed_timers(), 0u);
}

TEST(SimpleOneForOneTest, GiveUpStopsAllInstancesInParallel) {
  World w(Pool(3));
  w.Start();
  for (int i = 0; i < 5; ++i) w.Crash("w.0");
  w.Clear();
  w.Crash("w.1");
  EXPECT_EQ(w.Trace(), (Strings{"exited:w.1", "gave_up:root", "stopping:w.0", "TERM:w.0",
                                "stopping:w.2", "TERM:w.2", "arm:5000ms", "exited:w.0",
                                "stopped:w.0", "exited:w.2", "stopped:w.2", "cancel", "exit:1"}));
}

TEST(SimpleOneForOneTest, NoInstancesStartsAndStops) {
  World w(Pool(0));
  w.Start();
  EXPECT_EQ(w.Events(), (Strings{"started:root", "ready:root"}));
  w.Shutdown();
  EXPECT_EQ(w.exit_code(), 0);
}

}  // namespace
}  // namespace sb::supervisor

namespace sb::supervisor {
namespace {

// ---- operator requests, scaling, backoff, reload -----------------------------

TEST(OperatorTest, StopIsNotACrashAndAPermanentChildStaysStopped) {
  World w(Sup("root", kOneForOne, {Worker("a"), Worker("b")}, /*intensity=*/1));
  w.Start();
  w.Clear();
  RequestId r = w.Op(TreeEngine::Op::kStop, "b");
  ASSERT_TRUE(w.ReplyTo(r).has_value());
  EXPECT_TRUE(w.ReplyTo(r)->status.ok());
  EXPECT_EQ(w.Events(), (Strings{"stopping:b", "exited:b", "stopped:b"}));
  EXPECT_FALSE(w.Running("b"));
  EXPECT_EQ(w.RootRestarts(), 0);
  // Stopping a stopped child is fine and does nothing.
  w.Clear();
  EXPECT_TRUE(w.ReplyTo(w.Op(TreeEngine::Op::kStop, "b"))->status.ok());
  EXPECT_TRUE(w.Events().empty());
  // The intensity budget is untouched: one crash of a is still tolerated.
  w.Crash("a");
  EXPECT_TRUE(w.Running("a"));
  EXPECT_FALSE(w.exit_code().has_value());
}

TEST(OperatorTest, StartAndRestartAreNotCounted) {
  World w(Sup("root", kOneForOne, {Worker("a"), Worker("b")}, /*intensity=*/1));
  w.Start();
  w.Op(TreeEngine::Op::kStop, "b");
  w.Clear();
  RequestId r = w.Op(TreeEngine::Op::kStart, "b");
  EXPECT_EQ(w.Trace(),
            (Strings{"spawn:b", "started:b", "arm:10000ms", "cancel", "ready:b", "reply:ok"}));
  EXPECT_TRUE(w.ReplyTo(r)->status.ok());
  EXPECT_EQ(w.ReplyTo(w.Op(TreeEngine::Op::kStart, "b"))->status.code(), Status::Code::kRefused);
  int a = w.Pid("a");
  w.Clear();
  r = w.Op(TreeEngine::Op::kRestart, "a");
  EXPECT_EQ(w.Events(), (Strings{"stopping:a", "exited:a", "stopped:a", "started:a", "ready:a"}));
  EXPECT_TRUE(w.ReplyTo(r)->status.ok());
  EXPECT_NE(w.Pid("a"), a);
  EXPECT_EQ(w.RootRestarts(), 0);
}

TEST(OperatorTest, FailedOperatorStartRepliesAnErrorAndLeavesTheChildStopped) {
  World w(Sup("root", kOneForOne, {Worker("a")}, /*intensity=*/1));
  w.Start();
  w.Op(TreeEngine::Op::kStop, "a");
  w.SetBoot("a", Boot::kExitEarly);
  RequestId r = w.Op(TreeEngine::Op::kStart, "a");
  ASSERT_TRUE(w.ReplyTo(r).has_value());
  EXPECT_FALSE(w.ReplyTo(r)->status.ok());
  EXPECT_NE(w.ReplyTo(r)->status.message().find("failed to start"), std::string::npos);
  EXPECT_EQ(w.spawns("a"), 2);  // no retry
  EXPECT_FALSE(w.exit_code().has_value());
}

TEST(OperatorTest, UnknownIdAndRootAreRefused) {
  World w(Sup("root", kOneForOne, {Worker("a")}));
  w.Start();
  EXPECT_EQ(w.ReplyTo(w.Op(TreeEngine::Op::kStop, "zz"))->status.code(), Status::Code::kNotFound);
  EXPECT_EQ(w.ReplyTo(w.Op(TreeEngine::Op::kStop, "root"))->status.code(), Status::Code::kRefused);
}

TEST(OperatorTest, OneForAllRestartAlsoStartsAnOperatorStoppedChild) {
  World w(Sup("root", kOneForAll, {Worker("a"), Worker("b"), Worker("c")}, /*intensity=*/1));
  w.Start();
  w.Op(TreeEngine::Op::kStop, "b");
  w.Crash("a");
  EXPECT_TRUE(w.Running("a"));
  EXPECT_TRUE(w.Running("b"));
  EXPECT_TRUE(w.Running("c"));
}

TEST(OperatorTest, StopAndStartAWholeSubSupervisor) {
  World w(Sup("root", kOneForOne, {Worker("a"), SubSup(Sup("s", kOneForOne, {Worker("x")}))}));
  w.Start();
  w.Clear();
  EXPECT_TRUE(w.ReplyTo(w.Op(TreeEngine::Op::kStop, "s"))->status.ok());
  EXPECT_EQ(w.Events(),
            (Strings{"stopping:s", "stopping:x", "exited:x", "stopped:x", "stopped:s"}));
  w.Clear();
  EXPECT_TRUE(w.ReplyTo(w.Op(TreeEngine::Op::kStart, "s"))->status.ok());
  EXPECT_EQ(w.Events(), (Strings{"started:s", "started:x", "ready:x", "ready:s"}));
}

SupervisorSpec WithReplicaSet(const std::string& set, int n, std::vector<ChildSpec> after) {
  ChildSpec tmpl = Worker(set);
  tmpl.command = {"/usr/bin/w", "{{replica}}"};
  SupervisorSpec s = Sup("root", kOneForOne, {});
  for (int i = 0; i < n; ++i) s.children.push_back(InstantiateReplica(tmpl, i));
  for (auto& c : after) s.children.push_back(std::move(c));
  s.replica_sets.push_back(tmpl);
  return s;
}

TEST(ScaleTest, ReplicaSetGrowsInOrderAfterItsMembersAndShrinksFromTheHighestIndex) {
  World w(WithReplicaSet("s", 2, {Worker("z")}));
  w.Start();
  int z = w.Pid("z");
  w.Clear();
  RequestId r = w.Scale("s", 4);
  EXPECT_EQ(w.Events(), (Strings{"started:s.2", "ready:s.2", "started:s.3", "ready:s.3"}));
  EXPECT_EQ(w.ReplyTo(r)->added, (Strings{"s.2", "s.3"}));
  EXPECT_EQ(World::Ids(w.root()), (Strings{"s.0", "s.1", "s.2", "s.3", "z"}));
  EXPECT_EQ(w.spec("s.3").command, (Strings{"/usr/bin/w", "3"}));
  w.Clear();
  r = w.Scale("s", 1);
  EXPECT_EQ(w.Events(),
            (Strings{"stopping:s.3", "exited:s.3", "stopped:s.3", "stopping:s.2", "exited:s.2",
                     "stopped:s.2", "stopping:s.1", "exited:s.1", "stopped:s.1"}));
  EXPECT_EQ(w.ReplyTo(r)->removed, (Strings{"s.3", "s.2", "s.1"}));
  EXPECT_EQ(World::Ids(w.root()), (Strings{"s.0", "z"}));
  EXPECT_EQ(w.Pid("z"), z);
  EXPECT_EQ(w.RootRestarts(), 0);
  // The running spec reflects the scaling, for the next reload's diff.
  EXPECT_EQ(w.engine().RunningSpec().children.size(), 2u);
}

TEST(ScaleTest, SimpleOneForOneInstancesAndUnknownSets) {
  ChildSpec tmpl = Worker("conn");
  SupervisorSpec pool = Sup("pool", Strategy::kSimpleOneForOne, {tmpl});
  World w(Sup("root", kOneForOne, {SubSup(pool)}));
  w.Start();
  RequestId r = w.Scale("pool", 3);
  EXPECT_EQ(w.ReplyTo(r)->added, (Strings{"conn.0", "conn.1", "conn.2"}));
  EXPECT_TRUE(w.Running("conn.2"));
  r = w.Scale("pool", 2);
  EXPECT_EQ(w.ReplyTo(r)->removed, (Strings{"conn.2"}));
  EXPECT_EQ(w.engine().RunningSpec().children[0].supervisor().instances, 2);
  EXPECT_EQ(w.ReplyTo(w.Scale("nope", 2))->status.code(), Status::Code::kNotFound);
}

TEST(BackoffTest, DelaysGrowExponentiallyAreCappedAndResetAfterStayingUp) {
  ChildSpec a = Worker("a");
  a.backoff = BackoffSpec{100ms, 1000ms, 2.0};
  World w(Sup("root", kOneForOne, {a, Worker("b")}, /*intensity=*/100, 60000ms));
  w.Start();
  w.Clear();
  w.Crash("a");
  EXPECT_EQ(w.Trace(), (Strings{"exited:a", "restarting:a", "arm:100ms"}));
  EXPECT_FALSE(w.Running("a"));
  // Other children are not held up meanwhile.
  w.Crash("b");
  EXPECT_TRUE(w.Running("b"));
  w.Fire(100ms);
  EXPECT_TRUE(w.Running("a"));
  std::vector<int> delays;
  for (int i = 0; i < 5; ++i) {
    w.Clear();
    w.Crash("a");
    for (const std::string& t : w.Trace()) {
      if (t.rfind("arm:", 0) == 0 && t != "arm:10000ms") delays.push_back(std::stoi(t.substr(4)));
    }
    w.Fire(Millis{delays.back()});
  }
  EXPECT_EQ(delays, (std::vector<int>{200, 400, 800, 1000, 1000}));
  EXPECT_EQ(w.RootRestarts(), 7);  // every restart still counts
  w.Advance(1500ms);               // up for longer than max
  w.Clear();
  w.Crash("a");
  EXPECT_EQ(w.Count("arm:100ms"), 1);
}

TEST(BackoffTest, OperatorStopDuringTheDelayCancelsTheRestart) {
  ChildSpec a = Worker("a");
  a.backoff = BackoffSpec{100ms, 1000ms, 2.0};
  World w(Sup("root", kOneForOne, {a}, /*intensity=*/10));
  w.Start();
  w.Crash("a");
  EXPECT_TRUE(w.ReplyTo(w.Op(TreeEngine::Op::kStop, "a"))->status.ok());
  w.Fire(100ms);
  EXPECT_FALSE(w.Running("a"));
}

TEST(ReloadTest, AddsRemovesAndRestartsChangedChildrenWhileUnchangedOnesKeepTheirPids) {
  World w(Sup("root", kOneForOne, {Worker("a"), Worker("b"), Worker("c")}));
  w.Start();
  int a = w.Pid("a");
  ChildSpec b2 = Worker("b");
  b2.command = {"/usr/bin/b", "--new"};
  ReloadPart part;
  part.next = Sup("root", kOneForAll, {Worker("a"), b2, Worker("d")}, 5);
  part.removed = {"c"};
  part.changed = {"b"};
  part.added = {"d"};
  w.Clear();
  RequestId r = w.Reload({{"root", part}});
  EXPECT_EQ(w.Events(), (Strings{"stopping:c", "exited:c", "stopped:c", "stopping:b", "exited:b",
                                 "stopped:b", "started:b", "ready:b", "started:d", "ready:d"}));
  EXPECT_TRUE(w.ReplyTo(r)->status.ok());
  EXPECT_EQ(w.Pid("a"), a);
  EXPECT_EQ(w.spec("b").command, (Strings{"/usr/bin/b", "--new"}));
  EXPECT_EQ(World::Ids(w.root()), (Strings{"a", "b", "d"}));
  EXPECT_EQ(w.root().spec().strategy, Strategy::kOneForAll);
  EXPECT_EQ(w.root().spec().intensity, 5);
  EXPECT_EQ(w.RootRestarts(), 0);
}

TEST(ReloadTest, PartsApplyParentFirstAndAFailedStartIsReported) {
  World w(Sup("root", kOneForOne, {Worker("a"), SubSup(Sup("s", kOneForOne, {Worker("x")}))}));
  w.Start();
  int a = w.Pid("a");
  ReloadPart sub;
  sub.next = Sup("s", kOneForOne, {Worker("x"), Worker("y")});
  sub.added = {"y"};
  w.SetBoot("y", Boot::kExitEarly);
  RequestId r = w.Reload({{"s", sub}});
  ASSERT_TRUE(w.ReplyTo(r).has_value());
  EXPECT_FALSE(w.ReplyTo(r)->status.ok());
  EXPECT_EQ(w.Pid("a"), a);
  EXPECT_TRUE(w.Running("x"));
  EXPECT_FALSE(w.exit_code().has_value());
}

// ---- upgrade: hand-off to a new incarnation (docs/UPGRADE.md) -----------------

ChildSpec Handoff(const std::string& id) {
  ChildSpec c = Worker(id);
  c.upgrade = UpgradeMode::kHandoff;
  return c;
}

bool HasEnv(const ChildSpec& c, const std::string& k, const std::string& v) {
  return std::find(c.env.begin(), c.env.end(), std::pair<std::string, std::string>{k, v}) !=
         c.env.end();
}

const SupervisorNode::Child& ChildOf(const SupervisorNode& n, const std::string& id) {
  const SupervisorNode::Child* c = World::FindChild(n, id);
  EXPECT_NE(c, nullptr) << id;
  return *c;
}

TEST(UpgradeTest, NewIncarnationTakesOverAsTheSameChildWithoutARestart) {
  World w(Sup("root", kOneForOne, {Handoff("s"), Worker("b")}));
  w.Start();
  const int old_pid = w.Pid("s");
  w.Clear();
  w.QueueBoot("s", Boot::kNeverReady);
  RequestId r = w.Upgrade("s");
  EXPECT_EQ(w.Trace(), (Strings{"upgrading:s", "spawn:s", "arm:10000ms"}));
  EXPECT_TRUE(HasEnv(w.LastSpawnSpec("s"), "SWITCHBOARD_HANDOFF", "receive"));
  EXPECT_EQ(w.Pid("s"), old_pid);  // still the child
  const int new_pid = w.NewPid("s");
  ASSERT_NE(new_pid, 0);
  EXPECT_EQ(ChildOf(w.root(), "s").state, ChildState::kUpgrading);
  TreeView v = w.engine().View(Time{0});
  EXPECT_EQ(v.children[0].pid, old_pid);
  EXPECT_EQ(v.children[0].upgrade_pid, new_pid);
  EXPECT_FALSE(w.ReplyTo(r).has_value());

  w.Clear();
  w.NewReady("s");
  EXPECT_EQ(w.Trace(), (Strings{"cancel", "USR2:s"}));
  w.Status("s", "upgraded connections=12 ms=7");
  w.Clear();
  w.Crash("s", ExitInfo::Code(0));  // the old one handed over and exits 0
  EXPECT_EQ(w.Trace(), (Strings{"exited:s", "upgraded:s", "reply:ok"}));
  ASSERT_TRUE(w.ReplyTo(r).has_value());
  ASSERT_EQ(w.ReplyTo(r)->upgraded.size(), 1u);
  EXPECT_EQ(w.ReplyTo(r)->upgraded[0], (UpgradeOutcome{"s", new_pid, 12, 7}));
  const TreeEvent& up = w.Emitted().back();
  EXPECT_EQ(up.pid, new_pid);
  EXPECT_EQ(up.connections, 12);
  EXPECT_EQ(up.ms, 7);
  EXPECT_EQ(w.Pid("s"), new_pid);
  EXPECT_EQ(ChildOf(w.root(), "s").state, ChildState::kRunning);
  EXPECT_EQ(ChildOf(w.root(), "s").restarts, 0);
  EXPECT_EQ(w.RootRestarts(), 0);
  EXPECT_EQ(w.armed_timers(), 0u);

  // It is the child now: its crash is handled as any other.
  w.Clear();
  w.Crash("s");
  EXPECT_EQ(w.Events(), (Strings{"exited:s", "restarting:s", "started:s", "ready:s"}));
}

TEST(UpgradeTest, ReportArrivingAfterTheOldExitIsWaitedForBriefly) {
  World w(Sup("root", kOneForOne, {Handoff("s")}));
  w.Start();
  RequestId r = w.Upgrade("s");  // ready at once: SIGUSR2 at once
  const int new_pid = w.NewPid("s");
  w.Clear();
  w.Crash("s", ExitInfo::Code(0));
  EXPECT_EQ(w.Trace(), (Strings{"exited:s", "arm:1000ms"}));
  EXPECT_FALSE(w.ReplyTo(r).has_value());
  EXPECT_EQ(w.Pid("s"), new_pid);
  w.Clear();
  w.Status("s", "upgraded connections=3 ms=2 extra=1");
  EXPECT_EQ(w.Trace(), (Strings{"cancel", "upgraded:s", "reply:ok"}));
  EXPECT_EQ(w.ReplyTo(r)->upgraded[0], (UpgradeOutcome{"s", new_pid, 3, 2}));
}

TEST(UpgradeTest, WithoutAReportTheCountsAreUnknown) {
  World w(Sup("root", kOneForOne, {Handoff("s")}));
  w.Start();
  RequestId r = w.Upgrade("s");
  const int new_pid = w.NewPid("s");
  w.Status("s", "serving");  // not a report: ignored
  w.Crash("s", ExitInfo::Code(0));
  w.Clear();
  w.Fire(SupervisorNode::kUpgradeReportWait);
  EXPECT_EQ(w.Trace(), (Strings{"fire:1000ms", "upgraded:s", "reply:ok"}));
  EXPECT_EQ(w.ReplyTo(r)->upgraded[0], (UpgradeOutcome{"s", new_pid, std::nullopt, std::nullopt}));
  EXPECT_EQ(w.Emitted().back().connections, std::nullopt);
}

TEST(UpgradeTest, NewIncarnationNotReadyInTimeIsKilledAndTheOldOneStays) {
  World w(Sup("root", kOneForOne, {Handoff("s")}));
  w.Start();
  const int old_pid = w.Pid("s");
  w.QueueBoot("s", Boot::kNeverReady);
  RequestId r = w.Upgrade("s");
  w.Clear();
  w.Fire(10000ms);
  EXPECT_EQ(w.Trace(),
            (Strings{"fire:10000ms", "KILL:s", "exited:s", "upgrade_failed:s", "reply:error"}));
  EXPECT_EQ(w.Count("USR2:s"), 0);  // the old one was never told
  EXPECT_EQ(w.Pid("s"), old_pid);
  EXPECT_EQ(w.Emitted().back().pid, old_pid);
  EXPECT_EQ(ChildOf(w.root(), "s").state, ChildState::kRunning);
  EXPECT_EQ(ChildOf(w.root(), "s").restarts, 0);
  EXPECT_EQ(w.ReplyTo(r)->status.message(),
            "upgrade of 's' failed: the new process was not ready within 10000ms");
  EXPECT_EQ(w.Emitted().back().reason, "the new process was not ready within 10000ms");
}

TEST(UpgradeTest, NewIncarnationExitingBeforeReadyFailsTheUpgrade) {
  World w(Sup("root", kOneForOne, {Handoff("s")}));
  w.Start();
  const int old_pid = w.Pid("s");
  w.QueueBoot("s", Boot::kExitEarly);
  w.Clear();
  RequestId r = w.Upgrade("s");
  EXPECT_EQ(w.Trace(), (Strings{"upgrading:s", "spawn:s", "arm:10000ms", "exited:s", "cancel",
                                "upgrade_failed:s", "reply:error"}));
  EXPECT_EQ(w.ReplyTo(r)->status.message(),
            "upgrade of 's' failed: the new process exited before the hand-off (exit status 3)");
  EXPECT_EQ(w.Pid("s"), old_pid);
  EXPECT_EQ(w.RootRestarts(), 0);
}

TEST(UpgradeTest, NewIncarnationThatCannotBeExecutedFailsTheUpgrade) {
  World w(Sup("root", kOneForOne, {Handoff("s")}));
  w.Start();
  const int old_pid = w.Pid("s");
  w.QueueBoot("s", Boot::kExecFails);
  w.Clear();
  RequestId r = w.Upgrade("s");
  EXPECT_EQ(w.Trace(), (Strings{"upgrading:s", "spawn:s", "upgrade_failed:s", "reply:error"}));
  EXPECT_EQ(w.ReplyTo(r)->status.message(),
            "upgrade of 's' failed: the new process did not start: exec failed");
  EXPECT_EQ(w.Pid("s"), old_pid);
  EXPECT_EQ(ChildOf(w.root(), "s").state, ChildState::kRunning);
  EXPECT_EQ(ChildOf(w.root(), "s").next_token, 0u);
}

TEST(UpgradeTest, NewIncarnationExitingMidHandOffLeavesTheOldOneTheChild) {
  World w(Sup("root", kOneForOne, {Handoff("s")}));
  w.Start();
  const int old_pid = w.Pid("s");
  RequestId r = w.Upgrade("s");
  EXPECT_EQ(w.Count("USR2:s"), 1);
  w.Clear();
  w.NewExit("s", ExitInfo::Signal(SIGKILL));
  EXPECT_EQ(w.Trace(), (Strings{"exited:s", "upgrade_failed:s", "reply:error"}));
  EXPECT_EQ(w.ReplyTo(r)->status.message(),
            "upgrade of 's' failed: the new process exited before the hand-off (killed by "
            "SIGKILL)");
  EXPECT_EQ(w.Pid("s"), old_pid);
  EXPECT_EQ(ChildOf(w.root(), "s").state, ChildState::kRunning);
  // The old one is still supervised as before.
  w.Clear();
  w.Crash("s");
  EXPECT_EQ(w.Events(), (Strings{"exited:s", "restarting:s", "started:s", "ready:s"}));
}

TEST(UpgradeTest, OldIncarnationDyingMidHandOffLeavesTheNewOneTheChild) {
  World w(Sup("root", kOneForOne, {Handoff("s")}));
  w.Start();
  RequestId r = w.Upgrade("s");
  const int new_pid = w.NewPid("s");
  w.Status("s", "upgraded connections=4 ms=9");
  w.Clear();
  w.Crash("s", ExitInfo::Signal(SIGKILL));
  EXPECT_EQ(w.Trace(), (Strings{"exited:s", "upgraded:s", "reply:ok"}));
  EXPECT_EQ(w.Pid("s"), new_pid);
  EXPECT_EQ(w.Emitted().back().reason, "the old process ended mid-hand-off (killed by SIGKILL)");
  EXPECT_EQ(ChildOf(w.root(), "s").restarts, 0);
  EXPECT_EQ(w.RootRestarts(), 0);
  EXPECT_TRUE(w.ReplyTo(r)->status.ok());
}

TEST(UpgradeTest, OldIncarnationDyingBeforeTheHandOffIsAnOrdinaryCrash) {
  World w(Sup("root", kOneForOne, {Handoff("s")}));
  w.Start();
  w.QueueBoot("s", Boot::kNeverReady);
  RequestId r = w.Upgrade("s");
  w.Clear();
  w.Crash("s");
  // The new one, waiting for a hand-off that cannot come, is killed; then
  // the child's own exit is handled: a restart, counted.
  EXPECT_EQ(w.Trace(),
            (Strings{"exited:s", "cancel", "KILL:s", "exited:s", "upgrade_failed:s", "reply:error",
                     "restarting:s", "spawn:s", "started:s", "arm:10000ms", "cancel", "ready:s"}));
  EXPECT_EQ(w.ReplyTo(r)->status.message(),
            "upgrade of 's' failed: the old process ended before the hand-off (exit status 1)");
  EXPECT_EQ(ChildOf(w.root(), "s").restarts, 1);
  EXPECT_EQ(w.Count("USR2:s"), 0);
}

TEST(UpgradeTest, SiblingsCrashDuringAnUpgradeIsHandledAfterIt) {
  World w(Sup("root", kOneForOne, {Handoff("s"), Worker("b")}, 5));
  w.Start();
  w.QueueBoot("s", Boot::kNeverReady);
  w.Upgrade("s");
  w.Clear();
  w.Crash("b");
  EXPECT_EQ(w.Events(), (Strings{"exited:b"}));  // queued: the supervisor is busy
  w.HandOverOnUsr2("s", 0);
  w.NewReady("s");
  EXPECT_EQ(w.Events(), (Strings{"exited:b", "exited:s", "upgraded:s", "restarting:b", "started:b",
                                 "ready:b"}));
}

TEST(UpgradeTest, RefusesWhatCannotBeHandedOver) {
  World w(Sup("root", kOneForOne,
              {Worker("plain"), SubSup(Sup("none", kOneForOne, {Worker("x")})), Handoff("s")}));
  w.Start();
  w.Clear();
  RequestId plain = w.Upgrade("plain");
  RequestId missing = w.Upgrade("nope");
  RequestId none = w.Upgrade("none");
  EXPECT_EQ(w.spawns("plain"), 1);
  EXPECT_EQ(w.ReplyTo(plain)->status.message(),
            "'plain' is not a worker with upgrade: handoff (restart it instead)");
  EXPECT_EQ(w.ReplyTo(missing)->status.code(), Status::Code::kNotFound);
  EXPECT_EQ(w.ReplyTo(none)->status.message(),
            "supervisor 'none' has no child with upgrade: handoff");
  w.Op(TreeEngine::Op::kStop, "s");
  RequestId stopped = w.Upgrade("s");
  EXPECT_EQ(w.ReplyTo(stopped)->status.message(), "'s' is not running (stopped)");
  EXPECT_EQ(w.spawns("s"), 1);
}

TEST(UpgradeTest, SupervisorUpgradesItsHandoffChildrenOneAtATimeInOrder) {
  World w(Sup("root", kOneForOne,
              {SubSup(Sup("shards", kOneForOne, {Handoff("s0"), Worker("x"), Handoff("s1")}))}));
  w.Start();
  w.HandOverOnUsr2("s0", 5);
  w.HandOverOnUsr2("s1", 6);
  const int x = w.Pid("x");
  w.Clear();
  RequestId r = w.Upgrade("shards");
  EXPECT_EQ(w.Events(), (Strings{"upgrading:s0", "exited:s0", "upgraded:s0", "upgrading:s1",
                                 "exited:s1", "upgraded:s1"}));
  ASSERT_TRUE(w.ReplyTo(r).has_value());
  EXPECT_TRUE(w.ReplyTo(r)->status.ok());
  ASSERT_EQ(w.ReplyTo(r)->upgraded.size(), 2u);
  EXPECT_EQ(w.ReplyTo(r)->upgraded[0].id, "s0");
  EXPECT_EQ(w.ReplyTo(r)->upgraded[0].connections, 5);
  EXPECT_EQ(w.ReplyTo(r)->upgraded[1].id, "s1");
  EXPECT_EQ(w.ReplyTo(r)->upgraded[1].connections, 6);
  EXPECT_EQ(w.Pid("x"), x);
  EXPECT_EQ(w.Count("reply:ok"), 1);
}

TEST(UpgradeTest, SupervisorUpgradeStopsAtTheFirstFailure) {
  World w(Sup("root", kOneForOne, {Handoff("s0"), Handoff("s1"), Handoff("s2")}));
  w.Start();
  w.HandOverOnUsr2("s0", 1);
  w.QueueBoot("s1", Boot::kExitEarly);
  const int s2 = w.Pid("s2");
  RequestId r = w.Upgrade("root");
  ASSERT_TRUE(w.ReplyTo(r).has_value());
  EXPECT_EQ(w.ReplyTo(r)->status.message(),
            "upgrade of 's1' failed: the new process exited before the hand-off (exit status 3)");
  ASSERT_EQ(w.ReplyTo(r)->upgraded.size(), 1u);  // what was done before it stays done
  EXPECT_EQ(w.ReplyTo(r)->upgraded[0].id, "s0");
  EXPECT_EQ(w.spawns("s2"), 1);
  EXPECT_EQ(w.Pid("s2"), s2);
}

TEST(UpgradeTest, ReloadHandsAChangedCommandOverInsteadOfRestarting) {
  World w(Sup("root", kOneForOne, {Handoff("s"), Worker("b")}));
  w.Start();
  w.HandOverOnUsr2("s", 2);
  ChildSpec s2 = Handoff("s");
  s2.command = {"/usr/bin/s", "--v2"};
  ReloadPart part;
  part.next = Sup("root", kOneForOne, {s2, Worker("b")});
  part.upgraded = {"s"};
  w.Clear();
  RequestId r = w.Reload({{"root", part}});
  EXPECT_EQ(w.Events(), (Strings{"upgrading:s", "exited:s", "upgraded:s"}));
  EXPECT_TRUE(w.ReplyTo(r)->status.ok());
  EXPECT_EQ(w.LastSpawnSpec("s").command, (Strings{"/usr/bin/s", "--v2"}));
  EXPECT_EQ(ChildOf(w.root(), "s").restarts, 0);
  EXPECT_EQ(w.Count("TERM:s"), 0);
}

TEST(UpgradeTest, FailedHandOffFailsTheReload) {
  World w(Sup("root", kOneForOne, {Handoff("s")}));
  w.Start();
  const int old_pid = w.Pid("s");
  w.QueueBoot("s", Boot::kExitEarly);
  ReloadPart part;
  part.next = Sup("root", kOneForOne, {Handoff("s")});
  part.upgraded = {"s"};
  RequestId r = w.Reload({{"root", part}});
  ASSERT_TRUE(w.ReplyTo(r).has_value());
  EXPECT_FALSE(w.ReplyTo(r)->status.ok());
  EXPECT_EQ(w.Pid("s"), old_pid);
}

TEST(UpgradeTest, SecondStopRequestKillsBothIncarnations) {
  World w(Sup("root", kOneForOne, {Handoff("s")}));
  w.Start();
  w.QueueBoot("s", Boot::kNeverReady);
  w.IgnoreTerm("s");
  w.Upgrade("s");
  w.Shutdown();  // queued behind the upgrade
  w.Clear();
  w.Shutdown();
  EXPECT_EQ(w.Count("KILL:s"), 2);
  EXPECT_FALSE(w.Running("s"));
  EXPECT_EQ(w.exit_code(), 0);
}

TEST(UpgradeStatusTest, ParsesTheReportAndNothingElse) {
  EXPECT_EQ(ParseUpgradedStatus("upgraded connections=10 ms=3"), (UpgradeOutcome{"", 0, 10, 3}));
  EXPECT_EQ(ParseUpgradedStatus("upgraded"), (UpgradeOutcome{}));
  EXPECT_EQ(ParseUpgradedStatus("upgraded connections=x ms=-1 version=2"), (UpgradeOutcome{}));
  EXPECT_EQ(ParseUpgradedStatus("serving 10 connections"), std::nullopt);
  EXPECT_EQ(ParseUpgradedStatus(""), std::nullopt);
}

}  // namespace
}  // namespace sb::supervisor
