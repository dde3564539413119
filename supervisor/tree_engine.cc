#include "supervisor/tree_engine.h"

#include <signal.h>

#include <algorithm>

#include "common/exit_codes.h"

namespace sb::supervisor {

TreeEngine::TreeEngine(SupervisorSpec root) : root_spec_(std::move(root)) {}
TreeEngine::~TreeEngine() = default;

const SupervisorNode* TreeEngine::root() const { return node(root_); }

const SupervisorNode* TreeEngine::node(Instance i) const {
  auto it = nodes_.find(i);
  return it == nodes_.end() ? nullptr : it->second.get();
}

void TreeEngine::Start(Time now) {
  root_ = StartSub(0, root_spec_);
  Emit(TreeEvent{"started", root_spec_.id});
  PumpAll(now);
}

void TreeEngine::RequestShutdown(Time now) {
  if (finished_ || root_ == 0) return;
  if (!shutdown_requested_) {
    shutdown_requested_ = true;
    Send(root_, NodeMsg{NodeMsg::Kind::kStop});
  } else {
    Log(action::Log::Level::kWarn, "second stop request: killing every child now");
    KillSubtree(root_);
  }
  PumpAll(now);
}

void TreeEngine::OnSpawned(Token token, int pid, Time now) {
  auto it = live_.find(token);
  if (it == live_.end()) return;
  it->second.pid = pid;
  Send(it->second.owner, NodeMsg{NodeMsg::Kind::kSpawned, token, pid});
  PumpAll(now);
}

void TreeEngine::OnSpawnFailed(Token token, const std::string& error, Time now) {
  auto it = live_.find(token);
  if (it == live_.end()) return;
  Instance owner = it->second.owner;
  live_.erase(it);
  Send(owner, NodeMsg{NodeMsg::Kind::kSpawnFailed, token, 0, {}, error});
  PumpAll(now);
}

void TreeEngine::OnReady(Token token, Time now) {
  auto it = live_.find(token);
  if (it == live_.end()) return;
  Send(it->second.owner, NodeMsg{NodeMsg::Kind::kReady, token});
  PumpAll(now);
}

void TreeEngine::OnExited(Token token, ExitInfo exit, Time now) {
  auto it = live_.find(token);
  if (it == live_.end()) return;
  Incarnation inc = it->second;
  live_.erase(it);
  Emit(TreeEvent{"exited", inc.id, inc.pid,
                 exit.status >= 0 ? std::optional<int>(exit.status) : std::nullopt,
                 exit.signal ? std::optional<int>(exit.signal) : std::nullopt});
  Send(inc.owner, NodeMsg{NodeMsg::Kind::kExit, token, inc.pid, exit});
  PumpAll(now);
}

void TreeEngine::OnTimer(TimerToken timer, Time now) {
  auto it = timers_.find(timer);
  if (it == timers_.end()) return;
  Instance owner = it->second;
  timers_.erase(it);
  Send(owner, NodeMsg{NodeMsg::Kind::kTimer, timer});
  PumpAll(now);
}

void TreeEngine::PumpAll(Time now) {
  while (!dirty_.empty()) {
    Instance i = dirty_.back();
    dirty_.pop_back();
    auto it = nodes_.find(i);
    if (it != nodes_.end()) it->second->Pump(now);
  }
  for (Instance i : std::exchange(dead_, {})) Reap(i);
}

void TreeEngine::Reap(Instance i) {
  nodes_.erase(i);
  std::erase_if(timers_, [&](const auto& kv) { return kv.second == i; });
}

// ---- NodeHost ---------------------------------------------------------------

Token TreeEngine::Spawn(Instance owner, const std::string& id, const ChildSpec& spec) {
  Token t = next_token_++;
  live_.emplace(t, Incarnation{owner, id});
  actions_.push_back(action::Spawn{t, spec});
  return t;
}

void TreeEngine::Signal(Token token, int sig) {
  if (live_.contains(token)) actions_.push_back(action::Signal{token, sig});
}

TimerToken TreeEngine::StartTimer(Instance owner, Millis after) {
  TimerToken t = next_token_++;
  timers_.emplace(t, owner);
  actions_.push_back(action::StartTimer{t, after});
  return t;
}

void TreeEngine::CancelTimer(TimerToken timer) {
  if (timers_.erase(timer) > 0) actions_.push_back(action::CancelTimer{timer});
}

void TreeEngine::Emit(TreeEvent ev) { actions_.push_back(action::Emit{std::move(ev)}); }

void TreeEngine::Log(action::Log::Level level, std::string text) {
  actions_.push_back(action::Log{level, std::move(text)});
}

Instance TreeEngine::StartSub(Instance parent, const SupervisorSpec& spec) {
  Instance i = next_instance_++;
  nodes_.emplace(i,
                 std::make_unique<SupervisorNode>(i, parent, spec, static_cast<NodeHost&>(*this)));
  Send(i, NodeMsg{NodeMsg::Kind::kInit});
  return i;
}

void TreeEngine::Send(Instance to, NodeMsg msg) {
  auto it = nodes_.find(to);
  if (it == nodes_.end() || it->second->terminated()) return;
  it->second->Deliver(std::move(msg));
  if (std::find(dirty_.begin(), dirty_.end(), to) == dirty_.end()) dirty_.push_back(to);
}

void TreeEngine::KillSubtree(Instance sub) {
  auto it = nodes_.find(sub);
  if (it == nodes_.end()) return;
  SupervisorNode& n = *it->second;
  n.SetBrutal();
  for (const auto& c : n.children()) {
    if (c.token != 0) Signal(c.token, SIGKILL);
    if (c.sub != 0) KillSubtree(c.sub);
  }
}

void TreeEngine::Ready(Instance self) {
  auto it = nodes_.find(self);
  if (it == nodes_.end()) return;
  Instance parent = it->second->parent();
  if (parent != 0) Send(parent, NodeMsg{NodeMsg::Kind::kSubReady, self});
}

void TreeEngine::StartFailed(Instance self, const std::string& reason) {
  auto it = nodes_.find(self);
  if (it == nodes_.end()) return;
  Instance parent = it->second->parent();
  dead_.push_back(self);
  if (parent != 0) {
    Send(parent, NodeMsg{NodeMsg::Kind::kSubStartFailed,
                         self,
                         0,
                         {},
                         "supervisor '" + it->second->spec().id + "': " + reason});
    return;
  }
  finished_ = true;
  actions_.push_back(action::Exit{kExitFailure, reason});
}

void TreeEngine::Terminated(Instance self, bool gave_up) {
  auto it = nodes_.find(self);
  if (it == nodes_.end()) return;
  Instance parent = it->second->parent();
  dead_.push_back(self);
  if (parent != 0) {
    Send(parent, NodeMsg{NodeMsg::Kind::kSubExited, self});
    return;
  }
  finished_ = true;
  if (gave_up) {
    actions_.push_back(action::Exit{
        kExitFailure, "root supervisor '" + root_spec_.id + "' reached its restart intensity"});
  } else {
    actions_.push_back(action::Exit{kExitOk, "stopped"});
  }
}

}  // namespace sb::supervisor
