#include "supervisor/supervisor_node.h"

#include <signal.h>

#include <algorithm>

namespace sb::supervisor {

namespace {

using Level = action::Log::Level;

// Whether `m` is an M whose `field` is `value` (a message about that token,
// timer or child supervisor).
template <typename M, typename F, typename V>
bool IsAbout(const NodeMsg& m, F M::*field, V value) {
  const M* x = std::get_if<M>(&m);
  return x != nullptr && x->*field == value;
}

}  // namespace

std::optional<RequestId> OperatorRequest(const NodeMsg& m) {
  return std::visit(
      [](const auto& x) -> std::optional<RequestId> {
        if constexpr (requires { x.request; }) {
          return x.request;
        } else {
          return std::nullopt;
        }
      },
      m);
}

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
      for (const NodeMsg& m : mailbox_) {
        if (std::optional<RequestId> request = OperatorRequest(m)) {
          ReplyNow(*request, Status::Refused("supervisor '" + spec_.id + "' has terminated"));
        }
      }
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

void SupervisorNode::Handle(NodeMsg m, Time now) {
  if (std::optional<RequestId> request = OperatorRequest(m); request && stopping_) {
    ReplyNow(*request, Status::Refused("supervisor is stopping"));
    return;
  }
  std::visit(Overloaded{
                 [&](const msg::Init&) {
                   for (const Child& c : children_) {
                     plan_.push_back(Step{Step::Kind::kStart, c.spec.id, StartMode::kInitial});
                   }
                   after_ = After::kReportReady;
                 },
                 [&](const msg::Exit& e) {
                   Child* c = FindByToken(e.token);
                   if (!c) return;  // an incarnation already drained by a stop
                   // Backoff forgets past crashes once the child has stayed up for `max`.
                   if (c->spec.backoff && c->state == ChildState::kRunning &&
                       now - c->since >= c->spec.backoff->max) {
                     c->backoff_streak = 0;
                   }
                   c->token = 0;
                   c->pid = 0;
                   c->state = ChildState::kStopped;
                   c->last_exit = e.exit;
                   OnChildExit(*c, IsNormalExit(e.exit, c->spec), e.exit.Describe(), now);
                 },
                 [&](const msg::SubExited& e) {
                   Child* c = FindBySub(e.sub);
                   if (!c) return;
                   c->sub = 0;
                   c->state = ChildState::kStopped;
                   host_.Emit(TreeEvent{
                       .kind = EventKind::kExited, .id = c->spec.id, .reason = "gave up"});
                   // A supervisor that gave up exits with reason `shutdown`: normal.
                   OnChildExit(*c, true, "supervisor gave up", now);
                 },
                 [&](const msg::Stop&) {
                   if (stopping_) return;
                   stopping_ = true;
                   PlanStopAll();
                   after_ = After::kReportTerminated;
                 },
                 [&](const msg::Retry& r) {
                   Child* c = Find(r.id);
                   if (!c || c->state != ChildState::kRestarting) return;
                   Restart(r.id, "retrying failed start", now);
                 },
                 [&](const msg::Timer& t) {
                   auto it = backoff_timers_.find(t.timer);
                   if (it == backoff_timers_.end()) return;  // stale
                   std::string id = it->second;
                   backoff_timers_.erase(it);
                   Child* c = Find(id);
                   if (c && c->state == ChildState::kRestarting)
                     PlanRestart(id, "backoff elapsed", /*announced=*/true);
                 },
                 [&](const msg::OpStop& op) { HandleOpStop(op); },
                 [&](const msg::OpStart& op) { HandleOpStart(op); },
                 [&](const msg::OpRestart& op) { HandleOpRestart(op); },
                 [&](const msg::OpScale& op) { HandleScale(op); },
                 [&](const msg::OpReload& op) { HandleReload(op); },
                 [&](const msg::OpUpgrade& op) { HandleOpUpgrade(op); },
                 // Stale: the step that waited for these is over.
                 [](const msg::StatusLine&) {},
                 [](const msg::Spawned&) {},
                 [](const msg::SpawnFailed&) {},
                 [](const msg::Ready&) {},
                 [](const msg::SubReady&) {},
                 [](const msg::SubStartFailed&) {},
             },
             m);
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
  Millis delay = BackoffDelay(*trigger);
  if (delay.count() > 0) {
    // Counted now (intensity above); carried out when the timer fires. The
    // supervisor stays free meanwhile: siblings' events are not held up.
    trigger->state = ChildState::kRestarting;
    host_.Emit(TreeEvent{.kind = EventKind::kRestarting,
                         .id = id,
                         .reason = why + "; backoff " + std::to_string(delay.count()) + "ms"});
    backoff_timers_[host_.StartTimer(self_, delay)] = id;
    return;
  }
  PlanRestart(id, why, /*announced=*/false);
}

Millis SupervisorNode::BackoffDelay(Child& c) {
  if (!c.spec.backoff) return Millis{0};
  const BackoffSpec& b = *c.spec.backoff;
  double d = static_cast<double>(b.initial.count());
  for (int i = 0; i < c.backoff_streak && d < static_cast<double>(b.max.count()); ++i)
    d *= b.factor;
  c.backoff_streak++;
  return std::min(Millis{static_cast<int64_t>(d)}, b.max);
}

void SupervisorNode::PlanRestart(const std::string& id, const std::string& why, bool announced) {
  Child* trigger = Find(id);
  if (!trigger) return;
  auto restarting = [&](const Child& c) {
    if (announced && c.spec.id == id) return;  // said when the backoff delay began
    host_.Emit(TreeEvent{.kind = EventKind::kRestarting,
                         .id = c.spec.id,
                         .reason = c.spec.id == id ? why : "restarting with " + id});
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

// ---- operator requests ---------------------------------------------------------

void SupervisorNode::ReplyNow(RequestId request, Status status) {
  host_.Reply(action::Reply{request, std::move(status)});
}

SupervisorNode::Child* SupervisorNode::OperatorTarget(RequestId request, const std::string& id) {
  Child* c = Find(id);
  if (!c) ReplyNow(request, Status::NotFound("no child '" + id + "' in '" + spec_.id + "'"));
  return c;
}

void SupervisorNode::PlanReply(RequestId request) {
  Step reply{Step::Kind::kReply};
  reply.request = request;
  plan_.push_back(std::move(reply));
}

void SupervisorNode::HandleOpStop(const msg::OpStop& m) {
  Child* c = OperatorTarget(m.request, m.id);
  if (!c) return;
  // OTP terminate_child: not a crash, not counted; a permanent child
  // stays stopped until started; a temporary one is forgotten.
  if (c->token == 0 && c->sub == 0) {
    c->state = ChildState::kStopped;  // also ends a retry loop or a backoff wait
    ReplyNow(m.request, Status::Ok());
    return;
  }
  plan_.push_back(Step{Step::Kind::kStop, m.id});
  PlanReply(m.request);
}

void SupervisorNode::HandleOpStart(const msg::OpStart& m) {
  Child* c = OperatorTarget(m.request, m.id);
  if (!c) return;
  if (c->token != 0 || c->sub != 0) {
    ReplyNow(m.request, Status::Refused("'" + m.id + "' is already running"));
    return;
  }
  plan_.push_back(Step{Step::Kind::kStart, m.id, StartMode::kOperator, m.request});
  PlanReply(m.request);
}

void SupervisorNode::HandleOpRestart(const msg::OpRestart& m) {
  Child* c = OperatorTarget(m.request, m.id);
  if (!c) return;
  if (c->token != 0 || c->sub != 0) plan_.push_back(Step{Step::Kind::kStop, m.id});
  plan_.push_back(Step{Step::Kind::kStart, m.id, StartMode::kOperator, m.request});
  PlanReply(m.request);
}

void SupervisorNode::HandleScale(const msg::OpScale& m) {
  const int n = m.count;
  const bool simple = spec_.strategy == Strategy::kSimpleOneForOne && m.id == spec_.id;
  const ChildSpec* tmpl = nullptr;
  if (simple) {
    tmpl = &spec_.children.front();
  } else {
    for (const ChildSpec& t : spec_.replica_sets)
      if (t.id == m.id) tmpl = &t;
  }
  if (!tmpl) {
    ReplyNow(m.request, Status::NotFound("'" + m.id + "' is not a replica set or a " +
                                         "simple_one_for_one supervisor"));
    return;
  }
  const std::string set_id = tmpl->id;
  // Members in index order; where new ones go (after the last member).
  std::vector<int> members;
  size_t insert_at = children_.size();
  for (size_t i = 0; i < children_.size(); ++i) {
    const auto& r = children_[i].spec.replica;
    if (r && r->set_id == set_id) {
      members.push_back(r->index);
      insert_at = i + 1;
    }
  }
  std::sort(members.begin(), members.end());
  int next_index = members.empty() ? 0 : members.back() + 1;
  Step reply{Step::Kind::kReply};
  reply.request = m.request;
  int count = static_cast<int>(members.size());
  std::vector<Child> fresh;
  for (; count < n; ++count) {
    fresh.push_back(Child{InstantiateReplica(*tmpl, next_index++)});
    reply.added.push_back(fresh.back().spec.id);
  }
  children_.insert(children_.begin() + static_cast<std::ptrdiff_t>(insert_at), fresh.begin(),
                   fresh.end());
  for (const std::string& id : reply.added) {
    plan_.push_back(Step{Step::Kind::kStart, id, StartMode::kOperator, m.request});
  }
  // Scale down from the highest index, each with its own shutdown.
  for (size_t i = members.size(); i-- > 0 && count > n; --count) {
    std::string id = set_id + "." + std::to_string(members[i]);
    plan_.push_back(Step{Step::Kind::kStop, id});
    plan_.push_back(Step{Step::Kind::kForget, id});
    reply.removed.push_back(id);
  }
  if (simple) spec_.instances = n;
  plan_.push_back(std::move(reply));
}

void SupervisorNode::HandleReload(const msg::OpReload& m) {
  const ReloadPart& r = *m.part;
  for (const std::string& id : r.removed) {
    plan_.push_back(Step{Step::Kind::kStop, id});
    plan_.push_back(Step{Step::Kind::kForget, id});
  }
  Step adopt{Step::Kind::kAdopt};
  adopt.reload = m.part;
  plan_.push_back(std::move(adopt));
  for (const std::string& id : r.changed) {  // one at a time: stop, then start again
    plan_.push_back(Step{Step::Kind::kStop, id});
    plan_.push_back(Step{Step::Kind::kStart, id, StartMode::kOperator, m.request});
  }
  for (const std::string& id : r.upgraded) {  // one at a time, as `changed`
    Step upgrade{Step::Kind::kUpgrade, id};
    upgrade.request = m.request;
    upgrade.from_reload = true;
    plan_.push_back(std::move(upgrade));
  }
  for (const std::string& id : r.added) {
    plan_.push_back(Step{Step::Kind::kStart, id, StartMode::kOperator, m.request});
  }
  PlanReply(m.request);
}

void SupervisorNode::HandleOpUpgrade(const msg::OpUpgrade& m) {
  Child* c = OperatorTarget(m.request, m.id);
  if (!c) return;
  if (c->spec.is_supervisor || c->spec.upgrade != UpgradeMode::kHandoff) {
    ReplyNow(m.request, Status::Refused("'" + m.id + "' is not a worker with upgrade: handoff " +
                                        "(restart it instead)"));
    return;
  }
  if (c->token == 0 || c->state != ChildState::kRunning) {
    ReplyNow(m.request,
             Status::Refused("'" + m.id + "' is not running (" + ChildStateName(c->state) + ")"));
    return;
  }
  Step upgrade{Step::Kind::kUpgrade, m.id};
  upgrade.request = m.request;
  plan_.push_back(std::move(upgrade));
}

void SupervisorNode::Adopt(const ReloadPart& r) {
  spec_.strategy = r.next.strategy;
  spec_.intensity = r.next.intensity;
  spec_.period = r.next.period;
  spec_.replica_sets = r.next.replica_sets;
  intensity_.Reconfigure(spec_.intensity, spec_.period);
  if (spec_.strategy == Strategy::kSimpleOneForOne) {
    spec_.children = r.next.children;  // the template
    spec_.instances = r.next.instances;
    const ChildSpec& tmpl = spec_.children.front();
    auto index_of = [&](const std::string& id) { return std::stoi(id.substr(tmpl.id.size() + 1)); };
    for (const std::string& id : r.changed) {
      if (Child* c = Find(id)) c->spec = InstantiateReplica(tmpl, index_of(id));
    }
    for (const std::string& id : r.added) {
      if (!Find(id)) children_.push_back(Child{InstantiateReplica(tmpl, index_of(id))});
    }
    return;
  }
  spec_.children = r.next.children;
  std::vector<Child> ordered;
  for (const ChildSpec& cs : r.next.children) {
    Child* existing = Find(cs.id);
    if (existing == nullptr) {
      ordered.push_back(Child{cs});
      continue;
    }
    Child moved = std::move(*existing);
    existing->spec.id.clear();  // taken
    if (moved.spec.is_supervisor && cs.is_supervisor && moved.sub != 0) {
      // A running sub-supervisor keeps its own spec (it gets its own part);
      // only the fields its parent uses change here.
      moved.spec.restart = cs.restart;
      moved.spec.shutdown = cs.shutdown;
    } else {
      moved.spec = cs;
    }
    ordered.push_back(std::move(moved));
  }
  for (Child& c : children_) {  // anything the new spec does not name stays, last
    if (!c.spec.id.empty()) ordered.push_back(std::move(c));
  }
  children_ = std::move(ordered);
}

SupervisorSpec SupervisorNode::RunningSpec() const {
  SupervisorSpec out = spec_;
  if (spec_.strategy == Strategy::kSimpleOneForOne) {
    out.instances = static_cast<int>(children_.size());
    return out;
  }
  out.children.clear();
  for (const Child& c : children_) out.children.push_back(c.spec);
  return out;
}

void SupervisorNode::ClearPlan(const Status& why, RequestId answered) {
  for (const Step& st : plan_) {
    if (st.kind == Step::Kind::kReply && st.request != answered) ReplyNow(st.request, why);
  }
  plan_.clear();
}

void SupervisorNode::GiveUp(const std::string& offender, Time now) {
  (void)now;
  host_.Emit(TreeEvent{.kind = EventKind::kGaveUp,
                       .id = spec_.id,
                       .reason = "more than " + std::to_string(spec_.intensity) + " restarts in " +
                                 std::to_string(spec_.period.count()) + "ms (last: " + offender +
                                 ")"});
  host_.Log(Level::kError, "supervisor '" + spec_.id + "' reached its restart intensity (" +
                               std::to_string(spec_.intensity) + " in " +
                               std::to_string(spec_.period.count()) + "ms); stopping its " +
                               "children and escalating");
  ClearPlan(Status::Refused("supervisor '" + spec_.id + "' gave up"));
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
      host_.Emit(TreeEvent{.kind = EventKind::kReady, .id = spec_.id});
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
    case Step::Kind::kForget: {
      std::string id = s.id;
      step_.reset();
      Erase(id);
      return;
    }
    case Step::Kind::kAdopt: {
      auto part = s.reload;
      step_.reset();
      Adopt(*part);
      return;
    }
    case Step::Kind::kReply: {
      action::Reply r{s.request, Status::Ok(), s.added, s.removed};
      step_.reset();
      host_.Reply(std::move(r));
      return;
    }
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
        host_.Emit(TreeEvent{.kind = EventKind::kStarted, .id = c->spec.id});
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
      host_.Emit(TreeEvent{.kind = EventKind::kStopping,
                           .id = c->spec.id,
                           .pid = c->pid ? std::optional<int>(c->pid) : std::nullopt});
      if (c->sub != 0) {
        const ShutdownSpec& sd = c->spec.shutdown;
        bool kill_now = brutal_ || sd.kind == ShutdownSpec::Kind::kBrutalKill ||
                        (sd.kind == ShutdownSpec::Kind::kTimeout && sd.timeout.count() == 0);
        host_.Send(c->sub, msg::Stop{});
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
    case Step::Kind::kUpgrade: {
      Child* c = Find(s.id);
      const bool running = c && c->token != 0 && c->state == ChildState::kRunning;
      if (!running || brutal_) {
        // A reload upgrades what runs; a stopped child starts with the new
        // spec anyway. An operator hears that there was nothing to hand over.
        RequestId request = s.request;
        bool quiet = s.from_reload;
        std::string id = s.id;
        step_.reset();
        if (!quiet) ReplyNow(request, Status::Refused("'" + id + "' is not running"));
        return;
      }
      ChildSpec next = c->spec;
      // The loader refuses this name in a handoff child's env: it is ours alone.
      next.env.emplace_back("SWITCHBOARD_HANDOFF", "receive");
      c->state = ChildState::kUpgrading;
      host_.Emit(TreeEvent{.kind = EventKind::kUpgrading,
                           .id = c->spec.id,
                           .pid = c->pid,
                           .reason = "starting a new process to hand over to"});
      c->next_token = host_.Spawn(self_, c->spec.id, next);
      return;
    }
    case Step::Kind::kStopAllParallel: {
      const ShutdownSpec& sd = spec_.children.front().shutdown;
      for (Child& c : children_) {
        if (c.token == 0) continue;
        c.state = ChildState::kStopping;
        host_.Emit(TreeEvent{.kind = EventKind::kStopping, .id = c.spec.id, .pid = c.pid});
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
  if (const auto* t = std::get_if<msg::Timer>(&m)) return s.timer != 0 && t->timer == s.timer;
  switch (s.kind) {
    case Step::Kind::kStart: {
      const Child* c = const_cast<SupervisorNode*>(this)->Find(s.id);
      if (!c) return false;
      if (c->spec.is_supervisor) {
        return IsAbout(m, &msg::SubReady::sub, c->sub) ||
               IsAbout(m, &msg::SubStartFailed::sub, c->sub);
      }
      return IsAbout(m, &msg::Spawned::token, c->token) ||
             IsAbout(m, &msg::SpawnFailed::token, c->token) ||
             IsAbout(m, &msg::Ready::token, c->token) || IsAbout(m, &msg::Exit::token, c->token);
    }
    case Step::Kind::kStop: {
      const Child* c = const_cast<SupervisorNode*>(this)->Find(s.id);
      if (!c) return false;
      if (c->sub != 0) return IsAbout(m, &msg::SubExited::sub, c->sub);
      return IsAbout(m, &msg::Exit::token, c->token);
    }
    case Step::Kind::kStopAllParallel: {
      const auto* e = std::get_if<msg::Exit>(&m);
      return e != nullptr && s.waiting.contains(e->token);
    }
    case Step::Kind::kUpgrade: {
      const Child* c = const_cast<SupervisorNode*>(this)->Find(s.id);
      if (!c) return false;
      if (s.taken_over) return IsAbout(m, &msg::StatusLine::token, c->token);
      return IsAbout(m, &msg::Spawned::token, c->next_token) ||
             IsAbout(m, &msg::SpawnFailed::token, c->next_token) ||
             IsAbout(m, &msg::Ready::token, c->next_token) ||
             IsAbout(m, &msg::StatusLine::token, c->next_token) ||
             IsAbout(m, &msg::Exit::token, c->next_token) ||
             IsAbout(m, &msg::Exit::token, c->token);
    }
    case Step::Kind::kForget:
    case Step::Kind::kAdopt:
    case Step::Kind::kReply:
      return false;  // complete as soon as they begin
  }
  return false;
}

void SupervisorNode::OnStepMsg(Step& s, NodeMsg m, Time now) {
  if (s.kind == Step::Kind::kStopAllParallel) {
    if (std::holds_alternative<msg::Timer>(m)) {
      s.timer = 0;
      for (Token t : s.waiting) host_.Signal(t, SIGKILL);
      return;
    }
    const msg::Exit& e = std::get<msg::Exit>(m);  // the only other message Wants() lets in
    s.waiting.erase(e.token);
    if (Child* c = FindByToken(e.token)) {
      host_.Emit(TreeEvent{.kind = EventKind::kStopped, .id = c->spec.id, .pid = c->pid});
      c->token = 0;
      c->pid = 0;
      c->state = ChildState::kStopped;
      c->last_exit = e.exit;
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

  if (s.kind == Step::Kind::kUpgrade) {
    OnUpgradeMsg(s, *c, std::move(m), now);
    return;
  }

  if (s.kind == Step::Kind::kStop) {
    if (std::holds_alternative<msg::Timer>(m)) {  // shutdown timeout: kill
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
    if (const auto* e = std::get_if<msg::Exit>(&m)) c->last_exit = e->exit;
    StopDone(s, *c);
    return;
  }

  // kStart
  std::visit(
      Overloaded{
          [&](const msg::Spawned& sp) {
            c->pid = sp.pid;
            host_.Emit(TreeEvent{.kind = EventKind::kStarted, .id = c->spec.id, .pid = c->pid});
            if (c->spec.ready == ReadyMode::kExec) {
              StartSucceeded(s, now);
            } else {
              s.timer = host_.StartTimer(self_, c->spec.start_timeout);
            }
          },
          [&](const msg::SpawnFailed& f) {
            c->token = 0;
            StartFailedStep(s, f.error);
          },
          [&](const msg::Ready&) {
            if (s.killing) return;  // too late: it is being killed for its timeout
            StartSucceeded(s, now);
          },
          [&](const msg::Exit& e) {
            c->token = 0;
            c->pid = 0;
            c->last_exit = e.exit;
            StartFailedStep(
                s, s.killing ? s.failure : "exited before ready (" + e.exit.Describe() + ")");
          },
          [&](const msg::Timer&) {
            s.timer = 0;
            s.killing = true;
            s.failure = "not ready within " + std::to_string(c->spec.start_timeout.count()) + "ms";
            host_.Signal(c->token, SIGKILL);
          },
          [&](const msg::SubReady&) { StartSucceeded(s, now); },
          [&](const msg::SubStartFailed& f) {
            c->sub = 0;
            // OTP: that incarnation exits {shutdown, {failed_to_start_child, Id, Reason}},
            // reported before the parent acts on it (a retry, or its own failed start).
            host_.Emit(TreeEvent{.kind = EventKind::kExited, .id = c->spec.id, .reason = f.reason});
            StartFailedStep(s, "supervisor '" + c->spec.id + "': " + f.reason);
          },
          [](const auto&) {},  // Wants() lets nothing else in during a start
      },
      m);
}

void SupervisorNode::StartSucceeded(Step& s, Time now) {
  Child* c = Find(s.id);
  if (s.timer) host_.CancelTimer(s.timer);
  c->state = ChildState::kRunning;
  c->since = now;
  if (!c->spec.is_supervisor) {
    host_.Emit(TreeEvent{.kind = EventKind::kReady, .id = c->spec.id, .pid = c->pid});
  }
  step_.reset();
}

void SupervisorNode::StartFailedStep(Step& s, const std::string& reason) {
  Child* c = Find(s.id);
  if (s.timer) host_.CancelTimer(s.timer);
  std::string id = s.id;
  StartMode mode = s.mode;
  RequestId request = s.request;
  step_.reset();
  host_.Log(Level::kError, "child '" + id + "' failed to start: " + reason);
  if (mode == StartMode::kOperator) {
    // Not a crash: the child stays stopped and the operator hears why.
    c->state = ChildState::kStopped;
    Status failed = Status::Refused("child '" + id + "' failed to start: " + reason);
    ClearPlan(failed, request);
    ReplyNow(request, failed);
    return;
  }
  ClearPlan(Status::Refused("child '" + id + "' failed to start: " + reason));
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
  mailbox_.push_back(msg::Retry{id});
}

void SupervisorNode::StopDone(Step& s, Child& c) {
  if (s.timer) host_.CancelTimer(s.timer);
  bool had_process = c.token != 0 || c.sub != 0;
  if (had_process)
    host_.Emit(TreeEvent{.kind = EventKind::kStopped,
                         .id = c.spec.id,
                         .pid = c.pid ? std::optional<int>(c.pid) : std::nullopt});
  c.token = 0;
  c.pid = 0;
  c.sub = 0;
  c.state = ChildState::kStopped;
  if (c.spec.restart == RestartType::kTemporary) Erase(c.spec.id);
  step_.reset();
}

// ---- upgrade (docs/UPGRADE.md, "The daemon ↔ shard contract") ---------------

void SupervisorNode::OnUpgradeMsg(Step& s, Child& c, NodeMsg m, Time now) {
  if (const auto* line = std::get_if<msg::StatusLine>(&m)) {
    if (std::optional<UpgradeOutcome> report = ParseUpgradedStatus(line->text)) s.report = report;
    if (s.taken_over && s.report) UpgradeDone(s, c);
    return;
  }
  if (s.taken_over) {  // only the report's wait timer is left
    s.timer = 0;
    UpgradeDone(s, c);
    return;
  }
  std::visit(
      Overloaded{
          [&](const msg::Spawned& sp) {
            c.next_pid = sp.pid;
            host_.Log(Level::kInfo, "child '" + c.spec.id + "': new process " +
                                        std::to_string(sp.pid) + " started to take over from " +
                                        std::to_string(c.pid));
            s.timer = host_.StartTimer(self_, c.spec.start_timeout);
          },
          [&](const msg::SpawnFailed& f) {
            c.next_token = 0;
            UpgradeFailed(s, c, "the new process did not start: " + f.error);
          },
          [&](const msg::Ready&) {
            // Too late when it is being killed for its timeout, or the old
            // process is gone and there is nobody to hand over.
            if (s.killing || s.old_exit) return;
            if (s.timer) host_.CancelTimer(s.timer);
            s.timer = 0;
            s.signalled = true;
            host_.Signal(c.token, SIGUSR2);
          },
          [&](const msg::Timer&) {  // the new process's start_timeout
            s.timer = 0;
            s.killing = true;
            s.failure = "the new process was not ready within " +
                        std::to_string(c.spec.start_timeout.count()) + "ms";
            host_.Signal(c.next_token, SIGKILL);
          },
          [&](const msg::Exit& e) {
            if (e.token == c.next_token) {
              c.next_token = 0;
              c.next_pid = 0;
              if (s.old_exit) {
                // Killed because the old process ended before it was told to
                // hand over: nothing moved; that exit is the child's own.
                ExitInfo old = *s.old_exit;
                UpgradeFailed(s, c,
                              "the old process ended before the hand-off (" + old.Describe() + ")");
                c.token = 0;
                c.pid = 0;
                c.state = ChildState::kStopped;
                c.last_exit = old;
                OnChildExit(c, IsNormalExit(old, c.spec), old.Describe(), now);
                return;
              }
              UpgradeFailed(s, c,
                            s.killing ? s.failure
                                      : "the new process exited before the hand-off (" +
                                            e.exit.Describe() + ")");
              return;
            }
            // The old process.
            if (!s.signalled) {
              s.old_exit = e.exit;
              if (s.timer) host_.CancelTimer(s.timer);
              s.timer = 0;
              host_.Signal(c.next_token, SIGKILL);
              return;
            }
            // After SIGUSR2: exit 0 is a hand-off done; any other end leaves
            // the new process with what it received (contract, point 8).
            if (e.exit.signal != 0 || e.exit.status != 0) {
              s.note = "the old process ended mid-hand-off (" + e.exit.Describe() + ")";
              host_.Log(Level::kWarn, "child '" + c.spec.id + "': " + s.note +
                                          "; the new process keeps what it received");
            }
            c.token = c.next_token;
            c.pid = c.next_pid;
            c.next_token = 0;
            c.next_pid = 0;
            c.since = now;
            s.taken_over = true;
            if (s.report) {
              UpgradeDone(s, c);
            } else {
              s.timer = host_.StartTimer(self_, kUpgradeReportWait);
            }
          },
          [](const auto&) {},  // Wants() lets nothing else in during an upgrade
      },
      m);
}

void SupervisorNode::UpgradeDone(Step& s, Child& c) {
  if (s.timer) host_.CancelTimer(s.timer);
  c.state = ChildState::kRunning;
  UpgradeOutcome out = s.report.value_or(UpgradeOutcome{});
  out.id = c.spec.id;
  out.pid = c.pid;
  host_.Emit(TreeEvent{.kind = EventKind::kUpgraded,
                       .id = c.spec.id,
                       .pid = c.pid,
                       .reason = s.note,
                       .connections = out.connections,
                       .ms = out.ms});
  const bool from_reload = s.from_reload;
  const RequestId request = s.request;
  step_.reset();
  if (!from_reload)
    host_.Reply(
        action::Reply{.request = request, .status = Status::Ok(), .upgraded = {std::move(out)}});
}

void SupervisorNode::UpgradeFailed(Step& s, Child& c, const std::string& reason) {
  if (s.timer) host_.CancelTimer(s.timer);
  c.state = ChildState::kRunning;
  host_.Emit(TreeEvent{.kind = EventKind::kUpgradeFailed,
                       .id = c.spec.id,
                       .pid = c.pid ? std::optional<int>(c.pid) : std::nullopt,
                       .reason = reason});
  host_.Log(Level::kError, "child '" + c.spec.id + "': upgrade failed: " + reason);
  const bool from_reload = s.from_reload;
  const RequestId request = s.request;
  Status failed = Status::Refused("upgrade of '" + c.spec.id + "' failed: " + reason);
  step_.reset();
  // A reload stops at it, as at a failed start: what follows is not applied.
  if (from_reload) ClearPlan(failed, request);
  ReplyNow(request, failed);
}

}  // namespace sb::supervisor
