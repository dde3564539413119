// Reload diff: the running TreeSpec and a newly validated one -> the typed
// list of changes that turns the running tree into the new one.
//
// Owns: the reload rules: which children start, stop, restart or change in
// place, the order of each list, and which changes a running node refuses.
// Does not: read or validate YAML (the loader does, before a diff is asked
// for, so a bad file changes nothing), touch processes or sockets (the engine
// applies the plan), or keep state. Pure functions; call them from any thread.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "supervisor/tree_spec.h"

namespace sb::supervisor {

// What changes inside one supervisor of the running tree. Children are
// matched by id within the same supervisor, so a child that moved to another
// supervisor is in `removed` here and in `added` of its new parent, and a child
// whose type changed (worker <-> supervisor) is in both lists of this plan.
//
// Suggested application, per plan in pre-order: stop `removed` (already in
// stop order), adopt `next`, restart `changed` one at a time, start `added`
// each in its place in next.children. A moved child is in two plans: apply
// every plan's `removed` before any plan's `added`.
struct SupervisorPlan {
  std::string id;       // the supervisor's id ("root" for the root unless the YAML names it)
  SupervisorSpec next;  // its new spec (flags + children in the new order); the engine adopts it

  // strategy, intensity, period or (simple_one_for_one) the template differ;
  // `changed_flags` names which: "strategy", "intensity", "period", "template".
  bool flags_changed = false;
  std::vector<std::string> changed_flags;
  // The children kept (in both, same type) start in a different relative order.
  bool order_changed = false;

  std::vector<std::string> removed;  // ids to stop, in reverse of their running start order
  // Ids to restart one at a time, in new order: workers whose spec differs,
  // every running instance of a changed simple_one_for_one template, and
  // sub-supervisors switching to or from simple_one_for_one (restarted whole).
  std::vector<std::string> changed;
  // Workers with upgrade: handoff, before and after, whose command or env
  // (and nothing else) differs: handed over to a process with the new spec
  // one at a time, in new order, instead of restarted.
  std::vector<std::string> upgraded;
  // Sub-supervisors whose own restart or shutdown differs: applied in place
  // from `next`, no restart. What changed inside them is in their own plan.
  std::vector<std::string> updated;
  std::vector<std::string> added;  // ids to start, in new order
  // Replica sets whose template (SupervisorSpec::replica_sets) was added,
  // changed or dropped; `scale` uses the template from `next`.
  std::vector<std::string> replica_sets_updated;
  // For ids in `changed`, `upgraded` and `updated` and for a changed template: what
  // differs, e.g. "command, env changed".
  std::map<std::string, std::string> reasons;

  bool empty() const;
};

struct ReloadPlan {
  // Pre-order (parents before their sub-supervisors); only supervisors with a
  // change. A sub-supervisor kept in place has its own plan, and its parent
  // has none unless something else changed there.
  std::vector<SupervisorPlan> supervisors;
  // Bind sockets_added before starting children; close sockets_removed after
  // every plan is applied (no child of the new tree uses them).
  std::vector<SocketSpec> sockets_added;     // declared in next, not in running (next order)
  std::vector<std::string> sockets_removed;  // declared in running, not in next (running order)
  // node.events, node.metrics or node.file_sd differ (the other node keys
  // cannot change); `changed_node_keys` names which: "events", "metrics", "file_sd".
  bool node_changed = false;
  std::vector<std::string> changed_node_keys;
  NodeSpec node_next;  // next.node, always set

  // Nothing to do: the reload is a no-op.
  bool empty() const;
  // One line per change, joined by '\n' (no trailing newline), in the order
  // above: "node: events -> /var/log/sb.events", "sockets: add admin
  // (127.0.0.1:9000, backlog 16)", "root: stop old", "shards: restart shard.0
  // (command changed)", "root: start shard.2". "no changes" when empty().
  std::string Summary() const;
};

// Compares `running` with `next`, which must both be validated TreeSpecs (ids
// unique tree-wide). Children whose spec did not change appear nowhere; env
// and success_exit_codes compare as sets, since their order means nothing.
// Refused, naming the key ("<next.file>: key 'node.name': changed from ..."),
// for what a running node cannot apply: node.name or node.control changed; an
// existing socket's listen address, backlog or balance changed; the root supervisor's
// id changed, or its strategy switched to or from simple_one_for_one; the
// template id of a simple_one_for_one supervisor changed (its instances are
// named after it). Internal if a spec breaks a validation invariant.
sb::Result<ReloadPlan> DiffTrees(const TreeSpec& running, const TreeSpec& next);

}  // namespace sb::supervisor
