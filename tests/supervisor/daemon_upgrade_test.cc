// `switchboard upgrade` with the real daemon (docs/UPGRADE.md, the daemon's side of the
// contract): sb-testchild --handoff plays a shard, the new process listening on
// SWITCHBOARD_HANDOFF_SOCKET in SWITCHBOARD_HANDOFF=receive mode and the old one handing a byte
// over on SIGUSR2. Covers a hand-off (same child, new pid, no restart, events, the new process
// serving the inherited socket), rollback when the new process never gets ready or exits first
// (exit 1 with the reason, the old process still serving), a supervisor's children one at a
// time, and a reload that changes a handoff child's environment.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "tests/supervisor/daemon_harness.h"
#include "tests/testutil/testutil.h"

namespace sb::testutil {
namespace {

namespace json = boost::json;
using std::chrono::milliseconds;

constexpr milliseconds kWait{20'000};

std::string Replace(std::string s, const std::string& from, const std::string& to) {
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size())) {
    s.replace(pos, from.size(), to);
  }
  return s;
}

int Sb(const DaemonHarness& h, std::vector<std::string> args, std::string* output) {
  args.push_back("--control");
  args.push_back(h.dir().File("ctl.sock"));
  return RunSwitchboard(args, output);
}

// The worker `id` in `switchboard status --json`: its pid and restarts; {0, -1} if absent.
struct Seen {
  int pid = 0;
  int restarts = -1;
  std::string state;
  int upgrade_pid = 0;
};
Seen Status(const DaemonHarness& h, const std::string& id) {
  std::string out;
  if (Sb(h, {"status", "--json"}, &out) != 0) return {};
  json::error_code ec;
  json::value v = json::parse(out, ec);
  if (ec || !v.is_object()) return {};
  std::vector<const json::object*> stack{&v.at("tree").as_object()};
  while (!stack.empty()) {
    const json::object* n = stack.back();
    stack.pop_back();
    if (n->at("id").as_string() == id) {
      Seen s;
      if (n->at("pid").is_int64()) s.pid = static_cast<int>(n->at("pid").as_int64());
      s.restarts = static_cast<int>(n->at("restarts").as_int64());
      s.state = std::string(n->at("state").as_string());
      if (const json::value* u = n->if_contains("upgrade_pid")) {
        s.upgrade_pid = static_cast<int>(u->as_int64());
      }
      return s;
    }
    if (const json::value* kids = n->if_contains("children")) {
      for (const json::value& k : kids->as_array()) stack.push_back(&k.as_object());
    }
  }
  return {};
}

// Who answers a connection to the shared socket: "child <pid>\n".
std::string WhoServes(int port) {
  UniqueFd c(ConnectTcp("127.0.0.1", port, kWait));
  if (!c.valid()) return "";
  return ReadAll(c.get(), kWait);
}

constexpr char kOneShard[] = R"(
sockets:
  - {name: gw, listen: "127.0.0.1:PORT"}
supervisor:
  children:
    - id: s
      command: ["{{bin}}/sb-testchild", --handoff, --serve, --record, "{{dir}}/rec" EXTRA]
      sockets: [gw]
      start_timeout: 500ms
      upgrade: handoff
)";

std::string OneShard(int port, const std::string& extra = "") {
  return Replace(Replace(kOneShard, "PORT", std::to_string(port)), " EXTRA", extra);
}

class DaemonUpgradeTest : public DaemonTest {
 protected:
  // A shard whose new process behaves as `extra` says: `switchboard upgrade` exits 1 with
  // `reason`, and the old process is still the child and still serving.
  void ExpectRollback(const std::string& extra, const std::string& reason) {
    const int port = FreePort();
    ASSERT_GT(port, 0);
    DaemonHarness& d = Start(OneShard(port, extra));
    ASSERT_TRUE(d.WaitReady());
    const Seen before = Status(d, "s");
    std::string out;
    EXPECT_EQ(Sb(d, {"upgrade", "s"}, &out), 1);
    EXPECT_NE(out.find("upgrade of 's' failed: " + reason), std::string::npos) << out;
    const Seen after = Status(d, "s");
    EXPECT_EQ(after.pid, before.pid);
    EXPECT_EQ(after.restarts, 0);
    EXPECT_EQ(after.state, "running");
    EXPECT_EQ(WhoServes(port), "child " + std::to_string(before.pid) + "\n");
    EXPECT_TRUE(d.WaitFor("s", "upgrade_failed"));
  }
};

TEST_F(DaemonUpgradeTest, HandOffKeepsTheChildAndMovesItToTheNewProcess) {
  const int port = FreePort();
  ASSERT_GT(port, 0);
  DaemonHarness& d = Start(OneShard(port));
  ASSERT_TRUE(d.WaitReady());
  const Seen before = Status(d, "s");
  ASSERT_GT(before.pid, 0);
  EXPECT_EQ(WhoServes(port), "child " + std::to_string(before.pid) + "\n");
  struct stat st {};
  ASSERT_EQ(::stat(d.dir().File("handoff").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);

  std::string out;
  ASSERT_EQ(Sb(d, {"upgrade", "s"}, &out), 0) << out;
  const Seen after = Status(d, "s");
  EXPECT_NE(after.pid, before.pid);
  EXPECT_GT(after.pid, 0);
  EXPECT_EQ(out,
            "s: upgraded, pid " + std::to_string(after.pid) + ", 0 connections moved in 1 ms\n");
  EXPECT_EQ(after.restarts, 0);
  EXPECT_EQ(after.state, "running");
  EXPECT_EQ(d.Trace({"s"}), (std::vector<std::string>{"started:s", "ready:s", "upgrading:s",
                                                      "exited:s", "upgraded:s"}));
  bool found = false;
  for (const EventRecord& e : d.Events()) {
    if (e.event != "upgraded") continue;
    found = true;
    EXPECT_EQ(e.pid, after.pid);
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(WhoServes(port), "child " + std::to_string(after.pid) + "\n");
  // The old process handed over and exited 0 of its own accord.
  std::vector<std::string> old_lines;
  for (const ChildRecord& r : ReadRecords(d.dir().File("rec"))) {
    if (r.pid == before.pid) old_lines.push_back(r.event);
  }
  EXPECT_EQ(old_lines, (std::vector<std::string>{"start", "ready", "handoff-send", "exit"}));

  // And it can be upgraded again.
  ASSERT_EQ(Sb(d, {"upgrade", "s"}, &out), 0) << out;
  EXPECT_NE(Status(d, "s").pid, after.pid);
  EXPECT_EQ(Status(d, "s").restarts, 0);
}

TEST_F(DaemonUpgradeTest, NewProcessNeverReadyRollsBack) {
  ExpectRollback(", --receive-no-ready", "the new process was not ready within 500ms");
}

TEST_F(DaemonUpgradeTest, NewProcessExitingFirstRollsBack) {
  ExpectRollback(", --receive-exit, \"1\"",
                 "the new process exited before the hand-off (exit status 1)");
}

TEST_F(DaemonUpgradeTest, UpgradingChildShowsBothProcessesAndStaysAPrometheusTarget) {
  const int port = FreePort();
  const int metrics = FreePort();
  ASSERT_GT(port, 0);
  ASSERT_GT(metrics, 0);
  const std::string endpoint = "127.0.0.1:" + std::to_string(metrics);
  DaemonHarness& d = Start(Replace(OneShard(port, ", --receive-no-ready"), "start_timeout: 500ms",
                                   "start_timeout: 3s\n      metrics: \"" + endpoint + "\""));
  ASSERT_TRUE(d.WaitReady());
  const std::string targets = d.dir().File("test.targets.json");
  ASSERT_TRUE(
      WaitUntil([&] { return ReadFile(targets).find(endpoint) != std::string::npos; }, kWait));
  const Seen before = Status(d, "s");
  int rc = -1;
  std::string out;
  std::thread upgrade([&] { rc = Sb(d, {"upgrade", "s"}, &out); });
  Seen during;
  EXPECT_TRUE(WaitUntil(
      [&] {
        during = Status(d, "s");
        return during.state == "upgrading" && during.upgrade_pid > 0;
      },
      kWait));
  // The file follows every event: `upgrading` was written out before status could show it.
  const bool listed_during = ReadFile(targets).find(endpoint) != std::string::npos;
  std::string text;
  EXPECT_EQ(Sb(d, {"status"}, &text), 0);
  upgrade.join();
  EXPECT_TRUE(listed_during) << "an upgrading child serves on: it stays a target";
  EXPECT_EQ(during.pid, before.pid);
  EXPECT_NE(during.upgrade_pid, before.pid);
  EXPECT_NE(text.find("upgrading"), std::string::npos) << text;
  EXPECT_NE(text.find("new pid " + std::to_string(during.upgrade_pid) + " taking over"),
            std::string::npos)
      << text;
  EXPECT_EQ(rc, 1) << out;  // the new one never got ready
  EXPECT_NE(ReadFile(targets).find(endpoint), std::string::npos);
  EXPECT_EQ(Status(d, "s").pid, before.pid);
  EXPECT_EQ(Status(d, "s").upgrade_pid, 0);
}

TEST_F(DaemonUpgradeTest, SupervisorUpgradesItsChildrenOneAtATime) {
  DaemonHarness& d = Start(R"(
supervisor:
  children:
    - id: shards
      type: supervisor
      children:
        - id: shard
          command: ["{{bin}}/sb-testchild", --handoff]
          replicas: 2
          upgrade: handoff
        - id: other
          command: ["{{bin}}/sb-testchild"]
)");
  ASSERT_TRUE(d.WaitReady());
  const int other = Status(d, "other").pid;
  std::string out;
  ASSERT_EQ(Sb(d, {"upgrade", "shards"}, &out), 0) << out;
  EXPECT_EQ(out, "shard.0: upgraded, pid " + std::to_string(Status(d, "shard.0").pid) +
                     ", 0 connections moved in 1 ms\nshard.1: upgraded, pid " +
                     std::to_string(Status(d, "shard.1").pid) + ", 0 connections moved in 1 ms\n");
  std::vector<std::string> upgrades;
  for (const std::string& e : d.Trace({"shard.0", "shard.1"})) {
    if (e.rfind("upgrad", 0) == 0) upgrades.push_back(e);
  }
  EXPECT_EQ(upgrades, (std::vector<std::string>{"upgrading:shard.0", "upgraded:shard.0",
                                                "upgrading:shard.1", "upgraded:shard.1"}));
  EXPECT_EQ(Status(d, "other").pid, other);

  EXPECT_EQ(Sb(d, {"upgrade", "other"}, &out), 1);
  EXPECT_NE(out.find("'other' is not a worker with upgrade: handoff"), std::string::npos) << out;
}

TEST_F(DaemonUpgradeTest, ReloadOfAChangedEnvironmentHandsOver) {
  const int port = FreePort();
  ASSERT_GT(port, 0);
  const std::string yaml = OneShard(port);
  DaemonHarness& d = Start(yaml);
  ASSERT_TRUE(d.WaitReady());
  const Seen before = Status(d, "s");
  // The harness prepends its node: section; edit the file it wrote.
  std::string config = ReadFile(d.config_path());
  config = Replace(config, "      upgrade: handoff\n",
                   "      upgrade: handoff\n      env: {TESTCHILD_TAG: v2}\n");
  ASSERT_TRUE(WriteFile(d.config_path(), config));
  std::string out;
  ASSERT_EQ(Sb(d, {"reload"}, &out), 0) << out;
  EXPECT_EQ(out, "root: upgrade s (env changed)\n");
  const Seen after = Status(d, "s");
  EXPECT_NE(after.pid, before.pid);
  EXPECT_EQ(after.restarts, 0);
  EXPECT_EQ(WhoServes(port), "v2 " + std::to_string(after.pid) + "\n");
  EXPECT_TRUE(d.WaitFor("s", "upgraded"));
}

}  // namespace
}  // namespace sb::testutil
