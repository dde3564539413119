#include "supervisor/reload_diff.h"

#include <algorithm>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "supervisor/duration.h"

namespace sb::supervisor {
namespace {

bool IsSimple(const SupervisorSpec& s) { return s.strategy == Strategy::kSimpleOneForOne; }

std::string Quote(const std::string& s) { return "'" + s + "'"; }

std::string Listen(const SocketSpec& s) {
  const bool ipv6 = s.host.find(':') != std::string::npos;
  return (ipv6 ? "[" + s.host + "]" : s.host) + ":" + std::to_string(s.port);
}

std::string Join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (const std::string& item : items) {
    if (!out.empty()) out += sep;
    out += item;
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> SortedEnv(const ChildSpec& c) {
  std::vector<std::pair<std::string, std::string>> env = c.env;
  std::sort(env.begin(), env.end());
  return env;
}

std::vector<int> SortedCodes(const ChildSpec& c) {
  std::vector<int> codes = c.success_exit_codes;
  std::sort(codes.begin(), codes.end());
  codes.erase(std::unique(codes.begin(), codes.end()), codes.end());
  return codes;
}

// The YAML keys whose values differ between two versions of one worker. Env
// names are unique and exit codes form a set, so a reordered map or list in
// the file is not a change and must not cost a restart.
std::vector<std::string> WorkerDiff(const ChildSpec& a, const ChildSpec& b) {
  std::vector<std::string> keys;
  if (a.command != b.command) keys.push_back("command");
  if (SortedEnv(a) != SortedEnv(b)) keys.push_back("env");
  if (a.sockets != b.sockets) keys.push_back("sockets");
  if (a.ready != b.ready) keys.push_back("ready");
  if (a.start_timeout != b.start_timeout) keys.push_back("start_timeout");
  if (SortedCodes(a) != SortedCodes(b)) keys.push_back("success_exit_codes");
  if (a.backoff != b.backoff) keys.push_back("backoff");
  if (a.upgrade != b.upgrade) keys.push_back("upgrade");
  if (a.metrics != b.metrics) keys.push_back("metrics");
  if (a.restart != b.restart) keys.push_back("restart");
  if (a.shutdown != b.shutdown) keys.push_back("shutdown");
  if (a.replica != b.replica) keys.push_back("replica");
  return keys;
}

// A worker marked upgrade: handoff (before and after) whose new spec differs
// only in what a new process picks up, its command and environment, is
// handed over to one (docs/UPGRADE.md) instead of restarted. Anything else
// (sockets, readiness, restart policy, ...) still costs a restart.
bool HandsOver(const ChildSpec& a, const ChildSpec& b, const std::vector<std::string>& diff) {
  if (a.upgrade != UpgradeMode::kHandoff || b.upgrade != UpgradeMode::kHandoff) return false;
  return std::all_of(diff.begin(), diff.end(),
                     [](const std::string& k) { return k == "command" || k == "env"; });
}

std::string Reason(const std::vector<std::string>& keys) { return Join(keys, ", ") + " changed"; }

sb::Status Refused(const std::string& file, const std::string& key, const std::string& what) {
  return sb::Status::Refused(file + ": key '" + key + "': " + what);
}

// Diffs one supervisor present in both trees (same id, same position) and
// appends its plan, if it has a change, then the plans of its sub-supervisors.
class SupervisorDiff {
 public:
  SupervisorDiff(const std::string& file, std::vector<SupervisorPlan>* out)
      : file_(file), out_(out) {}

  sb::Status Run(const SupervisorSpec& run, const SupervisorSpec& next, bool is_root) {
    SupervisorPlan plan;
    plan.id = next.id;
    plan.next = next;
    if (run.strategy != next.strategy) plan.changed_flags.push_back("strategy");
    if (run.intensity != next.intensity) plan.changed_flags.push_back("intensity");
    if (run.period != next.period) plan.changed_flags.push_back("period");

    std::vector<SupervisorPlan> subs;
    sb::Status status =
        IsSimple(next) ? Instances(run, next, is_root, &plan) : Children(run, next, &plan, &subs);
    if (!status.ok()) return status;
    ReplicaSets(run, next, &plan);

    plan.flags_changed = !plan.changed_flags.empty();
    if (!plan.empty()) out_->push_back(std::move(plan));
    for (SupervisorPlan& sub : subs) out_->push_back(std::move(sub));
    return sb::Status::Ok();
  }

 private:
  // simple_one_for_one: instances are "<template id>.<index>", 0..instances-1.
  sb::Status Instances(const SupervisorSpec& run, const SupervisorSpec& next, bool is_root,
                       SupervisorPlan* plan) {
    if (run.children.size() != 1 || next.children.size() != 1) {
      return sb::Status::Internal("simple_one_for_one supervisor " + Quote(next.id) +
                                  " must hold exactly one template");
    }
    const ChildSpec& old_tmpl = run.children.front();
    const ChildSpec& new_tmpl = next.children.front();
    if (old_tmpl.id != new_tmpl.id) {
      // Replica expansion hides a sub-supervisor's YAML position, so its key
      // is named relative to its id.
      const std::string key = is_root ? "key 'supervisor.children[0].id'"
                                      : "key 'children[0].id' of supervisor " + Quote(next.id);
      return sb::Status::Refused(
          file_ + ": " + key + ": the simple_one_for_one template id changed from " +
          Quote(old_tmpl.id) + " to " + Quote(new_tmpl.id) +
          "; running instances are named after it (restart the daemon, or give the supervisor a "
          "new id so that it is replaced whole)");
    }
    const std::vector<std::string> diff = WorkerDiff(old_tmpl, new_tmpl);
    if (!diff.empty()) {
      plan->changed_flags.push_back("template");
      plan->reasons[new_tmpl.id] = Reason(diff);
    }
    auto instance = [&](int i) { return new_tmpl.id + "." + std::to_string(i); };
    for (int i = run.instances - 1; i >= next.instances; --i) {
      plan->removed.push_back(instance(i));
    }
    if (!diff.empty()) {
      const bool hand_over = HandsOver(old_tmpl, new_tmpl, diff);
      for (int i = 0; i < std::min(run.instances, next.instances); ++i) {
        (hand_over ? plan->upgraded : plan->changed).push_back(instance(i));
        plan->reasons[instance(i)] = Reason(diff);
      }
    }
    for (int i = std::max(run.instances, 0); i < next.instances; ++i) {
      plan->added.push_back(instance(i));
    }
    return sb::Status::Ok();
  }

  sb::Status Children(const SupervisorSpec& run, const SupervisorSpec& next, SupervisorPlan* plan,
                      std::vector<SupervisorPlan>* subs) {
    std::unordered_map<std::string, const ChildSpec*> run_by_id;
    std::unordered_map<std::string, const ChildSpec*> next_by_id;
    for (const ChildSpec& c : run.children) {
      if (c.is_supervisor && c.sub.size() != 1) return BadSupervisorChild(c);
      run_by_id[c.id] = &c;
    }
    for (const ChildSpec& c : next.children) {
      if (c.is_supervisor && c.sub.size() != 1) return BadSupervisorChild(c);
      next_by_id[c.id] = &c;
    }
    // A child is kept when the other side has the same id with the same type;
    // anything else is a stop plus a start.
    auto counterpart = [](const ChildSpec& c,
                          const std::unordered_map<std::string, const ChildSpec*>& other) {
      auto it = other.find(c.id);
      return it != other.end() && it->second->is_supervisor == c.is_supervisor ? it->second
                                                                               : nullptr;
    };

    std::vector<std::string> kept_in_run_order;
    for (auto it = run.children.rbegin(); it != run.children.rend(); ++it) {
      if (counterpart(*it, next_by_id) == nullptr) plan->removed.push_back(it->id);
    }
    for (const ChildSpec& c : run.children) {
      if (counterpart(c, next_by_id) != nullptr) kept_in_run_order.push_back(c.id);
    }

    std::vector<std::string> kept_in_next_order;
    for (const ChildSpec& c : next.children) {
      const ChildSpec* old = counterpart(c, run_by_id);
      if (old == nullptr) {
        plan->added.push_back(c.id);
        continue;
      }
      kept_in_next_order.push_back(c.id);
      if (!c.is_supervisor) {
        const std::vector<std::string> diff = WorkerDiff(*old, c);
        if (!diff.empty()) {
          (HandsOver(*old, c, diff) ? plan->upgraded : plan->changed).push_back(c.id);
          plan->reasons[c.id] = Reason(diff);
        }
        continue;
      }
      const SupervisorSpec& old_sub = old->supervisor();
      const SupervisorSpec& new_sub = c.supervisor();
      // A simple_one_for_one supervisor holds instances of a template, any
      // other holds a fixed list: no in-place step turns one into the other.
      if (IsSimple(old_sub) != IsSimple(new_sub)) {
        plan->changed.push_back(c.id);
        plan->reasons[c.id] = std::string("strategy changed from ") +
                              StrategyName(old_sub.strategy) + " to " +
                              StrategyName(new_sub.strategy);
        continue;
      }
      std::vector<std::string> own;
      if (old->restart != c.restart) own.push_back("restart");
      if (old->shutdown != c.shutdown) own.push_back("shutdown");
      if (!own.empty()) {
        plan->updated.push_back(c.id);
        plan->reasons[c.id] = Reason(own);
      }
      SupervisorDiff inner(file_, subs);
      sb::Status status = inner.Run(old_sub, new_sub, /*is_root=*/false);
      if (!status.ok()) return status;
    }
    plan->order_changed = kept_in_run_order != kept_in_next_order;
    return sb::Status::Ok();
  }

  static void ReplicaSets(const SupervisorSpec& run, const SupervisorSpec& next,
                          SupervisorPlan* plan) {
    auto find = [](const std::vector<ChildSpec>& sets, const std::string& id) -> const ChildSpec* {
      for (const ChildSpec& s : sets) {
        if (s.id == id) return &s;
      }
      return nullptr;
    };
    for (const ChildSpec& set : next.replica_sets) {
      const ChildSpec* old = find(run.replica_sets, set.id);
      if (old == nullptr || !WorkerDiff(*old, set).empty()) {
        plan->replica_sets_updated.push_back(set.id);
      }
    }
    for (const ChildSpec& set : run.replica_sets) {
      if (find(next.replica_sets, set.id) == nullptr) plan->replica_sets_updated.push_back(set.id);
    }
  }

  static sb::Status BadSupervisorChild(const ChildSpec& c) {
    return sb::Status::Internal("supervisor child " + Quote(c.id) +
                                " must hold exactly one supervisor spec");
  }

  const std::string& file_;
  std::vector<SupervisorPlan>* out_;
};

sb::Status CheckNode(const TreeSpec& running, const TreeSpec& next) {
  const NodeSpec& a = running.node;
  const NodeSpec& b = next.node;
  if (a.name != b.name) {
    return Refused(next.file, "node.name",
                   "changed from " + Quote(a.name) + " to " + Quote(b.name) +
                       "; a running node keeps its name (restart the daemon to rename it)");
  }
  if (a.control != b.control) {
    return Refused(next.file, "node.control",
                   "changed from " + Quote(a.control) + " to " + Quote(b.control) +
                       "; the control socket of a running node cannot move (restart the daemon)");
  }
  return sb::Status::Ok();
}

sb::Status DiffSockets(const TreeSpec& running, const TreeSpec& next, ReloadPlan* plan) {
  for (size_t i = 0; i < next.sockets.size(); ++i) {
    const SocketSpec& s = next.sockets[i];
    auto old = std::find_if(running.sockets.begin(), running.sockets.end(),
                            [&](const SocketSpec& r) { return r.name == s.name; });
    if (old == running.sockets.end()) {
      plan->sockets_added.push_back(s);
      continue;
    }
    const std::string key = "sockets[" + std::to_string(i) + "]";
    if (old->host != s.host || old->port != s.port) {
      return Refused(next.file, key + ".listen",
                     "socket " + Quote(s.name) + " changed from " + Listen(*old) + " to " +
                         Listen(s) +
                         "; a bound socket cannot move while its children run (restart the "
                         "daemon)");
    }
    if (old->backlog != s.backlog) {
      return Refused(next.file, key + ".backlog",
                     "socket " + Quote(s.name) + " changed from " + std::to_string(old->backlog) +
                         " to " + std::to_string(s.backlog) +
                         "; the backlog is set when the socket is bound (restart the daemon)");
    }
    if (old->balance != s.balance) {
      // Switching would rebind the port (one socket vs one per replica) while
      // clients wait in the old backlog, and those clients would be reset.
      return Refused(next.file, key + ".balance",
                     "socket " + Quote(s.name) + " changed from " + BalanceName(old->balance) +
                         " to " + BalanceName(s.balance) +
                         "; the balance is set when the socket is bound (restart the daemon)");
    }
  }
  for (const SocketSpec& r : running.sockets) {
    auto kept = std::find_if(next.sockets.begin(), next.sockets.end(),
                             [&](const SocketSpec& s) { return s.name == r.name; });
    if (kept == next.sockets.end()) plan->sockets_removed.push_back(r.name);
  }
  return sb::Status::Ok();
}

sb::Status CheckRoot(const TreeSpec& running, const TreeSpec& next) {
  const SupervisorSpec& a = running.root;
  const SupervisorSpec& b = next.root;
  if (a.id != b.id) {
    return Refused(next.file, "supervisor.id",
                   "changed from " + Quote(a.id) + " to " + Quote(b.id) +
                       "; the root supervisor of a running node keeps its id (restart the daemon)");
  }
  if (IsSimple(a) != IsSimple(b)) {
    return Refused(next.file, "supervisor.strategy",
                   std::string("changed from ") + StrategyName(a.strategy) + " to " +
                       StrategyName(b.strategy) +
                       "; the root supervisor cannot switch to or from simple_one_for_one while "
                       "it runs (restart the daemon)");
  }
  return sb::Status::Ok();
}

std::string WithReason(const SupervisorPlan& p, const std::string& id) {
  auto it = p.reasons.find(id);
  return it == p.reasons.end() ? id : id + " (" + it->second + ")";
}

void PlanLines(const SupervisorPlan& p, std::vector<std::string>* lines) {
  const std::string prefix = p.id + ": ";
  for (const std::string& flag : p.changed_flags) {
    if (flag == "strategy") {
      lines->push_back(prefix + "strategy -> " + StrategyName(p.next.strategy));
    } else if (flag == "intensity") {
      lines->push_back(prefix + "intensity -> " + std::to_string(p.next.intensity));
    } else if (flag == "period") {
      lines->push_back(prefix + "period -> " + FormatDuration(p.next.period));
    } else if (flag == "template" && !p.next.children.empty()) {
      lines->push_back(prefix + "update template " + WithReason(p, p.next.children.front().id));
    } else {
      lines->push_back(prefix + flag + " changed");
    }
  }
  for (const std::string& id : p.removed) lines->push_back(prefix + "stop " + id);
  for (const std::string& id : p.changed) lines->push_back(prefix + "restart " + WithReason(p, id));
  for (const std::string& id : p.upgraded)
    lines->push_back(prefix + "upgrade " + WithReason(p, id));
  for (const std::string& id : p.updated) {
    lines->push_back(prefix + "update " + WithReason(p, id) + " in place");
  }
  for (const std::string& id : p.added) lines->push_back(prefix + "start " + id);
  if (p.order_changed) {
    std::vector<std::string> ids;
    for (const ChildSpec& c : p.next.children) ids.push_back(c.id);
    lines->push_back(prefix + "start order -> " + Join(ids, ", "));
  }
  for (const std::string& set : p.replica_sets_updated) {
    const bool kept = std::any_of(p.next.replica_sets.begin(), p.next.replica_sets.end(),
                                  [&](const ChildSpec& s) { return s.id == set; });
    lines->push_back(prefix + "replica set " + set + " template " + (kept ? "updated" : "dropped"));
  }
}

}  // namespace

bool SupervisorPlan::empty() const {
  return !flags_changed && !order_changed && removed.empty() && changed.empty() &&
         upgraded.empty() && updated.empty() && added.empty() && replica_sets_updated.empty();
}

bool ReloadPlan::empty() const {
  return supervisors.empty() && sockets_added.empty() && sockets_removed.empty() && !node_changed;
}

std::string ReloadPlan::Summary() const {
  if (empty()) return "no changes";
  std::vector<std::string> lines;
  for (const std::string& key : changed_node_keys) {
    const std::string& value = key == "events"    ? node_next.events
                               : key == "metrics" ? node_next.metrics
                                                  : node_next.file_sd;
    lines.push_back("node: " + key + (value.empty() ? " off" : " -> " + value));
  }
  for (const SocketSpec& s : sockets_added) {
    lines.push_back("sockets: add " + s.name + " (" + Listen(s) + ", backlog " +
                    std::to_string(s.backlog) +
                    (s.balance == Balance::kRoundRobin ? ", round_robin" : "") + ")");
  }
  for (const SupervisorPlan& p : supervisors) PlanLines(p, &lines);
  for (const std::string& name : sockets_removed) lines.push_back("sockets: remove " + name);
  return Join(lines, "\n");
}

sb::Result<ReloadPlan> DiffTrees(const TreeSpec& running, const TreeSpec& next) {
  sb::Status status = CheckNode(running, next);
  if (!status.ok()) return status;
  ReloadPlan plan;
  status = DiffSockets(running, next, &plan);
  if (!status.ok()) return status;
  status = CheckRoot(running, next);
  if (!status.ok()) return status;

  plan.node_next = next.node;
  if (running.node.events != next.node.events) plan.changed_node_keys.push_back("events");
  if (running.node.metrics != next.node.metrics) plan.changed_node_keys.push_back("metrics");
  if (running.node.file_sd != next.node.file_sd) plan.changed_node_keys.push_back("file_sd");
  plan.node_changed = !plan.changed_node_keys.empty();

  SupervisorDiff root(next.file, &plan.supervisors);
  status = root.Run(running.root, next.root, /*is_root=*/true);
  if (!status.ok()) return status;
  return plan;
}

}  // namespace sb::supervisor
