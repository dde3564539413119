#include "supervisor/supervisor_node.h"

#include <signal.h>

#include <algorithm>

namespace sb::supervisor {

namespace {
using Level = action::Log::Level;
}  // namespace

SupervisorNode::SupervisorNode(Instance self, Instance parent, SupervisorSpec spec, NodeHost& host)
    : self_(self),
      parent_(parent),
      spec_(std::move(spec)),
      host_(host),
      intensity_(spec_.intensity, spec_.period) {
  if (spec_.strategy == Strategy::kSimpleOneForOne) {
    // Instances come from the template; the template itself never runs.
    for (int i = 0; i < spec_.instances; ++i) {
      children_.push_back(Child{InstantiateReplica(spec_.children.front(), i)});
    }
  } else {
    for (const ChildSpec& c : spec_.children) children_.push_back(Child{c});
  }
}

SupervisorNode::Child* SupervisorNode::Find(const std::string& id) {
  for (Child& c : children_)
    if (c.spec.id == id) return &c;
  return nullptr;
}

SupervisorNode::Child* SupervisorNode::FindByToken(Token t) {
  if (t == 0) return nullptr;
  for (Child& c : children_)
    if (c.token == t) return &c;
  return nullptr;
}

SupervisorNode::Child* SupervisorNode::FindBySub(Instance i) {
  if (i == 0) return nullptr;
  for (Child& c : children_)
    if (c.sub == i) return &c;
  return nullptr;
}

void SupervisorNode::Erase(std::string id) {
  std::erase_if(children_, [&](const Child& c) { return c.spec.id == id; });
}

void SupervisorNode::Pump(Time now) {
  for (;;) {
    if (terminated_) {
      mailbox_.clear();
      return;
    }
    if (step_) {
      if (!step_->begun) {
        step_->begun = true;
        Begin(*step_, now);
        continue;
      }
      // Selective receive: the first queued message this step waits for.
      auto it = std::find_if(mailbox_.begin(), mailbox_.end(),
                             [&](const NodeMsg& m) { return Wants(*step_, m); });
      if (it == mailbox_.end()) return;
      NodeMsg m = std::move(*it);
      mailbox_.erase(it);
      OnStepMsg(*step_, std::move(m), now);
      continue;
    }
    if (!plan_.empty()) {
      step_ = std::move(plan_.front());
      plan_.pop_front();
      continue;
    }
    if (after_ != After::kNothing) {
      Finish(now);
      continue;
    }
    if (mailbox_.empty()) return;
    NodeMsg m = std::move(mailbox_.front());
    mailbox_.pop_front();
    Handle(std::move(m), now);
  }
}

// ---- idle handling ---------------------------------------------------------

void SupervisorNode::Handle(NodeMsg msg, Time now) {
  switch (msg.kind) {
    case NodeMsg::Kind::kInit:
      for (const Child& c : children_) {
        plan_.push_back(Step{Step::Kind::kStart, c.spec.id, StartMode::kInitial});
      }
      after_ = After::kReportReady;
      return;
    case NodeMsg::Kind::kExit: {
      Child* c = FindByToken(msg.ref);
      if (!c) return;  // an incarnation already drained by a stop
      c->token = 0;
      c->pid = 0;
      c->state = ChildState::kStopped;
      c->last_exit = msg.exit;
      OnChildExit(*c, IsNormalExit(msg.exit, c->spec), msg.exit.Describe(), now);
      return;
    }
    case NodeMsg::Kind::kSubExited: {
      Child* c = FindBySub(msg.ref);
      if (!c) return;
      c->sub = 0;
      c->state = ChildState::kStopped;
      host_.Emit(TreeEvent{"exited", c->spec.id, {}, {}, {}, "gave up"});
      // A supervisor that gave up exits with reason `shutdown`: normal.
      OnChildExit(*c, true, "supervisor gave up", now);
      return;
    }
    case NodeMsg::Kind::kStop:
      if (stopping_) return;
      stopping_ = true;
      PlanStopAll();
      after_ = After::kReportTerminated;
      return;
    case NodeMsg::Kind::kRetry: {
      Child* c = Find(msg.text);
      if (!c || c->state != ChildState::kRestarting) return;
      Restart(msg.text, "retrying failed start", now);
      return;
    }
    case NodeMsg::Kind::kSpawned:
    case NodeMsg::Kind::kSpawnFailed:
    case NodeMsg::Kind::kReady:
    case NodeMsg::Kind::kTimer:
    case NodeMsg::Kind::kSubReady:
    case NodeMsg::Kind::kSubStartFailed:
      return;  // stale: the step that waited for it is over
  }
}

void SupervisorNode::OnChildExit(Child& c, bool normal, const std::string& why, Time now) {
  switch (c.spec.restart) {
    case RestartType::kTemporary:
      Erase(c.spec.id);  // temporary specs are deleted once the child is gone
      return;
    case RestartType::kTransient:
      if (normal) return;
      break;
    case RestartType::kPermanent:
      break;
  }
  Restart(c.spec.id, why, now);
}

void SupervisorNode::Restart(const std::string& id, const std::string& why, Time now) {
  if (!intensity_.Allow(now)) {
    GiveUp(id, now);
    return;
  }
  Child* trigger = Find(id);
  if (!trigger) return;
  trigger->restarts++;
  auto restarting = [&](const Child& c) {
    host_.Emit(TreeEvent{
        "restarting", c.spec.id, {}, {}, {}, c.spec.id == id ? why : "restarting with " + id});
  };
  if (spec_.strategy == Strategy::kOneForOne || spec_.strategy == Strategy::kSimpleOneForOne) {
    restarting(*trigger);
    plan_.push_back(Step{Step::Kind::kStart, id, StartMode::kRestart});
    return;
  }
  // one_for_all / rest_for_one: stop the group in reverse start order, then
  // start every non-temporary member in start order, including members that
  // were not running (operator-stopped, transient that exited normally).
  size_t from = 0;
  if (spec_.strategy == Strategy::kRestForOne) {
    while (from < children_.size() && children_[from].spec.id != id) ++from;
  }
  for (size_t i = children_.size(); i-- > from;) {
    plan_.push_back(Step{Step::Kind::kStop, children_[i].spec.id});
  }
  for (size_t i = from; i < children_.size(); ++i) {
    const Child& c = children_[i];
    if (c.spec.restart == RestartType::kTemporary) continue;  // stopped and deleted instead
    restarting(c);
    plan_.push_back(Step{Step::Kind::kStart, c.spec.id, StartMode::kRestart});
  }
}

void SupervisorNode::GiveUp(const std::string& offender, Time now) {
  (void)now;
  host_.Emit(TreeEvent{"gave_up",
                       spec_.id,
                       {},
                       {},
                       {},
                       "more than " + std::to_string(spec_.intensity) + " restarts in " +
                           std::to_string(spec_.period.count()) + "ms (last: " + offender + ")"});
  host_.Log(Level::kError, "supervisor '" + spec_.id + "' reached its restart intensity (" +
                               std::to_string(spec_.intensity) + " in " +
                               std::to_string(spec_.period.count()) + "ms); stopping its " +
                               "children and escalating");
  plan_.clear();
  stopping_ = true;
  gave_up_ = true;
  PlanStopAll();
  after_ = After::kReportTerminated;
}

void SupervisorNode::PlanStopAll() {
  if (spec_.strategy == Strategy::kSimpleOneForOne) {
    plan_.push_back(Step{Step::Kind::kStopAllParallel});
    return;
  }
  for (size_t i = children_.size(); i-- > 0;) {
    plan_.push_back(Step{Step::Kind::kStop, children_[i].spec.id});
  }
}

void SupervisorNode::Finish(Time now) {
  (void)now;
  After a = after_;
  after_ = After::kNothing;
  switch (a) {
    case After::kNothing:
      return;
    case After::kReportReady:
      host_.Emit(TreeEvent{"ready", spec_.id});
      host_.Ready(self_);
      return;
    case After::kReportStartFailed:
      terminated_ = true;
      host_.StartFailed(self_, start_failure_);
      return;
    case After::kReportTerminated:
      terminated_ = true;
      host_.Terminated(self_, gave_up_);
      return;
  }
}

// ---- steps -------------------------------------------------------------------

void SupervisorNode::Begin(Step& s, Time now) {
  switch (s.kind) {
    case Step::Kind::kStart: {
      Child* c = Find(s.id);
      // Gone, already running, or this subtree is being killed: an ancestor is
      // stopping it, so a restart in progress must not spawn anything new.
      if (!c || c->token != 0 || c->sub != 0 || brutal_) {
        step_.reset();
        return;
      }
      c->state = ChildState::kStarting;
      if (c->spec.is_supervisor) {
        host_.Emit(TreeEvent{"started", c->spec.id});
        c->sub = host_.StartSub(self_, c->spec.supervisor());
      } else {
        c->token = host_.Spawn(self_, c->spec.id, c->spec);
      }
      return;
    }
    case Step::Kind::kStop: {
      Child* c = Find(s.id);
      if (!c) {
        step_.reset();
        return;
      }
      if (c->token == 0 && c->sub == 0) {  // nothing running (stopped or restarting)
        StopDone(s, *c);
        return;
      }
      c->state = ChildState::kStopping;
      host_.Emit(
          TreeEvent{"stopping", c->spec.id, c->pid ? std::optional<int>(c->pid) : std::nullopt});
      if (c->sub != 0) {
        const ShutdownSpec& sd = c->spec.shutdown;
        bool kill_now = brutal_ || sd.kind == ShutdownSpec::Kind::kBrutalKill ||
                        (sd.kind == ShutdownSpec::Kind::kTimeout && sd.timeout.count() == 0);
        host_.Send(c->sub, NodeMsg{NodeMsg::Kind::kStop});
        if (kill_now) {
          host_.KillSubtree(c->sub);
        } else if (sd.kind == ShutdownSpec::Kind::kTimeout) {
          s.timer = host_.StartTimer(self_, sd.timeout);
        }
      } else {
        StopSignal(*c, c->spec.shutdown, &s.timer);
      }
      return;
    }
    case Step::Kind::kStopAllParallel: {
      const ShutdownSpec& sd = spec_.children.front().shutdown;
      for (Child& c : children_) {
        if (c.token == 0) continue;
        c.state = ChildState::kStopping;
        host_.Emit(TreeEvent{"stopping", c.spec.id, c.pid});
        s.waiting.insert(c.token);
        StopSignal(c, sd, nullptr);
      }
      if (s.waiting.empty()) {
        children_.clear();  // instances never outlive their supervisor's stop
        step_.reset();
        return;
      }
      if (sd.kind == ShutdownSpec::Kind::kTimeout && sd.timeout.count() > 0 && !brutal_) {
        s.timer = host_.StartTimer(self_, sd.timeout);  // one timer shared by all
      }
      return;
    }
  }
  (void)now;
}

void SupervisorNode::StopSignal(Child& c, const ShutdownSpec& sd, TimerToken* timer) {
  bool kill_now = brutal_ || sd.kind == ShutdownSpec::Kind::kBrutalKill ||
                  (sd.kind == ShutdownSpec::Kind::kTimeout && sd.timeout.count() == 0);
  host_.Signal(c.token, kill_now ? SIGKILL : SIGTERM);
  if (timer && !kill_now && sd.kind == ShutdownSpec::Kind::kTimeout) {
    *timer = host_.StartTimer(self_, sd.timeout);
  }
}

bool SupervisorNode::Wants(const Step& s, const NodeMsg& m) const {
  using K = NodeMsg::Kind;
  if (m.kind == K::kTimer) return s.timer != 0 && m.ref == s.timer;
  switch (s.kind) {
    case Step::Kind::kStart: {
      const Child* c = const_cast<SupervisorNode*>(this)->Find(s.id);
      if (!c) return false;
      if (c->spec.is_supervisor) {
        return (m.kind == K::kSubReady || m.kind == K::kSubStartFailed) && m.ref == c->sub;
      }
      return (m.kind == K::kSpawned || m.kind == K::kSpawnFailed || m.kind == K::kReady ||
              m.kind == K::kExit) &&
             m.ref == c->token;
    }
    case Step::Kind::kStop: {
      const Child* c = const_cast<SupervisorNode*>(this)->Find(s.id);
      if (!c) return false;
      if (c->sub != 0) return m.kind == K::kSubExited && m.ref == c->sub;
      return m.kind == K::kExit && m.ref == c->token;
    }
    case Step::Kind::kStopAllParallel:
      return m.kind == K::kExit && s.waiting.contains(m.ref);
  }
  return false;
}

void SupervisorNode::OnStepMsg(Step& s, NodeMsg m, Time now) {
  using K = NodeMsg::Kind;
  if (s.kind == Step::Kind::kStopAllParallel) {
    if (m.kind == K::kTimer) {
      s.timer = 0;
      for (Token t : s.waiting) host_.Signal(t, SIGKILL);
      return;
    }
    s.waiting.erase(m.ref);
    if (Child* c = FindByToken(m.ref)) {
      host_.Emit(TreeEvent{"stopped", c->spec.id, c->pid});
      c->token = 0;
      c->pid = 0;
      c->state = ChildState::kStopped;
      c->last_exit = m.exit;
    }
    if (s.waiting.empty()) {
      if (s.timer) host_.CancelTimer(s.timer);
      children_.clear();
      step_.reset();
    }
    return;
  }

  Child* c = Find(s.id);
  if (!c) {
    step_.reset();
    return;
  }

  if (s.kind == Step::Kind::kStop) {
    if (m.kind == K::kTimer) {  // shutdown timeout: kill
      s.timer = 0;
      if (c->sub != 0) {
        host_.Log(Level::kWarn, "supervisor '" + c->spec.id + "' did not stop in time; killing it");
        host_.KillSubtree(c->sub);
      } else {
        host_.Log(Level::kWarn, "child '" + c->spec.id + "' did not stop within " +
                                    std::to_string(c->spec.shutdown.timeout.count()) +
                                    "ms; sending SIGKILL");
        host_.Signal(c->token, SIGKILL);
      }
      return;
    }
    if (m.kind == K::kExit) c->last_exit = m.exit;
    StopDone(s, *c);
    return;
  }

  // kStart
  switch (m.kind) {
    case K::kSpawned:
      c->pid = m.pid;
      host_.Emit(TreeEvent{"started", c->spec.id, c->pid});
      if (c->spec.ready == ReadyMode::kExec) {
        StartSucceeded(s, now);
      } else {
        s.timer = host_.StartTimer(self_, c->spec.start_timeout);
      }
      return;
    case K::kSpawnFailed:
      c->token = 0;
      StartFailedStep(s, m.text);
      return;
    case K::kReady:
      if (s.killing) return;  // too late: it is being killed for its timeout
      StartSucceeded(s, now);
      return;
    case K::kExit:
      c->token = 0;
      c->pid = 0;
      c->last_exit = m.exit;
      StartFailedStep(s, s.killing ? s.failure : "exited before ready (" + m.exit.Describe() + ")");
      return;
    case K::kTimer:
      s.timer = 0;
      s.killing = true;
      s.failure = "not ready within " + std::to_string(c->spec.start_timeout.count()) + "ms";
      host_.Signal(c->token, SIGKILL);
      return;
    case K::kSubReady:
      StartSucceeded(s, now);
      return;
    case K::kSubStartFailed:
      c->sub = 0;
      StartFailedStep(s, m.text);
      return;
    default:
      return;
  }
}

void SupervisorNode::StartSucceeded(Step& s, Time now) {
  Child* c = Find(s.id);
  if (s.timer) host_.CancelTimer(s.timer);
  c->state = ChildState::kRunning;
  c->since = now;
  if (!c->spec.is_supervisor) {
    host_.Emit(TreeEvent{"ready", c->spec.id, c->pid});
  }
  step_.reset();
}

void SupervisorNode::StartFailedStep(Step& s, const std::string& reason) {
  Child* c = Find(s.id);
  if (s.timer) host_.CancelTimer(s.timer);
  std::string id = s.id;
  StartMode mode = s.mode;
  step_.reset();
  host_.Log(Level::kError, "child '" + id + "' failed to start: " + reason);
  plan_.clear();
  if (mode == StartMode::kInitial) {
    // OTP: no retry at init. Stop what started (reverse order) and fail.
    c->state = ChildState::kStopped;
    start_failure_ = "failed to start child '" + id + "': " + reason;
    PlanStopAll();
    after_ = After::kReportStartFailed;
    return;
  }
  // OTP: the child is `restarting` and a retry goes to the back of the
  // mailbox, so operator requests and a shutdown can get in between.
  c->state = ChildState::kRestarting;
  mailbox_.push_back(NodeMsg{NodeMsg::Kind::kRetry, 0, 0, {}, id});
}

void SupervisorNode::StopDone(Step& s, Child& c) {
  if (s.timer) host_.CancelTimer(s.timer);
  bool had_process = c.token != 0 || c.sub != 0;
  if (had_process)
    host_.Emit(TreeEvent{"stopped", c.spec.id, c.pid ? std::optional<int>(c.pid) : std::nullopt});
  c.token = 0;
  c.pid = 0;
  c.sub = 0;
  c.state = ChildState::kStopped;
  if (c.spec.restart == RestartType::kTemporary) Erase(c.spec.id);
  step_.reset();
}

}  // namespace sb::supervisor
