#include "supervisor/spec_loader.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <string>

#include "common/curve.h"
#include "supervisor/tree_spec.h"

namespace sb::supervisor {
namespace {

using Kind = ShutdownSpec::Kind;

TreeSpec LoadOk(const std::string& yaml) {
  sb::Result<TreeSpec> spec = LoadTreeSpecString(yaml, "test.yaml");
  EXPECT_TRUE(spec.ok()) << spec.status().message();
  return spec.ok() ? spec.value() : TreeSpec{};
}

std::string LoadError(const std::string& yaml) {
  sb::Result<TreeSpec> spec = LoadTreeSpecString(yaml, "test.yaml");
  EXPECT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), sb::Status::Code::kInvalidConfig);
  return spec.status().message();
}

ChildSpec Worker(std::string id, std::vector<std::string> command) {
  ChildSpec c;
  c.id = std::move(id);
  c.command = std::move(command);
  return c;
}

constexpr char kFullExample[] = R"(node:
  name: node1
  control: /tmp/switchboard/node1.sock
  events: /tmp/switchboard/node1.events
sockets:
  - {name: gateway, listen: "127.0.0.1:4000", backlog: 4096}
  - {name: admin, listen: "[::1]:0", backlog: 16}
supervisor:
  id: root
  strategy: one_for_one
  intensity: 3
  period: 5s
  children:
    - id: broker
      command: ["switchboard-broker", "--bind", "ipc:///tmp/x"]
      env: {LOG_LEVEL: info}
      restart: permanent
      shutdown: 5s
      ready: notify
      start_timeout: 10s
      sockets: [gateway]
      success_exit_codes: [0, 3]
    - id: shard
      command: [switchboard-worker, --shard, "{{replica}}", "--name=s{{replica}}-{{replica}}"]
      env: {SHARD: "{{replica}}", PORT: 4000, "{{replica}}": keep}
      sockets: [gateway, admin]
      replicas: 2
    - id: shards
      type: supervisor
      strategy: one_for_all
      intensity: 10
      period: 10s
      children:
        - id: pool
          type: supervisor
          strategy: simple_one_for_one
          restart: transient
          children:
            - id: conn
              command: [conn-handler, "{{replica}}"]
              restart: temporary
              shutdown: brutal_kill
              ready: exec
              replicas: 3
)";

TEST(SpecLoaderTest, FullExampleParsesToTheExpectedTree) {
  const TreeSpec spec = LoadOk(kFullExample);

  EXPECT_EQ(spec.file, "test.yaml");
  EXPECT_EQ(spec.node,
            (NodeSpec{"node1", "/tmp/switchboard/node1.sock", "/tmp/switchboard/node1.events", "",
                      "/tmp/switchboard/node1.targets.json"}));
  ASSERT_EQ(spec.sockets.size(), 2u);
  EXPECT_EQ(spec.sockets[0], (SocketSpec{"gateway", "127.0.0.1", 4000, 4096}));
  EXPECT_EQ(spec.sockets[1], (SocketSpec{"admin", "::1", 0, 16}));

  ChildSpec broker = Worker("broker", {"switchboard-broker", "--bind", "ipc:///tmp/x"});
  broker.env = {{"LOG_LEVEL", "info"}};
  broker.sockets = {"gateway"};
  broker.success_exit_codes = {0, 3};

  ChildSpec shard0 = Worker("shard.0", {"switchboard-worker", "--shard", "0", "--name=s0-0"});
  shard0.env = {{"SHARD", "0"}, {"PORT", "4000"}, {"{{replica}}", "keep"}};
  shard0.sockets = {"gateway", "admin"};
  shard0.replica = ReplicaOf{"shard", 0};
  ChildSpec shard1 = Worker("shard.1", {"switchboard-worker", "--shard", "1", "--name=s1-1"});
  shard1.env = {{"SHARD", "1"}, {"PORT", "4000"}, {"{{replica}}", "keep"}};
  shard1.sockets = {"gateway", "admin"};
  shard1.replica = ReplicaOf{"shard", 1};

  // The simple_one_for_one template stays unexpanded, placeholder included.
  ChildSpec conn = Worker("conn", {"conn-handler", "{{replica}}"});
  conn.restart = RestartType::kTemporary;
  conn.shutdown = ShutdownSpec{Kind::kBrutalKill, Millis{0}};
  conn.ready = ReadyMode::kExec;
  SupervisorSpec pool_sup{"pool", Strategy::kSimpleOneForOne, 1, Millis{5000}, {conn}, 3};
  ChildSpec pool;
  pool.id = "pool";
  pool.is_supervisor = true;
  pool.restart = RestartType::kTransient;
  pool.shutdown = ShutdownSpec{Kind::kInfinity, Millis{0}};
  pool.sub = {pool_sup};

  SupervisorSpec shards_sup{"shards", Strategy::kOneForAll, 10, Millis{10000}, {pool}, 0};
  ChildSpec shards;
  shards.id = "shards";
  shards.is_supervisor = true;
  shards.shutdown = ShutdownSpec{Kind::kInfinity, Millis{0}};
  shards.sub = {shards_sup};

  // The replica set's template is kept, unexpanded, so it can be scaled.
  ChildSpec shard_set = shard0;
  shard_set.id = "shard";
  shard_set.replica.reset();
  shard_set.command = {"switchboard-worker", "--shard", "{{replica}}",
                       "--name=s{{replica}}-{{replica}}"};
  shard_set.env = {{"SHARD", "{{replica}}"}, {"PORT", "4000"}, {"{{replica}}", "keep"}};
  const SupervisorSpec root{
      "root", Strategy::kOneForOne, 3, Millis{5000}, {broker, shard0, shard1, shards},
      0,      {shard_set}};
  ASSERT_EQ(spec.root.children.size(), 4u);
  EXPECT_EQ(spec.root.children[0], broker);
  EXPECT_EQ(spec.root.children[1], shard0);
  EXPECT_EQ(spec.root.children[2], shard1);
  EXPECT_EQ(spec.root.children[3].supervisor().children[0], pool);
  EXPECT_EQ(spec.root.children[3], shards);
  EXPECT_EQ(spec.root, root);

  ASSERT_EQ(spec.warnings.size(), 1u);
  EXPECT_EQ(spec.warnings[0],
            "test.yaml:37:20: key 'supervisor.children[2].children[0].restart': a transient "
            "supervisor that gives up is not restarted by its parent (OTP semantics)");
}

TEST(SpecLoaderTest, DefaultsFollowOtp) {
  const TreeSpec spec = LoadOk(R"(supervisor:
  children:
    - id: w
      command: [w]
    - id: s
      type: supervisor
)");
  EXPECT_EQ(spec.node.name, "node1");
  EXPECT_EQ(spec.node.control, "/tmp/switchboard/node1.sock");
  EXPECT_EQ(spec.node.events, "");
  EXPECT_TRUE(spec.sockets.empty());
  EXPECT_TRUE(spec.warnings.empty());

  EXPECT_EQ(spec.root.id, "root");
  EXPECT_EQ(spec.root.strategy, Strategy::kOneForOne);
  EXPECT_EQ(spec.root.intensity, 1);
  EXPECT_EQ(spec.root.period, Millis{5000});
  EXPECT_EQ(spec.root.instances, 0);
  ASSERT_EQ(spec.root.children.size(), 2u);

  const ChildSpec& w = spec.root.children[0];
  EXPECT_FALSE(w.is_supervisor);
  EXPECT_EQ(w.restart, RestartType::kPermanent);
  EXPECT_EQ(w.shutdown, (ShutdownSpec{Kind::kTimeout, Millis{5000}}));
  EXPECT_EQ(w.ready, ReadyMode::kNotify);
  EXPECT_EQ(w.start_timeout, Millis{10000});
  EXPECT_FALSE(w.replica.has_value());
  EXPECT_TRUE(w.env.empty());
  EXPECT_TRUE(w.sockets.empty());
  EXPECT_TRUE(w.success_exit_codes.empty());

  const ChildSpec& s = spec.root.children[1];
  EXPECT_TRUE(s.is_supervisor);
  EXPECT_EQ(s.restart, RestartType::kPermanent);
  EXPECT_EQ(s.shutdown, (ShutdownSpec{Kind::kInfinity, Millis{0}}));
  ASSERT_EQ(s.sub.size(), 1u);
  EXPECT_EQ(s.supervisor().id, "s");
  EXPECT_EQ(s.supervisor().strategy, Strategy::kOneForOne);
  EXPECT_EQ(s.supervisor().intensity, 1);
  EXPECT_EQ(s.supervisor().period, Millis{5000});
  EXPECT_TRUE(s.supervisor().children.empty());
}

TEST(SpecLoaderTest, MinimalFileHasAnEmptyRoot) {
  const TreeSpec spec = LoadOk("supervisor: {}\n");
  EXPECT_EQ(spec.root.id, "root");
  EXPECT_TRUE(spec.root.children.empty());
}

TEST(SpecLoaderTest, ControlDefaultFollowsNodeName) {
  const TreeSpec spec = LoadOk("node: {name: edge-2.eu}\nsupervisor: {}\n");
  EXPECT_EQ(spec.node.name, "edge-2.eu");
  EXPECT_EQ(spec.node.control, "/tmp/switchboard/edge-2.eu.sock");
}

TEST(SpecLoaderTest, NodeApiGivesPublishItsUrlAndKey) {
  const TreeSpec spec =
      LoadOk("node: {api: {url: \"http://127.0.0.1:4000/\", key_file: /run/k}}\nsupervisor: {}\n");
  EXPECT_EQ(spec.node.api.url, "http://127.0.0.1:4000/");
  EXPECT_EQ(spec.node.api.key_file, "/run/k");
  EXPECT_TRUE(LoadOk("supervisor: {}\n").node.api.url.empty());
}

TEST(SpecLoaderTest, EmptyListsAndSectionsMayBeLeftWithoutAValue) {
  const TreeSpec spec = LoadOk(R"(node:
sockets:
supervisor:
  children:
    - id: w
      command: [w]
      env:
      sockets:
      success_exit_codes:
)");
  EXPECT_EQ(spec.node.name, "node1");
  EXPECT_TRUE(spec.sockets.empty());
  ASSERT_EQ(spec.root.children.size(), 1u);
  EXPECT_TRUE(spec.root.children[0].env.empty());
}

TEST(SpecLoaderTest, ShutdownForms) {
  const TreeSpec spec = LoadOk(R"(supervisor:
  children:
    - {id: a, command: [a], shutdown: brutal_kill}
    - {id: b, command: [b], shutdown: infinity}
    - {id: c, command: [c], shutdown: 250ms}
    - {id: d, command: [d], shutdown: 0s}
    - {id: e, type: supervisor, shutdown: 1m}
)");
  ASSERT_EQ(spec.root.children.size(), 5u);
  EXPECT_EQ(spec.root.children[0].shutdown, (ShutdownSpec{Kind::kBrutalKill, Millis{0}}));
  EXPECT_EQ(spec.root.children[1].shutdown, (ShutdownSpec{Kind::kInfinity, Millis{0}}));
  EXPECT_EQ(spec.root.children[2].shutdown, (ShutdownSpec{Kind::kTimeout, Millis{250}}));
  EXPECT_EQ(spec.root.children[3].shutdown, (ShutdownSpec{Kind::kTimeout, Millis{0}}));
  EXPECT_EQ(spec.root.children[4].shutdown, (ShutdownSpec{Kind::kTimeout, Millis{60000}}));
}

TEST(SpecLoaderTest, ZeroReplicasExpandToNothing) {
  const TreeSpec spec = LoadOk(R"(supervisor:
  children:
    - {id: gone, command: [x], replicas: 0}
    - {id: kept, command: [y]}
)");
  ASSERT_EQ(spec.root.children.size(), 1u);
  EXPECT_EQ(spec.root.children[0].id, "kept");
}

TEST(SpecLoaderTest, SimpleOneForOneTemplateDefaultsToZeroInstances) {
  const TreeSpec spec = LoadOk(R"(supervisor:
  strategy: simple_one_for_one
  children:
    - id: conn
      command: [conn, "{{replica}}"]
)");
  EXPECT_EQ(spec.root.instances, 0);
  ASSERT_EQ(spec.root.children.size(), 1u);
  EXPECT_EQ(spec.root.children[0].id, "conn");
  EXPECT_EQ(spec.root.children[0].command[1], "{{replica}}");
  EXPECT_TRUE(spec.warnings.empty());  // the placeholder is expected in a template
}

TEST(SpecLoaderTest, TemporarySupervisorWarns) {
  const TreeSpec spec = LoadOk(R"(supervisor:
  children:
    - id: s
      type: supervisor
      restart: temporary
)");
  ASSERT_EQ(spec.warnings.size(), 1u);
  EXPECT_EQ(spec.warnings[0],
            "test.yaml:5:16: key 'supervisor.children[0].restart': a temporary supervisor that "
            "gives up is not restarted by its parent (OTP semantics)");
}

TEST(SpecLoaderTest, ReplicaPlaceholderOutsideAReplicaSetWarns) {
  const TreeSpec spec = LoadOk(R"(supervisor:
  children:
    - id: w
      command: [w]
      env: {N: "{{replica}}"}
)");
  ASSERT_EQ(spec.warnings.size(), 1u);
  EXPECT_EQ(spec.warnings[0],
            "test.yaml:5:12: key 'supervisor.children[0].env': '{{replica}}' is passed literally "
            "because this child has no replicas");
  EXPECT_EQ(spec.root.children[0].env[0].second, "{{replica}}");
}

TEST(SpecLoaderTest, ListenAddressForms) {
  const TreeSpec spec = LoadOk(R"(sockets:
  - {name: a, listen: "0.0.0.0:65535"}
  - {name: b, listen: "localhost:80"}
  - {name: c, listen: "[::]:0"}
  - {name: d, listen: "[2001:db8::1]:4000", backlog: 1}
supervisor: {}
)");
  ASSERT_EQ(spec.sockets.size(), 4u);
  EXPECT_EQ(spec.sockets[0], (SocketSpec{"a", "0.0.0.0", 65535, 4096}));
  EXPECT_EQ(spec.sockets[1], (SocketSpec{"b", "localhost", 80, 4096}));
  EXPECT_EQ(spec.sockets[2], (SocketSpec{"c", "::", 0, 4096}));
  EXPECT_EQ(spec.sockets[3], (SocketSpec{"d", "2001:db8::1", 4000, 1}));
}

TEST(SpecLoaderTest, ScalarsInCommandAndEnvKeepTheirText) {
  const TreeSpec spec = LoadOk(R"(supervisor:
  children:
    - id: w
      command: [w, 42, true, 1.50, "null"]
      env: {A: 007, B: false}
)");
  const ChildSpec& w = spec.root.children[0];
  EXPECT_EQ(w.command, (std::vector<std::string>{"w", "42", "true", "1.50", "null"}));
  EXPECT_EQ(w.env,
            (std::vector<std::pair<std::string, std::string>>{{"A", "007"}, {"B", "false"}}));
}

// ---- Errors: each pins the exact file:line:column, key path and wording. ----

TEST(SpecLoaderErrorTest, UnknownStrategy) {
  EXPECT_EQ(LoadError(R"(node:
  name: n1
sockets: []
supervisor:
  id: root
  intensity: 2
  strategy: one_for_none
)"),
            "test.yaml:7:13: key 'supervisor.strategy': unknown strategy 'one_for_none' "
            "(expected one of one_for_one, one_for_all, rest_for_one, simple_one_for_one)");
}

TEST(SpecLoaderErrorTest, UnknownStrategyInANestedSupervisor) {
  EXPECT_EQ(LoadError(R"(supervisor:
  children:
    - {id: a, command: [a]}
    - id: b
      type: supervisor
      children:
        - id: c
          type: supervisor
          strategy: all_for_one
)"),
            "test.yaml:9:21: key 'supervisor.children[1].children[0].strategy': unknown strategy "
            "'all_for_one' (expected one of one_for_one, one_for_all, rest_for_one, "
            "simple_one_for_one)");
}

TEST(SpecLoaderErrorTest, BareNumberPeriod) {
  EXPECT_EQ(LoadError(R"(supervisor:
  intensity: 3
  period: 5
)"),
            "test.yaml:3:11: key 'supervisor.period': duration needs a unit (ms, s, m, h): '5'");
}

TEST(SpecLoaderErrorTest, ZeroPeriodAndStartTimeout) {
  EXPECT_EQ(LoadError("supervisor: {period: 0s}\n"),
            "test.yaml:1:22: key 'supervisor.period': duration must be greater than zero");
  EXPECT_EQ(LoadError(R"(supervisor:
  children:
    - {id: a, command: [a], start_timeout: 0ms}
)"),
            "test.yaml:3:44: key 'supervisor.children[0].start_timeout': duration must be "
            "greater than zero");
}

TEST(SpecLoaderErrorTest, BadShutdown) {
  EXPECT_EQ(LoadError(R"(supervisor:
  children:
    - id: a
      command: [a]
      shutdown: 5000
)"),
            "test.yaml:5:17: key 'supervisor.children[0].shutdown': duration needs a unit (ms, s, "
            "m, h): '5000'; shutdown also accepts brutal_kill or infinity");
}

TEST(SpecLoaderErrorTest, BadIntensity) {
  EXPECT_EQ(LoadError("supervisor:\n  intensity: -1\n"),
            "test.yaml:2:14: key 'supervisor.intensity': expected an integer >= 0, found '-1'");
  EXPECT_EQ(LoadError("supervisor:\n  intensity: infinity\n"),
            "test.yaml:2:14: key 'supervisor.intensity': expected an integer >= 0, found "
            "'infinity'");
  EXPECT_EQ(LoadError("supervisor:\n  intensity: [1]\n"),
            "test.yaml:2:14: key 'supervisor.intensity': expected an integer >= 0, found a list");
}

TEST(SpecLoaderErrorTest, DuplicateId) {
  EXPECT_EQ(LoadError(R"(supervisor:
  children:
    - id: web
      command: [web]
    - id: sub
      type: supervisor
      children:
        - id: web
          command: [web2]
)"),
            "test.yaml:8:15: key 'supervisor.children[1].children[0].id': duplicate id 'web' "
            "(first defined at 3:11)");
}

TEST(SpecLoaderErrorTest, ChildIdCollidesWithRootId) {
  EXPECT_EQ(LoadError(R"(supervisor:
  children:
    - {id: root, command: [a]}
)"),
            "test.yaml:3:12: key 'supervisor.children[0].id': duplicate id 'root' (first defined "
            "at 1:1)");
}

TEST(SpecLoaderErrorTest, TwoReplicaSetsWithTheSameId) {
  EXPECT_EQ(LoadError(R"(supervisor:
  children:
    - {id: shard, command: [a], replicas: 2}
    - {id: shard, command: [b], replicas: 3}
)"),
            "test.yaml:4:12: key 'supervisor.children[1].id': duplicate id 'shard' (first "
            "defined at 3:12)");
}

TEST(SpecLoaderErrorTest, IdWithADot) {
  EXPECT_EQ(LoadError(R"(supervisor:
  children:
    - id: shard.0
      command: [a]
)"),
            "test.yaml:3:11: key 'supervisor.children[0].id': invalid id 'shard.0': must match "
            "[A-Za-z0-9_-]+ (dots are reserved for replica ids such as shard.0)");
  EXPECT_EQ(LoadError("supervisor: {id: 'my root'}\n"),
            "test.yaml:1:18: key 'supervisor.id': invalid id 'my root': must match "
            "[A-Za-z0-9_-]+");
}

TEST(SpecLoaderErrorTest, MissingIdAndCommand) {
  EXPECT_EQ(LoadError(R"(supervisor:
  children:
    - command: [a]
)"),
            "test.yaml:3:7: key 'supervisor.children[0].id': required key is missing (every "
            "child needs a unique id)");
  EXPECT_EQ(LoadError(R"(supervisor:
  children:
    - id: a
      restart: transient
)"),
            "test.yaml:3:7: key 'supervisor.children[0].command': required key is missing (a "
            "worker needs command: [program, args...])");
}

TEST(SpecLoaderErrorTest, UndeclaredSocket) {
  EXPECT_EQ(LoadError(R"(sockets:
  - {name: gateway, listen: "127.0.0.1:4000"}
supervisor:
  children:
    - id: w
      command: [w]
      sockets: [gateway, admin]
)"),
            "test.yaml:7:26: key 'supervisor.children[0].sockets[1]': socket 'admin' is not "
            "declared in sockets:");
}

TEST(SpecLoaderErrorTest, SocketListedTwiceByOneChild) {
  EXPECT_EQ(LoadError(R"(sockets: [{name: g, listen: "127.0.0.1:1"}]
supervisor:
  children:
    - {id: w, command: [w], sockets: [g, g]}
)"),
            "test.yaml:4:42: key 'supervisor.children[0].sockets[1]': socket 'g' is listed "
            "twice");
}

TEST(SpecLoaderErrorTest, DuplicateSocketName) {
  EXPECT_EQ(LoadError(R"(sockets:
  - name: gw
    listen: "127.0.0.1:4000"
  - name: gw
    listen: "127.0.0.1:4001"
supervisor: {}
)"),
            "test.yaml:4:11: key 'sockets[1].name': duplicate socket name 'gw'");
}

TEST(SpecLoaderErrorTest, BadListenAddresses) {
  auto listen_error = [](const std::string& listen) {
    return LoadError("sockets:\n  - name: gw\n    listen: \"" + listen + "\"\nsupervisor: {}\n");
  };
  const std::string prefix = "test.yaml:3:13: key 'sockets[0].listen': ";
  EXPECT_EQ(listen_error("4000"),
            prefix + "expected host:port, e.g. \"127.0.0.1:4000\", found '4000'");
  EXPECT_EQ(listen_error(":4000"),
            prefix +
                "listen needs a host before the port (0.0.0.0 listens on every IPv4 "
                "address), found ':4000'");
  EXPECT_EQ(listen_error("::1:4000"),
            prefix + "IPv6 addresses need brackets, e.g. \"[::1]:4000\", found '::1:4000'");
  EXPECT_EQ(listen_error("example.com:80"),
            prefix +
                "host 'example.com' must be a numeric IPv4 address, a bracketed IPv6 "
                "address, or localhost");
  EXPECT_EQ(listen_error("127.0.0.256:80"),
            prefix +
                "host '127.0.0.256' must be a numeric IPv4 address, a bracketed IPv6 "
                "address, or localhost");
  EXPECT_EQ(listen_error("127.0.0.1:65536"),
            prefix + "port must be a number from 0 to 65535, found '65536'");
  EXPECT_EQ(listen_error("127.0.0.1:"), prefix + "port must be a number from 0 to 65535, found ''");
  EXPECT_EQ(listen_error("127.0.0.1:-1"),
            prefix + "port must be a number from 0 to 65535, found '-1'");
  EXPECT_EQ(listen_error("127.0.0.1:http"),
            prefix + "port must be a number from 0 to 65535, found 'http'");
  EXPECT_EQ(listen_error("[::1]4000"),
            prefix + "expected [ipv6]:port, e.g. \"[::1]:4000\", found '[::1]4000'");
  EXPECT_EQ(listen_error("[127.0.0.1]:4000"), prefix + "'127.0.0.1' is not an IPv6 address");
}

TEST(SpecLoaderErrorTest, SocketMissingListenAndBadBacklog) {
  EXPECT_EQ(LoadError("sockets:\n  - name: gw\nsupervisor: {}\n"),
            "test.yaml:2:5: key 'sockets[0].listen': required key is missing (e.g. listen: "
            "\"127.0.0.1:4000\")");
  EXPECT_EQ(LoadError("sockets:\n  - {name: gw, listen: \"127.0.0.1:1\", backlog: 0}\n"
                      "supervisor: {}\n"),
            "test.yaml:2:48: key 'sockets[0].backlog': expected an integer from 1 to 65535, "
            "found '0'");
}

TEST(SpecLoaderTest, SocketBalanceDefaultsToSharedAndCountsRoundRobinMembers) {
  const TreeSpec spec = LoadOk(R"(sockets:
  - {name: old, listen: "127.0.0.1:1"}
  - {name: same, listen: "127.0.0.1:2", balance: shared}
  - {name: rr, listen: "127.0.0.1:3", balance: round_robin}
  - {name: idle, listen: "127.0.0.1:4", balance: round_robin}
supervisor:
  children:
    - id: group
      type: supervisor
      children:
        - {id: shard, command: [w], replicas: 4, sockets: [rr, old]}
    - {id: other, command: [w], sockets: [old, same]}
)");
  ASSERT_EQ(spec.sockets.size(), 4u);
  EXPECT_EQ(spec.sockets[0].balance, Balance::kShared);
  EXPECT_EQ(spec.sockets[1].balance, Balance::kShared);
  EXPECT_EQ(spec.sockets[2].balance, Balance::kRoundRobin);
  // A round_robin socket no child names still holds its port with one member.
  EXPECT_EQ(RoundRobinMembers(spec), (std::map<std::string, int>{{"idle", 1}, {"rr", 4}}));
}

TEST(SpecLoaderTest, RoundRobinSetScaledToZeroKeepsOneMember) {
  const TreeSpec spec = LoadOk(R"(sockets: [{name: rr, listen: "127.0.0.1:3", balance: round_robin}]
supervisor:
  children:
    - {id: shard, command: [w], replicas: 0, sockets: [rr]}
)");
  EXPECT_EQ(RoundRobinMembers(spec), (std::map<std::string, int>{{"rr", 1}}));
}

TEST(SpecLoaderErrorTest, SocketBadBalance) {
  EXPECT_EQ(LoadError("sockets:\n  - {name: gw, listen: \"127.0.0.1:1\", balance: random}\n"
                      "supervisor: {}\n"),
            "test.yaml:2:48: key 'sockets[0].balance': unknown balance 'random' (expected one "
            "of shared, round_robin)");
}

TEST(SpecLoaderErrorTest, RoundRobinSocketNamedByTwoSets) {
  EXPECT_EQ(LoadError(R"(sockets: [{name: g, listen: "127.0.0.1:1", balance: round_robin}]
supervisor:
  children:
    - {id: a, command: [w], replicas: 2, sockets: [g]}
    - {id: b, command: [w], replicas: 2, sockets: [g]}
)"),
            "test.yaml:5:52: key 'supervisor.children[1].sockets[0]': socket 'g' has balance: "
            "round_robin and is already named by 'a' (4:52); one replica set owns a round_robin "
            "socket");
}

TEST(SpecLoaderErrorTest, RoundRobinSocketNamedByAChildWithoutReplicas) {
  EXPECT_EQ(LoadError(R"(sockets: [{name: g, listen: "127.0.0.1:1", balance: round_robin}]
supervisor:
  children:
    - {id: a, command: [w], sockets: [g]}
)"),
            "test.yaml:4:39: key 'supervisor.children[0].sockets[0]': socket 'g' has balance: "
            "round_robin, which gives replica i its own member; give this child replicas: N, or "
            "use balance: shared");
}

TEST(SpecLoaderErrorTest, RoundRobinSocketNamedByATemplate) {
  EXPECT_EQ(LoadError(R"(sockets: [{name: g, listen: "127.0.0.1:1", balance: round_robin}]
supervisor:
  strategy: simple_one_for_one
  children:
    - {id: a, command: [w], sockets: [g]}
)"),
            "test.yaml:5:39: key 'supervisor.children[0].sockets[0]': socket 'g' has balance: "
            "round_robin, which gives replica i its own member; the instances of a "
            "simple_one_for_one supervisor have no fixed index (use replicas, or balance: "
            "shared)");
}

TEST(SpecLoaderErrorTest, UnknownKey) {
  EXPECT_EQ(LoadError(R"(supervisor:
  children:
    - id: w
      comand: [w]
)"),
            "test.yaml:4:7: key 'supervisor.children[0].comand': unknown key 'comand' (allowed "
            "here: id, type, restart, shutdown, command, env, ready, start_timeout, sockets, "
            "success_exit_codes, replicas, metrics, backoff, upgrade)");
}

TEST(SpecLoaderTest, UpgradeModeDefaultsToRestartAndTakesHandoff) {
  auto spec = LoadTreeSpecString(R"(supervisor:
  children:
    - {id: a, command: [a]}
    - {id: b, command: [b], upgrade: handoff}
    - {id: c, command: [c], upgrade: restart}
)",
                                 "test.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status().message();
  EXPECT_EQ(spec->root.children[0].upgrade, UpgradeMode::kRestart);
  EXPECT_EQ(spec->root.children[1].upgrade, UpgradeMode::kHandoff);
  EXPECT_EQ(spec->root.children[2].upgrade, UpgradeMode::kRestart);
  EXPECT_STREQ(UpgradeModeName(UpgradeMode::kHandoff), "handoff");
}

TEST(SpecLoaderErrorTest, BadUpgradeValues) {
  EXPECT_EQ(LoadError("supervisor:\n  children:\n    - {id: w, command: [w], upgrade: hot}\n"),
            "test.yaml:3:38: key 'supervisor.children[0].upgrade': unknown upgrade mode 'hot' "
            "(expected one of restart, handoff)");
  EXPECT_EQ(LoadError("supervisor:\n  children:\n    - {id: w, command: [w], ready: exec, "
                      "upgrade: handoff}\n"),
            "test.yaml:3:51: key 'supervisor.children[0].upgrade': upgrade: handoff needs ready: "
            "notify (the hand-off starts when the new process is ready)");
  EXPECT_EQ(LoadError("supervisor:\n  children:\n    - {id: w, command: [w], upgrade: handoff, "
                      "env: {SWITCHBOARD_HANDOFF: receive}}\n"),
            "test.yaml:3:52: key 'supervisor.children[0].env': environment variable "
            "SWITCHBOARD_HANDOFF is set by the daemon for upgrade: handoff");
  const std::string long_id(90, 'w');
  EXPECT_EQ(LoadError("supervisor:\n  children:\n    - {id: " + long_id +
                      ", command: [w], upgrade: handoff}\n"),
            "test.yaml:3:127: key 'supervisor.children[0].upgrade': the hand-off socket path "
            "/tmp/switchboard/handoff/" +
                long_id +
                ".sock would be 120 bytes; Unix sockets allow at most 107 (shorten the id or "
                "node.control)");
  EXPECT_EQ(LoadError("supervisor:\n  children:\n    - {id: s, type: supervisor, upgrade: "
                      "handoff, children: []}\n"),
            "test.yaml:3:33: key 'supervisor.children[0].upgrade': 'upgrade' is a worker key and "
            "this child has type: supervisor");
}

TEST(SpecLoaderErrorTest, UnknownTopLevelAndNodeKeys) {
  EXPECT_EQ(LoadError("supervisor: {}\nsuprvisor: {}\n"),
            "test.yaml:2:1: key 'suprvisor': unknown key 'suprvisor' (allowed here: node, "
            "sockets, supervisor, cluster)");
  EXPECT_EQ(LoadError("node:\n  metric: 127.0.0.1:9100\nsupervisor: {}\n"),
            "test.yaml:2:3: key 'node.metric': unknown key 'metric' (allowed here: name, "
            "control, events, metrics, file_sd, api)");
  EXPECT_EQ(LoadError("supervisor: {restart: permanent}\n"),
            "test.yaml:1:14: key 'supervisor.restart': unknown key 'restart' (allowed here: id, "
            "strategy, intensity, period, children)");
}

TEST(SpecLoaderErrorTest, WorkerKeyOnASupervisor) {
  EXPECT_EQ(LoadError(R"(supervisor:
  children:
    - id: s
      type: supervisor
      replicas: 2
)"),
            "test.yaml:5:7: key 'supervisor.children[0].replicas': 'replicas' is a worker key and "
            "this child has type: supervisor");
}

TEST(SpecLoaderErrorTest, SupervisorKeyOnAWorker) {
  EXPECT_EQ(LoadError(R"(supervisor:
  children:
    - id: w
      command: [w]
      strategy: one_for_all
)"),
            "test.yaml:5:7: key 'supervisor.children[0].strategy': 'strategy' is a supervisor "
            "key; add type: supervisor to make this child a supervisor");
}

TEST(SpecLoaderErrorTest, CommandAsAString) {
  EXPECT_EQ(LoadError(R"(supervisor:
  children:
    - id: w
      command: switchboard-worker --port 4000
)"),
            "test.yaml:4:16: key 'supervisor.children[0].command': command must be a list of "
            "strings, e.g. [\"switchboard-worker --port 4000\"]; it is not split on spaces");
}

TEST(SpecLoaderErrorTest, BadCommandLists) {
  EXPECT_EQ(LoadError("supervisor:\n  children:\n    - {id: w, command: []}\n"),
            "test.yaml:3:24: key 'supervisor.children[0].command': command must not be empty");
  EXPECT_EQ(LoadError("supervisor:\n  children:\n    - {id: w, command: [w, [x]]}\n"),
            "test.yaml:3:28: key 'supervisor.children[0].command[1]': expected a string, found "
            "a list");
  EXPECT_EQ(LoadError("supervisor:\n  children:\n    - {id: w, command: [w, null]}\n"),
            "test.yaml:3:28: key 'supervisor.children[0].command[1]': expected a string, found "
            "no value");
  EXPECT_EQ(LoadError("supervisor:\n  children:\n    - {id: w, command: [\"\", x]}\n"),
            "test.yaml:3:25: key 'supervisor.children[0].command[0]': the program name is empty");
}

TEST(SpecLoaderErrorTest, BadEnv) {
  EXPECT_EQ(LoadError(R"(supervisor:
  children:
    - id: w
      command: [w]
      env:
        EMPTY:
)"),
            "test.yaml:6:9: key 'supervisor.children[0].env.EMPTY': expected a string (write \"\" "
            "for an empty value), found no value");
  EXPECT_EQ(LoadError("supervisor:\n  children:\n    - {id: w, command: [w], env: [A=1]}\n"),
            "test.yaml:3:34: key 'supervisor.children[0].env': expected a map of NAME: value");
  EXPECT_EQ(LoadError("supervisor:\n  children:\n    - {id: w, command: [w], env: {A=B: 1}}\n"),
            "test.yaml:3:35: key 'supervisor.children[0].env.A=B': environment variable names "
            "must be non-empty and contain no '='");
}

TEST(SpecLoaderErrorTest, BadEnumValues) {
  EXPECT_EQ(LoadError("supervisor:\n  children:\n    - {id: w, command: [w], restart: always}\n"),
            "test.yaml:3:38: key 'supervisor.children[0].restart': unknown restart type 'always' "
            "(expected one of permanent, transient, temporary)");
  EXPECT_EQ(LoadError("supervisor:\n  children:\n    - {id: w, command: [w], ready: socket}\n"),
            "test.yaml:3:36: key 'supervisor.children[0].ready': unknown ready mode 'socket' "
            "(expected one of notify, exec)");
  EXPECT_EQ(LoadError("supervisor:\n  children:\n    - {id: w, type: process}\n"),
            "test.yaml:3:21: key 'supervisor.children[0].type': unknown type 'process' (expected "
            "one of worker, supervisor)");
}

TEST(SpecLoaderErrorTest, NullValueIsReportedAtItsKey) {
  EXPECT_EQ(LoadError(R"(supervisor:
  strategy:
  intensity: 2
)"),
            "test.yaml:2:3: key 'supervisor.strategy': expected one of one_for_one, one_for_all, "
            "rest_for_one, simple_one_for_one, found no value");
}

TEST(SpecLoaderErrorTest, BadExitCodesAndReplicas) {
  EXPECT_EQ(LoadError(R"(supervisor:
  children:
    - id: w
      command: [w]
      success_exit_codes: [0, 256]
)"),
            "test.yaml:5:31: key 'supervisor.children[0].success_exit_codes[1]': expected an "
            "integer from 0 to 255, found '256'");
  EXPECT_EQ(LoadError(R"(supervisor:
  children:
    - id: w
      command: [w]
      replicas: -1
)"),
            "test.yaml:5:17: key 'supervisor.children[0].replicas': expected an integer from 0 "
            "to 10000, found '-1'");
  EXPECT_EQ(LoadError("supervisor:\n  children:\n    - {id: w, command: [w], replicas: 2.5}\n"),
            "test.yaml:3:39: key 'supervisor.children[0].replicas': expected an integer from 0 "
            "to 10000, found '2.5'");
}

TEST(SpecLoaderErrorTest, SimpleOneForOneWithTwoChildren) {
  EXPECT_EQ(LoadError(R"(supervisor:
  strategy: simple_one_for_one
  children:
    - id: a
      command: [a]
    - id: b
      command: [b]
)"),
            "test.yaml:6:7: key 'supervisor.children': a simple_one_for_one supervisor needs "
            "exactly one child spec (the template for its instances), found 2");
}

TEST(SpecLoaderErrorTest, SimpleOneForOneWithNoChildren) {
  EXPECT_EQ(LoadError(R"(supervisor:
  children:
    - id: pool
      type: supervisor
      strategy: simple_one_for_one
      children: []
)"),
            "test.yaml:6:17: key 'supervisor.children[0].children': a simple_one_for_one "
            "supervisor needs exactly one child spec (the template for its instances), found 0");
  EXPECT_EQ(LoadError("supervisor:\n  strategy: simple_one_for_one\n"),
            "test.yaml:2:3: key 'supervisor.children': a simple_one_for_one supervisor needs "
            "exactly one child spec (the template for its instances), found 0");
}

TEST(SpecLoaderErrorTest, SimpleOneForOneTemplateMustBeAWorker) {
  EXPECT_EQ(LoadError(R"(supervisor:
  strategy: simple_one_for_one
  children:
    - id: sub
      type: supervisor
)"),
            "test.yaml:5:13: key 'supervisor.children[0].type': the child of a simple_one_for_one "
            "supervisor is the template for its instances and must be a worker");
}

TEST(SpecLoaderErrorTest, DuplicateYamlKey) {
  EXPECT_EQ(LoadError(R"(supervisor:
  intensity: 1
  period: 5s
  intensity: 5
)"),
            "test.yaml:4:3: key 'supervisor.intensity': duplicate key 'intensity' (first defined "
            "at 2:3)");
}

TEST(SpecLoaderErrorTest, YamlSyntaxError) {
  EXPECT_EQ(LoadError(R"(supervisor:
  children:
    - id: a
      command: [a, b
)"),
            "test.yaml:5:1: end of sequence flow not found");
  EXPECT_EQ(LoadError("supervisor:\n  id: \"root"), "test.yaml:2:12: illegal EOF in scalar");
  EXPECT_EQ(LoadError("supervisor:\n  id: a\n strategy: one_for_all\n"),
            "test.yaml:3:2: end of map not found");
  EXPECT_EQ(LoadError("node: &n {name: a}\nsupervisor: *m\n"),
            "test.yaml:2:13: the referenced anchor is not defined");
}

TEST(SpecLoaderErrorTest, EmptyConfiguration) {
  EXPECT_EQ(LoadError(""), "test.yaml:1:1: empty configuration");
  EXPECT_EQ(LoadError("# nothing yet\n\n"), "test.yaml:1:1: empty configuration");
  EXPECT_EQ(LoadError("---\n"), "test.yaml:1:1: empty configuration");
}

TEST(SpecLoaderErrorTest, TopLevelShape) {
  EXPECT_EQ(LoadError("- supervisor\n"),
            "test.yaml:1:1: the configuration must be a map with the keys node, sockets, "
            "supervisor, cluster");
  EXPECT_EQ(LoadError("node: {name: a}\n"),
            "test.yaml:1:1: key 'supervisor': required key is missing (it is the root of the "
            "supervision tree)");
  EXPECT_EQ(LoadError("supervisor: root\n"),
            "test.yaml:1:13: key 'supervisor': expected a map with keys id, strategy, intensity, "
            "period, children");
  EXPECT_EQ(LoadError("supervisor: {}\n---\nsupervisor: {}\n"),
            "test.yaml:3:1: only one YAML document is allowed; remove the second '---' section");
}

TEST(SpecLoaderErrorTest, BadNode) {
  EXPECT_EQ(LoadError("node:\n  name: my node\nsupervisor: {}\n"),
            "test.yaml:2:9: key 'node.name': invalid node name 'my node': must match "
            "[A-Za-z0-9_.-]+");
  EXPECT_EQ(LoadError("node: {control: ''}\nsupervisor: {}\n"),
            "test.yaml:1:17: key 'node.control': control socket path is empty");
  EXPECT_EQ(LoadError("node: {control: /" + std::string(107, 'x') + "}\nsupervisor: {}\n"),
            "test.yaml:1:17: key 'node.control': control socket path is 108 bytes; Unix sockets "
            "allow at most 107");
}

TEST(SpecLoaderErrorTest, BadNodeApi) {
  EXPECT_EQ(
      LoadError("node:\n  api: {url: \"https://127.0.0.1:4000\", key_file: k}\nsupervisor: {}\n"),
      "test.yaml:2:14: key 'node.api.url': expected http://HOST:PORT, e.g. "
      "\"http://127.0.0.1:4000\" (only http:// is spoken), found 'https://127.0.0.1:4000'");
  EXPECT_EQ(LoadError("node:\n  api: {url: \"http://127.0.0.1:4000\"}\nsupervisor: {}\n"),
            "test.yaml:2:8: key 'node.api.key_file': required key is missing (the API needs its "
            "bearer key)");
  EXPECT_EQ(LoadError("node:\n  api: {url: \"http://127.0.0.1:4000\", key: k}\nsupervisor: {}\n"),
            "test.yaml:2:39: key 'node.api.key': unknown key 'key' (allowed here: url, key_file)");
}

// ---- cluster: ----

constexpr char kKeyA[] = "axL9d&plA.N2ntX5mZ07Y^V}QEdGEx@<AE10FWNt";
constexpr char kKeyB[] = "3/rn-5&9p.!1)gqBcyB-=nP[1^MQNA}w:va[{Z4k";

// A node whose broker is the root's first child; `cluster` is appended.
std::string ClusterYaml(const std::string& cluster) {
  return "node: {name: n1}\n"
         "supervisor:\n"
         "  children:\n"
         "    - {id: broker, command: [switchboard-broker, --bind, \"ipc:///tmp/b\"]}\n"
         "cluster:\n" +
         cluster;
}

TEST(SpecLoaderClusterTest, StaticPeersBecomeBrokerFlags) {
  const TreeSpec spec = LoadOk(
      ClusterYaml("  name: demo\n"
                  "  peer_bind: \"tcp://127.0.0.1:7101\"\n"
                  "  curve_secret_file: /k/n1.key\n"
                  "  peers:\n"
                  "    - {node: n2, broker: \"tcp://127.0.0.1:7102\", curve_public: \"" +
                  std::string(kKeyA) +
                  "\"}\n"
                  "    - {node: n3, broker: \"tcp://host-3.example:7103\", curve_public: \"" +
                  kKeyB + "\"}\n"));
  ASSERT_TRUE(spec.cluster.has_value());
  EXPECT_EQ(spec.cluster->name, "demo");
  EXPECT_EQ(spec.cluster->node, "n1");  // node.name
  EXPECT_EQ(spec.cluster->broker, "broker");
  EXPECT_EQ(
      spec.root.children[0].command,
      (std::vector<std::string>{"switchboard-broker", "--bind", "ipc:///tmp/b", "--node", "n1",
                                "--cluster", "demo", "--membership", "static", "--peer-bind",
                                "tcp://127.0.0.1:7101", "--curve-secret-file", "/k/n1.key",
                                "--peer", "n2=tcp://127.0.0.1:7102=" + std::string(kKeyA), "--peer",
                                "n3=tcp://host-3.example:7103=" + std::string(kKeyB)}));
}

TEST(SpecLoaderClusterTest, EtcdBecomesBrokerFlags) {
  const TreeSpec spec = LoadOk(
      ClusterYaml("  node: alpha\n"
                  "  peer_bind: \"tcp://0.0.0.0:7100\"\n"
                  "  membership: etcd\n"
                  "  insecure: true\n"
                  "  etcd: {endpoints: [\"http://10.0.0.254:2379\", \"http://10.0.0.253:2379\"], "
                  "advertise: \"tcp://10.0.0.1:7100\", ttl: 15s}\n"));
  ASSERT_TRUE(spec.cluster.has_value());
  EXPECT_EQ(spec.root.children[0].command, (std::vector<std::string>{"switchboard-broker",
                                                                     "--bind",
                                                                     "ipc:///tmp/b",
                                                                     "--node",
                                                                     "alpha",
                                                                     "--cluster",
                                                                     "default",
                                                                     "--membership",
                                                                     "etcd",
                                                                     "--peer-bind",
                                                                     "tcp://0.0.0.0:7100",
                                                                     "--insecure",
                                                                     "--etcd",
                                                                     "http://10.0.0.254:2379",
                                                                     "--etcd",
                                                                     "http://10.0.0.253:2379",
                                                                     "--advertise",
                                                                     "tcp://10.0.0.1:7100",
                                                                     "--etcd-ttl-s",
                                                                     "15"}));
  // advertise defaults to peer_bind when the others can reach that.
  const TreeSpec near =
      LoadOk(ClusterYaml("  peer_bind: \"tcp://10.0.0.1:7100\"\n"
                         "  membership: etcd\n"
                         "  etcd: {endpoints: [\"http://10.0.0.254:2379\"]}\n"));
  EXPECT_EQ(near.cluster->advertise, "tcp://10.0.0.1:7100");
  EXPECT_EQ(near.cluster->etcd_ttl_s, 10);
}

TEST(SpecLoaderClusterTest, NoClusterNoFlags) {
  const TreeSpec spec = LoadOk(
      "supervisor:\n  children:\n    - {id: broker, command: [switchboard-broker, --node, x]}\n");
  EXPECT_FALSE(spec.cluster.has_value());
  EXPECT_EQ(spec.root.children[0].command,
            (std::vector<std::string>{"switchboard-broker", "--node", "x"}));
}

TEST(SpecLoaderClusterTest, BrokerInASubSupervisorByItsId) {
  const TreeSpec spec = LoadOk(
      "supervisor:\n"
      "  children:\n"
      "    - id: core\n"
      "      type: supervisor\n"
      "      children:\n"
      "        - {id: hub, command: [switchboard-broker]}\n"
      "cluster: {broker: hub, peer_bind: \"tcp://127.0.0.1:0\"}\n");
  EXPECT_EQ(
      spec.root.children[0].supervisor().children[0].command,
      (std::vector<std::string>{"switchboard-broker", "--node", "node1", "--cluster", "default",
                                "--membership", "static", "--peer-bind", "tcp://127.0.0.1:0"}));
}

TEST(SpecLoaderClusterTest, Errors) {
  const std::string peer_a = std::string("curve_public: \"") + kKeyA + "\"";
  // A flag of the section written by hand too.
  EXPECT_EQ(LoadError("supervisor:\n"
                      "  children:\n"
                      "    - {id: broker, command: [b, \"--peer-bind=tcp://127.0.0.1:1\"]}\n"
                      "cluster: {peer_bind: \"tcp://127.0.0.1:7100\"}\n"),
            "test.yaml:3:33: key 'supervisor.children[0].command[1]': the broker flag --peer-bind "
            "is set by the cluster: section (4:10); remove it from the command");
  EXPECT_EQ(LoadError(ClusterYaml("  peer_bind: \"tcp://127.0.0.1:7100\"\n  nodes: []\n")),
            "test.yaml:7:3: key 'cluster.nodes': unknown key 'nodes' (allowed here: name, node, "
            "broker, peer_bind, curve_secret_file, membership, peers, etcd, insecure)");
  EXPECT_EQ(LoadError(ClusterYaml("  name: demo\n")),
            "test.yaml:6:3: key 'cluster.peer_bind': required key is missing (the other nodes' "
            "brokers connect to it)");
  EXPECT_EQ(LoadError(ClusterYaml("  broker: hub\n  peer_bind: \"tcp://127.0.0.1:7100\"\n")),
            "test.yaml:6:11: key 'cluster.broker': no worker with id 'hub' (the broker child, not "
            "in a replica set or simple_one_for_one) to give the cluster flags to");
  EXPECT_EQ(LoadError(ClusterYaml("  peer_bind: \"127.0.0.1:7100\"\n")),
            "test.yaml:6:14: key 'cluster.peer_bind': expected tcp://HOST:PORT, e.g. "
            "\"tcp://10.0.0.1:7100\", found '127.0.0.1:7100'");
  EXPECT_EQ(LoadError(ClusterYaml("  peer_bind: \"tcp://127.0.0.1:7100\"\n"
                                  "  peers: [{node: n2, broker: \"tcp://127.0.0.1:7102\", "
                                  "curve_public: \"not-a-key\"}]\n")),
            "test.yaml:7:68: key 'cluster.peers[0].curve_public': " +
                curve::Validate("not-a-key").message());
  EXPECT_EQ(LoadError(ClusterYaml("  peer_bind: \"tcp://127.0.0.1:7100\"\n"
                                  "  peers: [{node: n1, broker: \"tcp://127.0.0.1:7102\", " +
                                  peer_a + "}]\n")),
            "test.yaml:7:18: key 'cluster.peers[0].node': peer 'n1' is this node (cluster.node); "
            "list only the other nodes");
  EXPECT_EQ(LoadError(ClusterYaml("  peer_bind: \"tcp://127.0.0.1:7100\"\n"
                                  "  peers:\n"
                                  "    - {node: n2, broker: \"tcp://127.0.0.1:7102\", " +
                                  peer_a +
                                  "}\n"
                                  "    - {node: n2, broker: \"tcp://127.0.0.1:7103\", " +
                                  peer_a + "}\n")),
            "test.yaml:9:14: key 'cluster.peers[1].node': peer 'n2' is listed twice");
  EXPECT_EQ(LoadError(ClusterYaml("  peer_bind: \"tcp://127.0.0.1:7100\"\n"
                                  "  peers: [{node: n2, broker: \"tcp://127.0.0.1:0\", " +
                                  peer_a + "}]\n")),
            "test.yaml:7:30: key 'cluster.peers[0].broker': port must be 1-65535 where a broker "
            "connects");
  EXPECT_EQ(LoadError(ClusterYaml("  peer_bind: \"tcp://127.0.0.1:7100\"\n"
                                  "  membership: etcd\n"
                                  "  peers: []\n")),
            "test.yaml:8:10: key 'cluster.peers': peers: is for membership: static (with etcd the "
            "members come from etcd)");
  EXPECT_EQ(LoadError(ClusterYaml("  peer_bind: \"tcp://127.0.0.1:7100\"\n"
                                  "  etcd: {endpoints: [\"http://127.0.0.1:2379\"]}\n")),
            "test.yaml:7:9: key 'cluster.etcd': etcd: is for membership: etcd (this cluster's "
            "membership is static)");
  EXPECT_EQ(LoadError(ClusterYaml("  peer_bind: \"tcp://127.0.0.1:7100\"\n  membership: etcd\n")),
            "test.yaml:6:3: key 'cluster.etcd': required key is missing (membership: etcd needs "
            "its endpoints)");
  EXPECT_EQ(LoadError(ClusterYaml("  peer_bind: \"tcp://0.0.0.0:7100\"\n  membership: etcd\n"
                                  "  etcd: {endpoints: [\"http://127.0.0.1:2379\"]}\n")),
            "test.yaml:8:9: key 'cluster.etcd.advertise': required key is missing (peer_bind "
            "tcp://0.0.0.0:7100 is not an address the others can reach)");
  EXPECT_EQ(LoadError(ClusterYaml("  peer_bind: \"tcp://127.0.0.1:7100\"\n  membership: etcd\n"
                                  "  etcd: {endpoints: [\"http://127.0.0.1:2379\"], ttl: 1s}\n")),
            "test.yaml:8:53: key 'cluster.etcd.ttl': the lease TTL must be whole seconds from 2s "
            "to 3600s");
  EXPECT_EQ(LoadError(ClusterYaml("  peer_bind: \"tcp://127.0.0.1:7100\"\n  insecure: yes\n")),
            "test.yaml:7:13: key 'cluster.insecure': unknown value 'yes' (expected one of false, "
            "true)");
}

// ---- Files ----

TEST(SpecLoaderFileTest, LoadsAFile) {
  char path[] = "/tmp/spec_loader_test_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  std::ofstream(path) << kFullExample;
  sb::Result<TreeSpec> spec = LoadTreeSpecFile(path);
  ASSERT_TRUE(spec.ok()) << spec.status().message();
  EXPECT_EQ(spec->file, path);
  EXPECT_EQ(spec->root.children.size(), 4u);
  EXPECT_EQ(spec->root, LoadOk(kFullExample).root);

  std::ofstream(path) << "supervisor:\n  period: 5\n";
  sb::Result<TreeSpec> bad = LoadTreeSpecFile(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), sb::Status::Code::kInvalidConfig);
  EXPECT_EQ(bad.status().message(), std::string(path) +
                                        ":2:11: key 'supervisor.period': duration needs a unit "
                                        "(ms, s, m, h): '5'");
  unlink(path);
}

TEST(SpecLoaderFileTest, MissingFileIsAnIoError) {
  sb::Result<TreeSpec> spec = LoadTreeSpecFile("/nonexistent/switchboard.yaml");
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), sb::Status::Code::kIoError);
  EXPECT_EQ(spec.status().message(),
            "unable to read /nonexistent/switchboard.yaml: No such file or directory");
}

TEST(SpecLoaderFileTest, DirectoryIsAnIoError) {
  sb::Result<TreeSpec> spec = LoadTreeSpecFile("/tmp");
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), sb::Status::Code::kIoError);
  EXPECT_EQ(spec.status().message(), "unable to read /tmp: Is a directory");
}

// ---- tree_spec.h helpers ----

TEST(TreeSpecTest, InstantiateReplicaSubstitutesEveryPlaceholder) {
  ChildSpec tmpl = Worker("shard", {"w", "{{replica}}", "--x={{replica}}{{replica}}", "{{other}}"});
  tmpl.env = {{"{{replica}}", "a{{replica}}b"}, {"PLAIN", "v"}};
  tmpl.sockets = {"{{replica}}"};
  const ChildSpec c = InstantiateReplica(tmpl, 12);
  EXPECT_EQ(c.id, "shard.12");
  EXPECT_EQ(c.replica, (ReplicaOf{"shard", 12}));
  EXPECT_EQ(c.command, (std::vector<std::string>{"w", "12", "--x=1212", "{{other}}"}));
  EXPECT_EQ(c.env, (std::vector<std::pair<std::string, std::string>>{{"{{replica}}", "a12b"},
                                                                     {"PLAIN", "v"}}));
  EXPECT_EQ(c.sockets, tmpl.sockets);  // names are not templated
}

TEST(TreeSpecTest, Names) {
  EXPECT_STREQ(StrategyName(Strategy::kOneForOne), "one_for_one");
  EXPECT_STREQ(StrategyName(Strategy::kOneForAll), "one_for_all");
  EXPECT_STREQ(StrategyName(Strategy::kRestForOne), "rest_for_one");
  EXPECT_STREQ(StrategyName(Strategy::kSimpleOneForOne), "simple_one_for_one");
  EXPECT_STREQ(RestartTypeName(RestartType::kPermanent), "permanent");
  EXPECT_STREQ(RestartTypeName(RestartType::kTransient), "transient");
  EXPECT_STREQ(RestartTypeName(RestartType::kTemporary), "temporary");
}

}  // namespace
}  // namespace sb::supervisor
