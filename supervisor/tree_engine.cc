#include "supervisor/tree_engine.h"

#include <signal.h>

#include <algorithm>
#include <functional>

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
  Emit(TreeEvent{.kind = EventKind::kStarted, .id = root_spec_.id});
  PumpAll(now);
}

void TreeEngine::RequestShutdown(Time now) {
  if (finished_ || root_ == 0) return;
  if (!shutdown_requested_) {
    shutdown_requested_ = true;
    Send(root_, msg::Stop{});
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
  Send(it->second.owner, msg::Spawned{.token = token, .pid = pid});
  PumpAll(now);
}

void TreeEngine::OnSpawnFailed(Token token, const std::string& error, Time now) {
  auto it = live_.find(token);
  if (it == live_.end()) return;
  Instance owner = it->second.owner;
  live_.erase(it);
  Send(owner, msg::SpawnFailed{.token = token, .error = error});
  PumpAll(now);
}

void TreeEngine::OnReady(Token token, Time now) {
  auto it = live_.find(token);
  if (it == live_.end()) return;
  Send(it->second.owner, msg::Ready{.token = token});
  PumpAll(now);
}

void TreeEngine::OnStatus(Token token, std::string text, Time now) {
  auto it = live_.find(token);
  if (it == live_.end()) return;
  Send(it->second.owner, msg::StatusLine{.token = token, .text = std::move(text)});
  PumpAll(now);
}

void TreeEngine::OnExited(Token token, ExitInfo exit, Time now) {
  auto it = live_.find(token);
  if (it == live_.end()) return;
  Incarnation inc = it->second;
  live_.erase(it);
  Emit(TreeEvent{.kind = EventKind::kExited,
                 .id = inc.id,
                 .pid = inc.pid,
                 .status = exit.status >= 0 ? std::optional<int>(exit.status) : std::nullopt,
                 .signal = exit.signal ? std::optional<int>(exit.signal) : std::nullopt});
  Send(inc.owner, msg::Exit{.token = token, .exit = exit});
  PumpAll(now);
}

void TreeEngine::OnTimer(TimerToken timer, Time now) {
  auto it = timers_.find(timer);
  if (it == timers_.end()) return;
  Instance owner = it->second;
  timers_.erase(it);
  Send(owner, msg::Timer{.timer = timer});
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
  Send(i, msg::Init{});
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
    if (c.next_token != 0) Signal(c.next_token, SIGKILL);
    if (c.sub != 0) KillSubtree(c.sub);
  }
}

void TreeEngine::Ready(Instance self) {
  auto it = nodes_.find(self);
  if (it == nodes_.end()) return;
  Instance parent = it->second->parent();
  if (parent != 0) Send(parent, msg::SubReady{.sub = self});
}

void TreeEngine::StartFailed(Instance self, const std::string& reason) {
  auto it = nodes_.find(self);
  if (it == nodes_.end()) return;
  Instance parent = it->second->parent();
  dead_.push_back(self);
  if (parent != 0) {
    Send(parent, msg::SubStartFailed{.sub = self, .reason = reason});
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
    Send(parent, msg::SubExited{.sub = self});
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

namespace sb::supervisor {

SupervisorNode* TreeEngine::Owner(const std::string& child_id) {
  for (auto& [i, n] : nodes_) {
    if (n->terminated()) continue;
    for (const auto& c : n->children())
      if (c.spec.id == child_id) return n.get();
  }
  return nullptr;
}

SupervisorNode* TreeEngine::ById(const std::string& supervisor_id) {
  for (auto& [i, n] : nodes_) {
    if (!n->terminated() && n->spec().id == supervisor_id) return n.get();
  }
  return nullptr;
}

void TreeEngine::Operator(RequestId request, Op op, const std::string& id, Time now) {
  SupervisorNode* owner = finished_ || shutdown_requested_ ? nullptr : Owner(id);
  if (!owner) {
    Status why = shutdown_requested_ ? Status::Refused("the node is stopping")
                 : id == root_spec_.id
                     ? Status::Refused("the root supervisor cannot be " +
                                       std::string(op == Op::kStop ? "stopped" : "restarted") +
                                       " this way; stop the daemon instead")
                     : Status::NotFound("no child '" + id + "'");
    Reply(action::Reply{request, why});
    return;
  }
  switch (op) {
    case Op::kStop:
      Send(owner->self(), msg::OpStop{.request = request, .id = id});
      break;
    case Op::kStart:
      Send(owner->self(), msg::OpStart{.request = request, .id = id});
      break;
    case Op::kRestart:
      Send(owner->self(), msg::OpRestart{.request = request, .id = id});
      break;
  }
  PumpAll(now);
}

void TreeEngine::Scale(RequestId request, const std::string& id, int n, Time now) {
  SupervisorNode* target = nullptr;
  if (!shutdown_requested_) {
    for (auto& [i, node] : nodes_) {
      if (node->terminated()) continue;
      const SupervisorSpec& sp = node->spec();
      if (sp.strategy == Strategy::kSimpleOneForOne && sp.id == id) target = node.get();
      for (const ChildSpec& t : sp.replica_sets)
        if (t.id == id) target = node.get();
    }
  }
  if (!target) {
    Reply(action::Reply{request, Status::NotFound("'" + id + "' is not a replica set or a " +
                                                  "simple_one_for_one supervisor")});
    return;
  }
  if (n < 0) {
    Reply(action::Reply{request, Status::InvalidConfig("a count must be 0 or more")});
    return;
  }
  Send(target->self(), msg::OpScale{.request = request, .id = id, .count = n});
  PumpAll(now);
}

void TreeEngine::Reload(RequestId request, std::vector<std::pair<std::string, ReloadPart>> parts,
                        Time now) {
  if (reload_ || shutdown_requested_ || finished_) {
    Reply(action::Reply{request, Status::Refused(reload_ ? "a reload is already in progress"
                                                         : "the node is stopping")});
    return;
  }
  reload_ = PendingReload{request, 0, {}};
  for (auto& p : parts) reload_->parts.push_back(std::move(p));
  NextReloadPart(now);
  PumpAll(now);
}

void TreeEngine::NextReloadPart(Time now) {
  (void)now;
  while (reload_ && !reload_->parts.empty()) {
    auto [id, part] = std::move(reload_->parts.front());
    reload_->parts.pop_front();
    if (id == root_spec_.id) root_spec_ = part.next;
    SupervisorNode* n = ById(id);
    if (!n) continue;  // restarted whole by its parent's part: nothing left to do
    reload_->current = next_internal_++;
    Send(n->self(), msg::OpReload{.request = reload_->current,
                                  .part = std::make_shared<const ReloadPart>(std::move(part))});
    return;
  }
  if (reload_) {
    actions_.push_back(action::Reply{reload_->client, Status::Ok()});
    reload_.reset();
  }
}

void TreeEngine::Upgrade(RequestId request, const std::string& id, Time now) {
  if (finished_ || shutdown_requested_) {
    Reply(action::Reply{request, Status::Refused("the node is stopping")});
    return;
  }
  if (SupervisorNode* owner = Owner(id)) {
    const auto& children = owner->children();
    auto c = std::find_if(children.begin(), children.end(),
                          [&](const SupervisorNode::Child& x) { return x.spec.id == id; });
    if (!c->spec.is_supervisor) {
      Send(owner->self(), msg::OpUpgrade{.request = request, .id = id});
      PumpAll(now);
      return;
    }
  }
  SupervisorNode* sup = ById(id);
  if (!sup) {
    Reply(action::Reply{request, Status::NotFound("no child '" + id + "'")});
    return;
  }
  UpgradeRun run{.client = request};
  // Pre-order: a supervisor's workers in start order, each sub-supervisor's
  // where it stands among them.
  std::function<void(const SupervisorNode&)> walk = [&](const SupervisorNode& n) {
    for (const auto& c : n.children()) {
      if (c.sub != 0) {
        if (const SupervisorNode* s = node(c.sub)) walk(*s);
      } else if (!c.spec.is_supervisor && c.spec.upgrade == UpgradeMode::kHandoff) {
        run.ids.push_back(c.spec.id);
      }
    }
  };
  walk(*sup);
  if (run.ids.empty()) {
    Reply(action::Reply{
        request, Status::Refused("supervisor '" + id + "' has no child with upgrade: handoff")});
    return;
  }
  NextUpgrade(std::move(run));
  PumpAll(now);
}

void TreeEngine::NextUpgrade(UpgradeRun run) {
  while (!run.ids.empty()) {
    std::string id = std::move(run.ids.front());
    run.ids.pop_front();
    SupervisorNode* owner = Owner(id);
    if (!owner) continue;  // gone meanwhile (scaled down, reloaded away)
    RequestId internal = next_internal_++;
    upgrades_.emplace(internal, std::move(run));
    Send(owner->self(), msg::OpUpgrade{.request = internal, .id = id});
    return;
  }
  actions_.push_back(action::Reply{
      .request = run.client, .status = Status::Ok(), .upgraded = std::move(run.done)});
}

void TreeEngine::Reply(action::Reply reply) {
  if (auto it = upgrades_.find(reply.request); it != upgrades_.end()) {
    UpgradeRun run = std::move(it->second);
    upgrades_.erase(it);
    for (UpgradeOutcome& o : reply.upgraded) run.done.push_back(std::move(o));
    if (!reply.status.ok()) {
      // The ones already handed over stay so; the reply says which.
      actions_.push_back(action::Reply{
          .request = run.client, .status = reply.status, .upgraded = std::move(run.done)});
      return;
    }
    NextUpgrade(std::move(run));
    return;
  }
  if (reload_ && reply.request == reload_->current) {
    if (!reply.status.ok()) {
      actions_.push_back(action::Reply{reload_->client, reply.status});
      reload_.reset();
      return;
    }
    NextReloadPart(Time{0});
    return;
  }
  actions_.push_back(std::move(reply));
}

TreeView TreeEngine::View(Time now) const {
  const SupervisorNode* r = root();
  if (!r) return TreeView{root_spec_.id, true};
  TreeView v = ViewOf(*r, now);
  v.state = finished_ ? ChildState::kStopped : ChildState::kRunning;
  return v;
}

TreeView TreeEngine::ViewOf(const SupervisorNode& n, Time now) const {
  TreeView v;
  v.id = n.spec().id;
  v.is_supervisor = true;
  v.strategy = n.spec().strategy;
  v.intensity = n.spec().intensity;
  v.period = n.spec().period;
  v.restarts_in_window = n.restarts_in_window(now);
  for (const auto& c : n.children()) {
    TreeView cv;
    const SupervisorNode* sub = c.sub ? node(c.sub) : nullptr;
    if (sub) {
      cv = ViewOf(*sub, now);
    } else {
      cv.id = c.spec.id;
      cv.is_supervisor = c.spec.is_supervisor;
      if (c.spec.is_supervisor) {
        const SupervisorSpec& sp = c.spec.supervisor();
        cv.strategy = sp.strategy;
        cv.intensity = sp.intensity;
        cv.period = sp.period;
      }
    }
    cv.state = c.state;
    cv.pid = c.pid;
    cv.upgrade_pid = c.next_pid;
    cv.metrics = c.spec.metrics;
    cv.success_exit_codes = c.spec.success_exit_codes;
    if (c.state == ChildState::kRunning || c.state == ChildState::kUpgrading) cv.since = c.since;
    cv.restarts = c.restarts;
    cv.last_exit = c.last_exit;
    v.children.push_back(std::move(cv));
  }
  return v;
}

SupervisorSpec TreeEngine::RunningSpec() const {
  const SupervisorNode* r = root();
  return r ? RunningSpecOf(*r) : root_spec_;
}

SupervisorSpec TreeEngine::RunningSpecOf(const SupervisorNode& n) const {
  SupervisorSpec out = n.RunningSpec();
  if (out.strategy == Strategy::kSimpleOneForOne) return out;
  for (size_t i = 0; i < out.children.size(); ++i) {
    const auto& c = n.children()[i];
    if (c.sub == 0) continue;
    if (const SupervisorNode* sub = node(c.sub)) out.children[i].sub = {RunningSpecOf(*sub)};
  }
  return out;
}

}  // namespace sb::supervisor
