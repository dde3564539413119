#include "supervisor/reload_diff.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "supervisor/spec_loader.h"
#include "supervisor/tree_spec.h"

namespace sb::supervisor {
namespace {

using Ids = std::vector<std::string>;

// The running file of most tests; each test edits a copy into the next one.
constexpr char kBase[] = R"(node:
  name: node1
  control: /tmp/sb-reload-test/node1.sock
sockets:
  - {name: gateway, listen: "127.0.0.1:4000"}
  - {name: admin, listen: "127.0.0.1:4001", backlog: 16}
supervisor:
  strategy: one_for_one
  intensity: 3
  period: 5s
  children:
    - id: broker
      command: [broker, --bind, "ipc:///tmp/b"]
      env: {LOG_LEVEL: info, MODE: prod}
      success_exit_codes: [3, 4]
    - id: shards
      type: supervisor
      strategy: one_for_one
      children:
        - id: router
          command: [router]
        - id: shard
          command: [worker, --shard, "{{replica}}"]
          sockets: [gateway]
          replicas: 2
    - id: pools
      type: supervisor
      strategy: simple_one_for_one
      children:
        - id: conn
          command: [conn, "{{replica}}"]
          replicas: 2
    - id: web
      command: [web]
)";

TreeSpec Load(const std::string& yaml) {
  sb::Result<TreeSpec> spec = LoadTreeSpecString(yaml, "next.yaml");
  EXPECT_TRUE(spec.ok()) << spec.status().message() << "\n" << yaml;
  return spec.ok() ? spec.value() : TreeSpec{};
}

// `text` with its one occurrence of `from` replaced by `to`.
std::string Edit(std::string text, const std::string& from, const std::string& to) {
  const size_t pos = text.find(from);
  EXPECT_NE(pos, std::string::npos) << "not found: " << from;
  if (pos == std::string::npos) return text;
  EXPECT_EQ(text.find(from, pos + 1), std::string::npos) << "not unique: " << from;
  return text.replace(pos, from.size(), to);
}

ReloadPlan Diff(const std::string& running, const std::string& next) {
  sb::Result<ReloadPlan> plan = DiffTrees(Load(running), Load(next));
  EXPECT_TRUE(plan.ok()) << plan.status().message();
  return plan.ok() ? plan.value() : ReloadPlan{};
}

std::string Refusal(const std::string& running, const std::string& next) {
  sb::Result<ReloadPlan> plan = DiffTrees(Load(running), Load(next));
  EXPECT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), sb::Status::Code::kRefused);
  return plan.status().message();
}

Ids PlanIds(const ReloadPlan& plan) {
  Ids ids;
  for (const SupervisorPlan& p : plan.supervisors) ids.push_back(p.id);
  return ids;
}

// The plan for supervisor `id`; fails the test when there is none.
const SupervisorPlan& PlanFor(const ReloadPlan& plan, const std::string& id) {
  for (const SupervisorPlan& p : plan.supervisors) {
    if (p.id == id) return p;
  }
  ADD_FAILURE() << "no plan for " << id << "; plans: " << plan.Summary();
  static const SupervisorPlan kNone;
  return kNone;
}

TEST(ReloadDiffTest, IdenticalFilesGiveAnEmptyPlan) {
  ReloadPlan plan = Diff(kBase, kBase);
  EXPECT_TRUE(plan.empty());
  EXPECT_TRUE(plan.supervisors.empty());
  EXPECT_TRUE(plan.sockets_added.empty());
  EXPECT_TRUE(plan.sockets_removed.empty());
  EXPECT_FALSE(plan.node_changed);
  EXPECT_EQ(plan.node_next, Load(kBase).node);
  EXPECT_EQ(plan.Summary(), "no changes");
}

TEST(ReloadDiffTest, ReorderedEnvAndExitCodesAreNotAChange) {
  std::string next =
      Edit(kBase, "env: {LOG_LEVEL: info, MODE: prod}", "env: {MODE: prod, LOG_LEVEL: info}");
  next = Edit(next, "success_exit_codes: [3, 4]", "success_exit_codes: [4, 3]");
  EXPECT_TRUE(Diff(kBase, next).empty());
}

TEST(ReloadDiffTest, ChildrenAddedInTheMiddleStartInNewOrder) {
  std::string next = Edit(kBase, "    - id: shards\n",
                          "    - id: cache\n      command: [cache]\n    - id: shards\n");
  next = Edit(next, "    - id: web\n", "    - id: logs\n      command: [logs]\n    - id: web\n");
  ReloadPlan plan = Diff(kBase, next);
  ASSERT_EQ(PlanIds(plan), (Ids{"root"}));
  const SupervisorPlan& root = plan.supervisors[0];
  EXPECT_EQ(root.added, (Ids{"cache", "logs"}));
  EXPECT_TRUE(root.removed.empty());
  EXPECT_TRUE(root.changed.empty());
  EXPECT_FALSE(root.flags_changed);
  EXPECT_FALSE(root.order_changed);
  ASSERT_EQ(root.next.children.size(), 6u);
  EXPECT_EQ(root.next.children[1].id, "cache");
  EXPECT_EQ(root.next.children[4].id, "logs");
}

TEST(ReloadDiffTest, RemovedChildrenStopInReverseStartOrder) {
  std::string next = Edit(kBase,
                          "    - id: broker\n"
                          "      command: [broker, --bind, \"ipc:///tmp/b\"]\n"
                          "      env: {LOG_LEVEL: info, MODE: prod}\n"
                          "      success_exit_codes: [3, 4]\n",
                          "");
  next = Edit(next, "    - id: web\n      command: [web]\n", "");
  ReloadPlan plan = Diff(kBase, next);
  ASSERT_EQ(PlanIds(plan), (Ids{"root"}));
  EXPECT_EQ(plan.supervisors[0].removed, (Ids{"web", "broker"}));
  EXPECT_TRUE(plan.supervisors[0].added.empty());
  EXPECT_TRUE(plan.supervisors[0].changed.empty());
}

TEST(ReloadDiffTest, ChangedCommandRestartsOnlyThatChild) {
  ReloadPlan plan = Diff(kBase, Edit(kBase, "command: [web]", "command: [web, --verbose]"));
  ASSERT_EQ(PlanIds(plan), (Ids{"root"}));
  const SupervisorPlan& root = plan.supervisors[0];
  EXPECT_EQ(root.changed, (Ids{"web"}));
  EXPECT_EQ(root.reasons.at("web"), "command changed");
  EXPECT_TRUE(root.added.empty());
  EXPECT_TRUE(root.removed.empty());
  EXPECT_TRUE(root.updated.empty());
  EXPECT_FALSE(root.flags_changed);
  EXPECT_EQ(root.next.children.back().command, (Ids{"web", "--verbose"}));
}

TEST(ReloadDiffTest, ChangedEnvRestartsTheChild) {
  ReloadPlan plan = Diff(kBase, Edit(kBase, "LOG_LEVEL: info", "LOG_LEVEL: debug"));
  ASSERT_EQ(PlanIds(plan), (Ids{"root"}));
  EXPECT_EQ(plan.supervisors[0].changed, (Ids{"broker"}));
  EXPECT_EQ(plan.supervisors[0].reasons.at("broker"), "env changed");
}

TEST(ReloadDiffTest, SeveralChangedKeysAreAllNamed) {
  std::string next = Edit(kBase, "LOG_LEVEL: info", "LOG_LEVEL: debug");
  next = Edit(next, "--bind", "--listen");
  next = Edit(next, "success_exit_codes: [3, 4]", "success_exit_codes: [3]\n      shutdown: 1s");
  ReloadPlan plan = Diff(kBase, next);
  ASSERT_EQ(PlanIds(plan), (Ids{"root"}));
  EXPECT_EQ(plan.supervisors[0].reasons.at("broker"),
            "command, env, success_exit_codes, shutdown changed");
}

TEST(ReloadDiffTest, GrowingReplicasStartsTheNewIndex) {
  ReloadPlan plan =
      Diff(kBase, Edit(kBase, "replicas: 2\n    - id: pools", "replicas: 3\n    - id: pools"));
  ASSERT_EQ(PlanIds(plan), (Ids{"shards"}));
  const SupervisorPlan& shards = plan.supervisors[0];
  EXPECT_EQ(shards.added, (Ids{"shard.2"}));
  EXPECT_TRUE(shards.changed.empty());
  EXPECT_TRUE(shards.removed.empty());
  EXPECT_TRUE(shards.replica_sets_updated.empty());  // the count is not part of the template
  ASSERT_EQ(shards.next.children.size(), 4u);
  EXPECT_EQ(shards.next.children[3].command, (Ids{"worker", "--shard", "2"}));
}

TEST(ReloadDiffTest, ShrinkingReplicasStopsTheHighestIndicesFirst) {
  const std::string three =
      Edit(kBase, "replicas: 2\n    - id: pools", "replicas: 3\n    - id: pools");
  const std::string one =
      Edit(kBase, "replicas: 2\n    - id: pools", "replicas: 1\n    - id: pools");
  ReloadPlan plan = Diff(three, one);
  ASSERT_EQ(PlanIds(plan), (Ids{"shards"}));
  EXPECT_EQ(plan.supervisors[0].removed, (Ids{"shard.2", "shard.1"}));
  EXPECT_TRUE(plan.supervisors[0].added.empty());
}

TEST(ReloadDiffTest, ChangedReplicaTemplateRestartsEveryReplica) {
  ReloadPlan plan = Diff(kBase, Edit(kBase, "[worker, --shard,", "[worker2, --shard,"));
  ASSERT_EQ(PlanIds(plan), (Ids{"shards"}));
  const SupervisorPlan& shards = plan.supervisors[0];
  EXPECT_EQ(shards.changed, (Ids{"shard.0", "shard.1"}));
  EXPECT_EQ(shards.replica_sets_updated, (Ids{"shard"}));
  ASSERT_EQ(shards.next.replica_sets.size(), 1u);
  EXPECT_EQ(shards.next.replica_sets[0].command[0], "worker2");
}

TEST(ReloadDiffTest, ReplicaTemplateWithNoReplicasIsStillAdopted) {
  const std::string zero =
      Edit(kBase, "replicas: 2\n    - id: pools", "replicas: 0\n    - id: pools");
  ReloadPlan plan = Diff(zero, Edit(zero, "[worker, --shard,", "[worker2, --shard,"));
  ASSERT_EQ(PlanIds(plan), (Ids{"shards"}));
  EXPECT_TRUE(plan.supervisors[0].changed.empty());
  EXPECT_EQ(plan.supervisors[0].replica_sets_updated, (Ids{"shard"}));
  EXPECT_EQ(plan.Summary(), "shards: replica set shard template updated");
}

TEST(ReloadDiffTest, ChangedGrandchildGivesAPlanForItsSupervisorOnly) {
  ReloadPlan plan = Diff(kBase, Edit(kBase, "command: [router]", "command: [router, -v]"));
  ASSERT_EQ(PlanIds(plan), (Ids{"shards"}));
  const SupervisorPlan& shards = plan.supervisors[0];
  EXPECT_EQ(shards.changed, (Ids{"router"}));
  EXPECT_TRUE(shards.added.empty());
  EXPECT_TRUE(shards.removed.empty());
  EXPECT_FALSE(shards.flags_changed);
}

TEST(ReloadDiffTest, StrategyChangeAppliesInPlace) {
  ReloadPlan plan = Diff(kBase, Edit(kBase, "strategy: one_for_one\n      children:",
                                     "strategy: one_for_all\n      children:"));
  ASSERT_EQ(PlanIds(plan), (Ids{"shards"}));
  const SupervisorPlan& shards = plan.supervisors[0];
  EXPECT_TRUE(shards.flags_changed);
  EXPECT_EQ(shards.changed_flags, (Ids{"strategy"}));
  EXPECT_EQ(shards.next.strategy, Strategy::kOneForAll);
  EXPECT_TRUE(shards.changed.empty());
  EXPECT_TRUE(shards.added.empty());
  EXPECT_TRUE(shards.removed.empty());
}

TEST(ReloadDiffTest, RootIntensityAndPeriodAreFlags) {
  std::string next = Edit(kBase, "intensity: 3", "intensity: 10");
  next = Edit(next, "period: 5s", "period: 1m");
  ReloadPlan plan = Diff(kBase, next);
  ASSERT_EQ(PlanIds(plan), (Ids{"root"}));
  EXPECT_EQ(plan.supervisors[0].changed_flags, (Ids{"intensity", "period"}));
  EXPECT_EQ(plan.Summary(), "root: intensity -> 10\nroot: period -> 1m");
}

TEST(ReloadDiffTest, MovedChildIsRemovedFromOldParentAndAddedToNew) {
  std::string next = Edit(kBase, "    - id: web\n      command: [web]\n", "");
  next = Edit(next, "        - id: router\n",
              "        - id: web\n          command: [web]\n        - id: router\n");
  ReloadPlan plan = Diff(kBase, next);
  ASSERT_EQ(PlanIds(plan), (Ids{"root", "shards"}));  // pre-order
  EXPECT_EQ(plan.supervisors[0].removed, (Ids{"web"}));
  EXPECT_TRUE(plan.supervisors[0].added.empty());
  EXPECT_EQ(plan.supervisors[1].added, (Ids{"web"}));
  EXPECT_TRUE(plan.supervisors[1].removed.empty());
  EXPECT_FALSE(plan.supervisors[1].order_changed);
}

TEST(ReloadDiffTest, TypeChangeStopsTheWorkerAndStartsTheSupervisor) {
  ReloadPlan plan = Diff(kBase, Edit(kBase, "    - id: web\n      command: [web]\n",
                                     "    - id: web\n      type: supervisor\n      children:\n"
                                     "        - id: web-worker\n          command: [web]\n"));
  ASSERT_EQ(PlanIds(plan), (Ids{"root"}));  // the new supervisor starts whole
  EXPECT_EQ(plan.supervisors[0].removed, (Ids{"web"}));
  EXPECT_EQ(plan.supervisors[0].added, (Ids{"web"}));
  EXPECT_TRUE(plan.supervisors[0].changed.empty());
  EXPECT_TRUE(plan.supervisors[0].next.children.back().is_supervisor);
}

TEST(ReloadDiffTest, SubSupervisorShutdownAppliesInPlace) {
  ReloadPlan plan = Diff(kBase, Edit(kBase, "    - id: shards\n      type: supervisor\n",
                                     "    - id: shards\n      type: supervisor\n"
                                     "      shutdown: 30s\n"));
  ASSERT_EQ(PlanIds(plan), (Ids{"root"}));
  const SupervisorPlan& root = plan.supervisors[0];
  EXPECT_EQ(root.updated, (Ids{"shards"}));
  EXPECT_TRUE(root.changed.empty());
  EXPECT_EQ(root.reasons.at("shards"), "shutdown changed");
  EXPECT_EQ(root.next.children[1].shutdown.timeout, Millis{30000});
  EXPECT_EQ(plan.Summary(), "root: update shards (shutdown changed) in place");
}

TEST(ReloadDiffTest, SubSupervisorBecomingSimpleOneForOneRestartsWhole) {
  ReloadPlan plan = Diff(kBase, Edit(kBase,
                                     "      strategy: one_for_one\n      children:\n"
                                     "        - id: router\n          command: [router]\n",
                                     "      strategy: simple_one_for_one\n      children:\n"));
  ASSERT_EQ(PlanIds(plan), (Ids{"root"}));  // nothing inside it is diffed
  EXPECT_EQ(plan.supervisors[0].changed, (Ids{"shards"}));
  EXPECT_EQ(plan.supervisors[0].reasons.at("shards"),
            "strategy changed from one_for_one to simple_one_for_one");
}

TEST(ReloadDiffTest, ReorderedChildrenAreAdoptedWithoutRestart) {
  std::string next = Edit(kBase, "    - id: web\n      command: [web]\n", "");
  next =
      Edit(next, "    - id: broker\n", "    - id: web\n      command: [web]\n    - id: broker\n");
  ReloadPlan plan = Diff(kBase, next);
  ASSERT_EQ(PlanIds(plan), (Ids{"root"}));
  const SupervisorPlan& root = plan.supervisors[0];
  EXPECT_TRUE(root.order_changed);
  EXPECT_TRUE(root.changed.empty());
  EXPECT_TRUE(root.added.empty());
  EXPECT_TRUE(root.removed.empty());
  EXPECT_EQ(plan.Summary(), "root: start order -> web, broker, shards, pools");
}

// docs/UPGRADE.md: a child with upgrade: handoff takes a new command or env by
// handing over to a process with it, not by a restart.
TEST(ReloadDiffTest, HandoffChildWithNewCommandOrEnvIsUpgradedNotRestarted) {
  const std::string base = Edit(kBase, "          sockets: [gateway]\n",
                                "          sockets: [gateway]\n          upgrade: handoff\n");
  ReloadPlan plan = Diff(base, Edit(base, "[worker, --shard,", "[worker2, --shard,"));
  ASSERT_EQ(PlanIds(plan), (Ids{"shards"}));
  const SupervisorPlan& shards = plan.supervisors[0];
  EXPECT_EQ(shards.upgraded, (Ids{"shard.0", "shard.1"}));
  EXPECT_TRUE(shards.changed.empty());
  EXPECT_EQ(shards.reasons.at("shard.0"), "command changed");
  EXPECT_NE(plan.Summary().find("shards: upgrade shard.0 (command changed)"), std::string::npos)
      << plan.Summary();
}

TEST(ReloadDiffTest, HandoffChildWithOtherChangesOrTurningHandoffIsRestarted) {
  const std::string base = Edit(kBase, "          sockets: [gateway]\n",
                                "          sockets: [gateway]\n          upgrade: handoff\n");
  // A change a new process cannot pick up by a hand-off alone.
  ReloadPlan plan = Diff(base, Edit(Edit(base, "[worker, --shard,", "[worker2, --shard,"),
                                    "          upgrade: handoff\n",
                                    "          upgrade: handoff\n          start_timeout: 3s\n"));
  EXPECT_EQ(PlanFor(plan, "shards").changed, (Ids{"shard.0", "shard.1"}));
  EXPECT_TRUE(PlanFor(plan, "shards").upgraded.empty());
  // The running processes were not started to hand over.
  plan = Diff(kBase, Edit(base, "[worker, --shard,", "[worker2, --shard,"));
  EXPECT_EQ(PlanFor(plan, "shards").changed, (Ids{"shard.0", "shard.1"}));
  EXPECT_EQ(PlanFor(plan, "shards").reasons.at("shard.0"), "command, upgrade changed");
}

TEST(ReloadDiffTest, SimpleOneForOneTemplateChangeRestartsEveryInstance) {
  ReloadPlan plan = Diff(kBase, Edit(kBase, "[conn, \"{{replica}}\"]", "[conn2, \"{{replica}}\"]"));
  ASSERT_EQ(PlanIds(plan), (Ids{"pools"}));
  const SupervisorPlan& pools = plan.supervisors[0];
  EXPECT_TRUE(pools.flags_changed);
  EXPECT_EQ(pools.changed_flags, (Ids{"template"}));
  EXPECT_EQ(pools.changed, (Ids{"conn.0", "conn.1"}));
  EXPECT_TRUE(pools.added.empty());
  EXPECT_TRUE(pools.removed.empty());
  EXPECT_EQ(pools.next.children.front().command[0], "conn2");
}

TEST(ReloadDiffTest, SimpleOneForOneInstanceCountChanges) {
  const std::string four = Edit(kBase, "replicas: 2\n    - id: web", "replicas: 4\n    - id: web");
  ReloadPlan up = Diff(kBase, four);
  ASSERT_EQ(PlanIds(up), (Ids{"pools"}));
  EXPECT_EQ(up.supervisors[0].added, (Ids{"conn.2", "conn.3"}));
  EXPECT_FALSE(up.supervisors[0].flags_changed);
  EXPECT_EQ(up.supervisors[0].next.instances, 4);

  ReloadPlan down = Diff(four, kBase);
  ASSERT_EQ(PlanIds(down), (Ids{"pools"}));
  EXPECT_EQ(down.supervisors[0].removed, (Ids{"conn.3", "conn.2"}));
  EXPECT_TRUE(down.supervisors[0].added.empty());
}

TEST(ReloadDiffTest, SimpleOneForOneTemplateAndCountChangeTogether) {
  std::string next = Edit(kBase, "replicas: 2\n    - id: web", "replicas: 3\n    - id: web");
  next = Edit(next, "[conn, \"{{replica}}\"]", "[conn, -v, \"{{replica}}\"]");
  ReloadPlan plan = Diff(kBase, next);
  ASSERT_EQ(PlanIds(plan), (Ids{"pools"}));
  EXPECT_EQ(plan.supervisors[0].changed, (Ids{"conn.0", "conn.1"}));
  EXPECT_EQ(plan.supervisors[0].added, (Ids{"conn.2"}));
}

TEST(ReloadDiffTest, SimpleOneForOneTemplateIdChangeIsRefused) {
  std::string message = Refusal(kBase, Edit(kBase, "- id: conn\n", "- id: link\n"));
  EXPECT_NE(message.find("key 'children[0].id' of supervisor 'pools'"), std::string::npos)
      << message;
  EXPECT_NE(message.find("'conn' to 'link'"), std::string::npos) << message;
}

TEST(ReloadDiffTest, SocketsAddedAndRemoved) {
  ReloadPlan added = Diff(
      kBase, Edit(kBase, "sockets:\n", "sockets:\n  - {name: debug, listen: \"[::1]:4002\"}\n"));
  EXPECT_TRUE(added.supervisors.empty());
  ASSERT_EQ(added.sockets_added.size(), 1u);
  EXPECT_EQ(added.sockets_added[0].name, "debug");
  EXPECT_TRUE(added.sockets_removed.empty());
  EXPECT_EQ(added.Summary(), "sockets: add debug ([::1]:4002, backlog 4096)");

  ReloadPlan removed =
      Diff(kBase, Edit(kBase, "  - {name: admin, listen: \"127.0.0.1:4001\", backlog: 16}\n", ""));
  EXPECT_TRUE(removed.supervisors.empty());
  EXPECT_TRUE(removed.sockets_added.empty());
  EXPECT_EQ(removed.sockets_removed, (Ids{"admin"}));
  EXPECT_FALSE(removed.empty());
}

TEST(ReloadDiffTest, NodeEventsMetricsAndFileSdApply) {
  ReloadPlan plan = Diff(kBase, Edit(kBase, "  control: /tmp/sb-reload-test/node1.sock\n",
                                     "  control: /tmp/sb-reload-test/node1.sock\n"
                                     "  events: /tmp/sb-reload-test/node1.events\n"));
  EXPECT_TRUE(plan.node_changed);
  EXPECT_EQ(plan.changed_node_keys, (Ids{"events"}));
  EXPECT_EQ(plan.node_next.events, "/tmp/sb-reload-test/node1.events");
  EXPECT_TRUE(plan.supervisors.empty());
  EXPECT_EQ(plan.Summary(), "node: events -> /tmp/sb-reload-test/node1.events");

  ReloadPlan back =
      Diff(Edit(kBase, "  name: node1\n", "  name: node1\n  metrics: 127.0.0.1:9100\n"), kBase);
  EXPECT_EQ(back.changed_node_keys, (Ids{"metrics"}));
  EXPECT_EQ(back.Summary(), "node: metrics off");

  ReloadPlan file_sd = Diff(kBase, Edit(kBase, "  name: node1\n",
                                        "  name: node1\n  file_sd: /tmp/sb-reload-test/sd.json\n"));
  EXPECT_EQ(file_sd.changed_node_keys, (Ids{"file_sd"}));
  EXPECT_EQ(file_sd.Summary(), "node: file_sd -> /tmp/sb-reload-test/sd.json");
}

TEST(ReloadDiffTest, NodeNameChangeIsRefused) {
  std::string message = Refusal(kBase, Edit(kBase, "name: node1", "name: node2"));
  EXPECT_NE(message.find("next.yaml: key 'node.name': changed from 'node1' to 'node2'"),
            std::string::npos)
      << message;
}

TEST(ReloadDiffTest, ControlPathChangeIsRefused) {
  std::string message = Refusal(kBase, Edit(kBase, "control: /tmp/sb-reload-test/node1.sock",
                                            "control: /tmp/sb-reload-test/other.sock"));
  EXPECT_NE(message.find("key 'node.control'"), std::string::npos) << message;
  EXPECT_NE(message.find("other.sock"), std::string::npos) << message;
}

TEST(ReloadDiffTest, SocketListenAndBacklogChangesAreRefused) {
  std::string listen = Refusal(kBase, Edit(kBase, "127.0.0.1:4000", "127.0.0.1:5000"));
  EXPECT_NE(listen.find("key 'sockets[0].listen'"), std::string::npos) << listen;
  EXPECT_NE(listen.find("'gateway' changed from 127.0.0.1:4000 to 127.0.0.1:5000"),
            std::string::npos)
      << listen;

  std::string backlog = Refusal(kBase, Edit(kBase, "backlog: 16", "backlog: 32"));
  EXPECT_NE(backlog.find("key 'sockets[1].backlog'"), std::string::npos) << backlog;
}

TEST(ReloadDiffTest, SocketBalanceChangeIsRefused) {
  std::string balance =
      Refusal(kBase, Edit(kBase, "backlog: 16}", "backlog: 16, balance: round_robin}"));
  EXPECT_NE(balance.find("key 'sockets[1].balance': socket 'admin' changed from shared to "
                         "round_robin; the balance is set when the socket is bound"),
            std::string::npos)
      << balance;
  // Writing out the default is no change.
  ReloadPlan same = Diff(kBase, Edit(kBase, "backlog: 16}", "backlog: 16, balance: shared}"));
  EXPECT_TRUE(same.empty()) << same.Summary();
}

TEST(ReloadDiffTest, RootIdAndRootStrategyKindChangesAreRefused) {
  std::string id = Refusal(kBase, Edit(kBase, "supervisor:\n", "supervisor:\n  id: top\n"));
  EXPECT_NE(id.find("key 'supervisor.id': changed from 'root' to 'top'"), std::string::npos) << id;

  const std::string pool = R"(supervisor:
  strategy: simple_one_for_one
  children:
    - id: job
      command: [job]
)";
  const std::string plain = R"(supervisor:
  children:
    - id: job
      command: [job]
)";
  std::string kind = Refusal(plain, pool);
  EXPECT_NE(kind.find("key 'supervisor.strategy'"), std::string::npos) << kind;
}

TEST(ReloadDiffTest, PlansArePreOrderThroughNestedSupervisors) {
  const std::string running = R"(supervisor:
  children:
    - id: a
      command: [a]
    - id: mid
      type: supervisor
      children:
        - id: b
          command: [b]
        - id: leaf
          type: supervisor
          children:
            - id: c
              command: [c]
    - id: mid2
      type: supervisor
      children:
        - id: d
          command: [d]
)";
  std::string next = Edit(running, "command: [a]", "command: [a2]");
  next = Edit(next, "command: [c]", "command: [c2]");
  next = Edit(next, "command: [d]", "command: [d2]");
  ReloadPlan plan = Diff(running, next);
  EXPECT_EQ(PlanIds(plan), (Ids{"root", "leaf", "mid2"}));
  EXPECT_EQ(PlanFor(plan, "leaf").changed, (Ids{"c"}));
  EXPECT_EQ(PlanFor(plan, "mid2").changed, (Ids{"d"}));
}

TEST(ReloadDiffTest, SummaryOfATypicalReload) {
  std::string next = Edit(kBase, "replicas: 2\n    - id: pools", "replicas: 3\n    - id: pools");
  next = Edit(next, "command: [router]", "command: [router, --fast]");
  next = Edit(next, "    - id: web\n      command: [web]\n",
              "    - id: api\n      command: [api]\n      sockets: [debug]\n");
  next = Edit(next, "  - {name: admin, listen: \"127.0.0.1:4001\", backlog: 16}\n",
              "  - {name: debug, listen: \"127.0.0.1:4002\"}\n");
  next = Edit(next, "  control: /tmp/sb-reload-test/node1.sock\n",
              "  control: /tmp/sb-reload-test/node1.sock\n  events: /tmp/sb-reload-test/ev\n");
  next = Edit(next, "intensity: 3", "intensity: 5");
  ReloadPlan plan = Diff(kBase, next);
  EXPECT_EQ(plan.Summary(),
            "node: events -> /tmp/sb-reload-test/ev\n"
            "sockets: add debug (127.0.0.1:4002, backlog 4096)\n"
            "root: intensity -> 5\n"
            "root: stop web\n"
            "root: start api\n"
            "shards: restart router (command changed)\n"
            "shards: start shard.2\n"
            "sockets: remove admin");
}

TEST(ReloadDiffTest, EmptyPlanIsEmpty) {
  ReloadPlan plan;
  EXPECT_TRUE(plan.empty());
  EXPECT_EQ(plan.Summary(), "no changes");
  SupervisorPlan sup;
  EXPECT_TRUE(sup.empty());
  sup.order_changed = true;
  EXPECT_FALSE(sup.empty());
}

}  // namespace
}  // namespace sb::supervisor
