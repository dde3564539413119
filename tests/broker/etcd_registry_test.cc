// EtcdRegistry against a real etcd (Debian's etcd-server), started by the
// test on free 127.0.0.1 ports with its own data directory: nodes see each
// other join and leave, keep their members while etcd is away and find the
// ones that came meanwhile, and register again with a new incarnation when
// their lease is lost. Each "node" is a registry on its own EventLoop; the
// test turns every loop in one thread.

#include "broker/etcd_registry.h"

#include <gtest/gtest.h>

#include <memory>

#include "common/event_loop.h"
#include "tests/broker/etcd_server.h"
#include "tests/testutil/testutil.h"

namespace sb::broker {
namespace {

using namespace std::chrono_literals;
namespace tu = sb::testutil;

constexpr char kCluster[] = "test";
constexpr char kKeyA[] = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";

struct Node {
  Node(const std::string& name, const std::string& etcd_url, int ttl_s = 10)
      : loop(std::move(EventLoop::Create()).value()), membership(name) {
    EtcdOptions o;
    o.endpoints = {etcd_url};
    o.cluster = kCluster;
    o.self = {.name = name,
              .endpoint = "tcp://127.0.0.1:" + std::to_string(7000 + name[0]),
              .curve_public = kKeyA};
    o.ttl_s = ttl_s;
    auto r =
        EtcdRegistry::Create(loop.get(), o, &membership, [this](std::span<const MemberEvent> evs) {
          events.insert(events.end(), evs.begin(), evs.end());
        });
    EXPECT_TRUE(r.ok()) << r.status().message();
    if (r.ok()) registry = std::move(r).value();
  }

  // The member `name` as this node sees it, nullptr if it is none.
  const Member* Sees(const std::string& name) const {
    auto it = membership.members().find(name);
    return it == membership.members().end() ? nullptr : &it->second;
  }
  bool Saw(MemberEventKind kind, const std::string& name) const {
    for (const MemberEvent& e : events) {
      if (e.kind == kind && e.member.name == name) return true;
    }
    return false;
  }

  std::unique_ptr<EventLoop> loop;
  Membership membership;
  std::vector<MemberEvent> events;
  std::unique_ptr<EtcdRegistry> registry;
};

class EtcdRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string binary = tu::FindEtcd();
    if (binary.empty()) {
      GTEST_SKIP() << "etcd is not installed (Debian: apt-get install etcd-server; "
                      "tools/install-deps.sh installs it)";
    }
    etcd_ = std::make_unique<tu::EtcdServer>(binary);
    ASSERT_TRUE(etcd_->Start()) << etcd_->log();
  }

  Node& AddNode(const std::string& name, int ttl_s = 10) {
    nodes_.push_back(std::make_unique<Node>(name, etcd_->url(), ttl_s));
    return *nodes_.back();
  }
  void RemoveNode(Node& n) {
    std::erase_if(nodes_, [&](const std::unique_ptr<Node>& p) { return p.get() == &n; });
  }

  // Turns every node's loop until `cond` holds or `deadline` passes.
  bool Pump(const std::function<bool()>& cond, std::chrono::milliseconds deadline) {
    auto end = std::chrono::steady_clock::now() + deadline;
    while (!cond()) {
      if (std::chrono::steady_clock::now() > end) return false;
      for (auto& n : nodes_) n->loop->RunOnce(std::chrono::milliseconds(2));
    }
    return true;
  }

  // Both see the other as it registered itself.
  static bool Mutual(const Node& a, const Node& b) {
    const Member* ab = a.Sees(b.membership.self());
    const Member* ba = b.Sees(a.membership.self());
    return ab != nullptr && ba != nullptr && ab->incarnation == b.registry->incarnation() &&
           ba->incarnation == a.registry->incarnation();
  }

  std::unique_ptr<tu::EtcdServer> etcd_;
  std::vector<std::unique_ptr<Node>> nodes_;
};

TEST_F(EtcdRegistryTest, TwoNodesSeeEachOtherJoin) {
  Node& a = AddNode("a");
  Node& b = AddNode("b");
  ASSERT_TRUE(Pump([&] { return Mutual(a, b) && a.registry->up() && b.registry->up(); }, 10s));
  EXPECT_EQ(a.Sees("b")->endpoint, "tcp://127.0.0.1:" + std::to_string(7000 + 'b'));
  EXPECT_EQ(a.Sees("b")->curve_public, kKeyA);
  EXPECT_TRUE(a.Saw(MemberEventKind::kJoined, "b"));
  EXPECT_TRUE(b.Saw(MemberEventKind::kJoined, "a"));
  EXPECT_EQ(a.membership.members().size(), 1u);  // never itself
  EXPECT_EQ(a.registry->registrations(), 1u);
}

TEST_F(EtcdRegistryTest, ANodeThatLeavesIsSeenLeavingAtOnce) {
  Node& a = AddNode("a");
  Node& b = AddNode("b");
  ASSERT_TRUE(Pump([&] { return Mutual(a, b); }, 10s));
  b.registry->Leave(1s);  // revokes the lease: no waiting for the TTL (10 s)
  RemoveNode(b);
  ASSERT_TRUE(Pump([&] { return a.Saw(MemberEventKind::kLeft, "b"); }, 5s));
  EXPECT_TRUE(a.membership.members().empty());
}

TEST_F(EtcdRegistryTest, ASilentNodeLeavesWhenItsLeaseRunsOut) {
  Node& a = AddNode("a", 2);
  Node& b = AddNode("b", 2);
  ASSERT_TRUE(Pump([&] { return Mutual(a, b); }, 10s));
  RemoveNode(b);  // gone without a word: its lease is no longer kept alive
  auto gone = std::chrono::steady_clock::now();
  ASSERT_TRUE(Pump([&] { return a.Saw(MemberEventKind::kLeft, "b"); }, 10s));
  // The TTL and etcd's expiry check (every 500 ms) bound it.
  EXPECT_LT(std::chrono::steady_clock::now() - gone, 4s);
  EXPECT_TRUE(a.registry->up());
}

TEST_F(EtcdRegistryTest, EtcdAwayKeepsMembersAndANodeStartedMeanwhileJoinsWhenItIsBack) {
  Node& a = AddNode("a");
  Node& b = AddNode("b");
  ASSERT_TRUE(Pump([&] { return Mutual(a, b) && a.registry->up(); }, 10s));
  etcd_->Stop();
  ASSERT_TRUE(Pump([&] { return !a.registry->up() && !b.registry->up(); }, 10s));
  Node& c = AddNode("c");
  // etcd stays away a while; every turn, the members are the ones known.
  bool kept = true;
  auto away_until = std::chrono::steady_clock::now() + 1500ms;
  Pump(
      [&] {
        kept = kept && a.Sees("b") != nullptr && b.Sees("a") != nullptr;
        return std::chrono::steady_clock::now() > away_until;
      },
      3s);
  EXPECT_TRUE(kept);
  EXPECT_FALSE(c.registry->up());
  EXPECT_TRUE(c.membership.members().empty());
  ASSERT_TRUE(etcd_->Start()) << etcd_->log();
  ASSERT_TRUE(Pump(
      [&] {
        return Mutual(a, c) && Mutual(b, c) && Mutual(a, b) && a.registry->up() &&
               b.registry->up() && c.registry->up();
      },
      15s));
  // The outage was shorter than the TTL: a and b kept their leases.
  EXPECT_EQ(a.registry->registrations(), 1u);
  EXPECT_FALSE(a.Saw(MemberEventKind::kLeft, "b"));
}

TEST_F(EtcdRegistryTest, ALostLeaseMeansANewRegistrationWithANewIncarnation) {
  Node& a = AddNode("a");
  Node& b = AddNode("b");
  ASSERT_TRUE(Pump([&] { return Mutual(a, b); }, 10s));
  const std::string first = a.registry->incarnation();
  const int64_t lease = etcd_->LeaseOf(MemberKeyPrefix(kCluster) + "a");
  ASSERT_NE(lease, 0);
  ASSERT_TRUE(etcd_->Post("/v3/lease/revoke", {{"ID", std::to_string(lease)}}));
  ASSERT_TRUE(Pump(
      [&] {
        return a.registry->registrations() == 2 && a.registry->incarnation() != first &&
               Mutual(a, b);
      },
      10s));
  EXPECT_NE(etcd_->LeaseOf(MemberKeyPrefix(kCluster) + "a"), lease);
  EXPECT_EQ(b.Sees("a")->incarnation, a.registry->incarnation());
}

TEST_F(EtcdRegistryTest, ARestartedNodeWaitsForItsOldRecordThenRegisters) {
  Node& b = AddNode("b", 2);
  {
    Node& old_a = AddNode("a", 2);
    ASSERT_TRUE(Pump([&] { return Mutual(old_a, b); }, 10s));
    RemoveNode(old_a);  // killed: its record stays until the lease runs out
  }
  const std::string old_incarnation = b.Sees("a")->incarnation;
  Node& a = AddNode("a", 2);
  // It lists and watches at once, and sees b before its own record is in.
  ASSERT_TRUE(Pump([&] { return a.Sees("b") != nullptr; }, 10s));
  ASSERT_TRUE(Pump([&] { return Mutual(a, b); }, 10s));
  EXPECT_NE(b.Sees("a")->incarnation, old_incarnation);
  EXPECT_EQ(a.registry->registrations(), 1u);
}

TEST_F(EtcdRegistryTest, ABadRecordIsSkippedAndCounted) {
  Node& a = AddNode("a");
  ASSERT_TRUE(Pump([&] { return a.registry->up(); }, 10s));
  ASSERT_TRUE(etcd_->Post("/v3/kv/put", {{"key", GatewayBase64(MemberKeyPrefix(kCluster) + "x")},
                                         {"value", GatewayBase64("{\"broker\":")}}));
  ASSERT_TRUE(Pump([&] { return a.membership.bad_records() == 1; }, 5s));
  EXPECT_TRUE(a.membership.members().empty());
  EXPECT_TRUE(a.registry->up());
}

}  // namespace
}  // namespace sb::broker
