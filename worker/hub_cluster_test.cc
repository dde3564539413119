// Hub in a cluster: what it tells the broker (subscribe, unsubscribe,
// presence, publish) and what it does with other shards' presence.

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>
#include <vector>

#include "protocol/testing/json.h"
#include "protocol/testing/phoenix_message.h"
#include "worker/hub.h"

namespace sb::worker {
namespace {

using Kind = Action::Kind;

using test::Json;
using test::Msg;

std::vector<const Action*> OfKind(const std::vector<Action>& actions, Kind kind) {
  std::vector<const Action*> out;
  for (const Action& a : actions) {
    if (a.kind == kind) out.push_back(&a);
  }
  return out;
}

// The session's state as the hub asks for it.
struct FakeCluster : ClusterView {
  bool up() const override { return is_up; }
  bool CanPublish(size_t) const override { return open; }
  bool is_up = false;
  bool open = true;
};

class HubClusterTest : public ::testing::Test {
 protected:
  HubClusterTest() : hub_({.messages_per_second = 0}, "s1.x.", &cluster_) {
    hub_.Connect(1, std::nullopt);
    hub_.Connect(2, std::nullopt);
  }
  std::vector<Action> Handle(ConnId conn, const phx::Message& msg) {
    std::vector<Action> out;
    hub_.Handle(conn, msg, 1000, &out);
    return out;
  }
  FakeCluster cluster_;
  Hub hub_;
};

TEST_F(HubClusterTest, TheFirstSubscriberSubscribesAndTheLastUnsubscribes) {
  auto a = Handle(1, Msg("1", "1", "room:1", "phx_join"));
  ASSERT_EQ(OfKind(a, Kind::kSubscribe).size(), 1u);
  EXPECT_EQ(OfKind(a, Kind::kSubscribe)[0]->topic, "room:1");
  EXPECT_TRUE(OfKind(Handle(2, Msg("1", "1", "room:1", "phx_join")), Kind::kSubscribe).empty());
  EXPECT_TRUE(OfKind(Handle(1, Msg("1", "1", "room:1", "phx_leave")), Kind::kUnsubscribe).empty());
  std::vector<Action> out;
  hub_.Disconnect(2, &out);
  ASSERT_EQ(OfKind(out, Kind::kUnsubscribe).size(), 1u);
  EXPECT_EQ(OfKind(out, Kind::kUnsubscribe)[0]->topic, "room:1");
}

TEST_F(HubClusterTest, LocalPresenceChangesAreToldToTheBroker) {
  auto a = Handle(
      1, Msg("1", "1", "room:1", "phx_join", R"({"presence":{"key":"alice","meta":{"x":1}}})"));
  auto p = OfKind(a, Kind::kPresence);
  ASSERT_EQ(p.size(), 1u);
  Result<mesh::PresenceChange> change = mesh::DecodePresenceChange(p[0]->data);
  ASSERT_TRUE(change.ok()) << change.status().message();
  ASSERT_EQ(change->joins.size(), 1u);
  EXPECT_EQ(change->joins[0].key, "alice");
  EXPECT_EQ(change->joins[0].phx_ref, "s1.x.1");
  EXPECT_EQ(Json(change->joins[0].meta_json), Json(R"({"phx_ref":"s1.x.1","x":1})"));

  std::vector<Action> out;
  hub_.Disconnect(1, &out);
  p = OfKind(out, Kind::kPresence);
  ASSERT_EQ(p.size(), 1u);
  change = mesh::DecodePresenceChange(p[0]->data);
  ASSERT_TRUE(change.ok());
  ASSERT_EQ(change->leaves.size(), 1u);
  EXPECT_EQ(change->leaves[0].phx_ref, "s1.x.1");
}

TEST_F(HubClusterTest, ClientBroadcastsArePublishedAndRefusedWhileTheOutboxIsFull) {
  Handle(1, Msg("1", "1", "room:1", "phx_join"));
  auto a = Handle(1, Msg("1", "1", "room:1", "msg", R"({"t":1})"));
  auto f = OfKind(a, Kind::kBroadcast);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_TRUE(f[0]->publish);

  cluster_.open = false;
  a = Handle(1, Msg("1", "1", "room:1", "msg", R"({"t":2})"));
  EXPECT_TRUE(OfKind(a, Kind::kBroadcast).empty()) << "refused: not even local sockets get it";
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(
      Json(a[0].data),
      Json(
          R"(["1","1","room:1","phx_reply",{"status":"error","response":{"reason":"unavailable"}}])"));
  EXPECT_EQ(hub_.stats().broadcasts_refused, 1u);
}

TEST_F(HubClusterTest, ARemoteSnapshotIsFannedOutAsADiffAndJoinersSeeTheWholeCluster) {
  Handle(1, Msg("1", "1", "room:1", "phx_join", R"({"presence":{"key":"alice"}})"));
  std::vector<Action> out;
  hub_.RemoteSnapshot("room:1", R"({"bob":{"metas":[{"phx_ref":"s2.y.1"}]}})", &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].kind, Kind::kBroadcast);
  EXPECT_FALSE(out[0].publish) << "other shards' presence never goes back to the broker";
  EXPECT_EQ(
      Json(out[0].data),
      Json(
          R"([null,null,"room:1","presence_diff",{"joins":{"bob":{"metas":[{"phx_ref":"s2.y.1"}]}},"leaves":{}}])"));

  auto a = Handle(2, Msg("5", "5", "room:1", "phx_join"));
  bool found = false;
  for (const Action& x : a) {
    boost::json::value v = Json(x.data);
    if (v.as_array()[3] != "presence_state") continue;
    found = true;
    const auto& state = v.as_array()[4].as_object();
    EXPECT_TRUE(state.contains("alice"));
    EXPECT_TRUE(state.contains("bob"));
  }
  EXPECT_TRUE(found);

  out.clear();
  hub_.RemoteDiff("room:1", R"({"joins":{},"leaves":{"bob":{"metas":[{"phx_ref":"s2.y.1"}]}}})",
                  &out);
  ASSERT_EQ(out.size(), 1u);
  out.clear();
  hub_.RemoteDiff("room:other", R"({"joins":{},"leaves":{}})", &out);
  EXPECT_TRUE(out.empty()) << "a topic without local subscribers is none of this shard's business";
  hub_.RemoteDiff("room:1", "not json", &out);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(hub_.stats().remote_invalid, 1u);
}

TEST_F(HubClusterTest, ClusterStateListsSubscribedTopicsAndLocalMetas) {
  Handle(1, Msg("1", "1", "room:1", "phx_join", R"({"presence":{"key":"alice"}})"));
  Handle(2, Msg("1", "1", "room:2", "phx_join"));
  std::vector<std::string> topics;
  std::vector<mesh::TopicState> presence;
  hub_.ClusterState(&topics, &presence);
  std::sort(topics.begin(), topics.end());
  EXPECT_EQ(topics, (std::vector<std::string>{"room:1", "room:2"}));
  ASSERT_EQ(presence.size(), 1u);
  EXPECT_EQ(presence[0].topic, "room:1");
  ASSERT_EQ(presence[0].metas.size(), 1u);
  EXPECT_EQ(presence[0].metas[0].key, "alice");
}

// The presence_state pushes in `actions`, by socket.
std::vector<std::pair<ConnId, boost::json::value>> States(const std::vector<Action>& actions) {
  std::vector<std::pair<ConnId, boost::json::value>> out;
  for (const Action& a : actions) {
    if (a.kind != Kind::kSend) continue;
    boost::json::value v = Json(a.data);
    if (v.as_array()[3] == "presence_state") out.emplace_back(a.conn, v.as_array()[4]);
  }
  return out;
}

TEST_F(HubClusterTest, TheFirstJoinerOfATopicGetsItsStateWithTheOtherShardsPresence) {
  cluster_.is_up = true;
  auto a = Handle(1, Msg("1", "1", "room:1", "phx_join", R"({"presence":{"key":"alice"}})"));
  EXPECT_TRUE(States(a).empty()) << "waits for the broker's snapshot";
  std::vector<Action> out;
  hub_.RemoteSnapshot("room:1", R"({"bob":{"metas":[{"phx_ref":"s2.y.1"}]}})", &out);
  auto states = States(out);
  ASSERT_EQ(states.size(), 1u);
  EXPECT_EQ(states[0].first, 1u);
  EXPECT_TRUE(states[0].second.as_object().contains("alice"));
  EXPECT_TRUE(states[0].second.as_object().contains("bob"));
  // The state comes before the diff that brings bob to the others.
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1].kind, Kind::kBroadcast);
  // Once known, the next joiner gets it at once.
  EXPECT_EQ(States(Handle(2, Msg("1", "1", "room:1", "phx_join"))).size(), 1u);
}

TEST_F(HubClusterTest, AJoinerDoesNotWaitForeverForTheBroker) {
  cluster_.is_up = true;
  Handle(1, Msg("1", "1", "room:1", "phx_join"));
  std::vector<Action> out;
  hub_.SendOverdueStates(1000 + Hub::kStateWaitMs - 1, &out);
  EXPECT_TRUE(out.empty());
  hub_.SendOverdueStates(1000 + Hub::kStateWaitMs, &out);
  ASSERT_EQ(States(out).size(), 1u);
  out.clear();
  hub_.SendOverdueStates(5000, &out);
  EXPECT_TRUE(out.empty()) << "sent once";

  cluster_.is_up = false;  // no broker: nobody to wait for
  EXPECT_EQ(States(Handle(2, Msg("1", "1", "room:2", "phx_join"))).size(), 1u);
}

TEST_F(HubClusterTest, AWaitingJoinerThatLeftGetsNoState) {
  cluster_.is_up = true;
  Handle(1, Msg("1", "1", "room:1", "phx_join"));
  Handle(2, Msg("1", "1", "room:1", "phx_join"));
  Handle(1, Msg("1", "1", "room:1", "phx_leave"));
  std::vector<Action> out;
  hub_.RemoteSnapshot("room:1", "{}", &out);
  auto states = States(out);
  ASSERT_EQ(states.size(), 1u);
  EXPECT_EQ(states[0].first, 2u);
}

}  // namespace
}  // namespace sb::worker

namespace sb::worker {
namespace {

class HubApiTest : public HubClusterTest {};

TEST_F(HubApiTest, AnApiPublishGoesToLocalSubscribersAndTheBrokerWithThePayloadAsGiven) {
  Handle(1, Msg("1", "1", "room:1", "phx_join"));
  std::vector<Action> out;
  hub_.Publish("room:1", "msg", R"({ "a" : 1.50 })", &out);
  ASSERT_EQ(out.size(), 1u);
  const Action& a = out[0];
  EXPECT_EQ(a.kind, Kind::kBroadcast);
  EXPECT_EQ(a.data, R"([null,null,"room:1","msg",{ "a" : 1.50 }])");
  EXPECT_EQ(a.conn, 0u) << "nobody excepted";
  EXPECT_TRUE(a.publish);
  ASSERT_EQ(a.recipients.size(), 1u);
  EXPECT_EQ(a.recipients[0], 1u);
  EXPECT_EQ(hub_.stats().broadcasts, 1u);
  // A topic nobody here joined still goes to the rest of the cluster.
  out.clear();
  hub_.Publish("room:none", "msg", "1", &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].recipients.empty());
  EXPECT_TRUE(out[0].publish);
}

TEST_F(HubApiTest, AKeyedApiPublishIsDeliveredByTheBrokerNotHere) {
  Handle(1, Msg("1", "1", "room:1", "phx_join"));
  std::vector<Action> out;
  hub_.Publish("room:1", "msg", "1", &out, "order-17");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].kind, Kind::kBroadcast);
  EXPECT_TRUE(out[0].recipients.empty()) << "no local delivery: the broker decides";
  EXPECT_TRUE(out[0].publish);
  EXPECT_EQ(out[0].key, "order-17");
  EXPECT_EQ(out[0].data, R"([null,null,"room:1","msg",1])");
  // When the broker routes it back, the local subscriber gets it.
  EXPECT_EQ(hub_.Deliver("room:1").size(), 1u);
}

TEST_F(HubApiTest, PresenceStateIsKnownOnlyOnceTheBrokerHasSaidWhoElseIsThere) {
  cluster_.is_up = true;
  EXPECT_FALSE(hub_.PresenceState("room:1")) << "no local subscriber";
  Handle(1, Msg("1", "1", "room:1", "phx_join", R"({"presence":{"key":"alice","meta":{}}})"));
  EXPECT_FALSE(hub_.PresenceState("room:1")) << "the snapshot has not come";
  std::vector<Action> out;
  hub_.RemoteSnapshot("room:1", R"({"bob":{"metas":[{"phx_ref":"s2.y.1"}]}})", &out);
  std::optional<std::string> state = hub_.PresenceState("room:1");
  ASSERT_TRUE(state);
  EXPECT_EQ(Json(*state), Json(R"({"alice":{"metas":[{"phx_ref":"s1.x.1"}]},
                                   "bob":{"metas":[{"phx_ref":"s2.y.1"}]}})"));
}

// A join to a topic that keeps history hands the shard where the client says
// it is; the hub only reads the position, and any it cannot read counts as
// not asked.
class HubHistoryTest : public HubClusterTest {
 protected:
  HubHistoryTest() { hub_.KeepHistory(&rules_); }
  std::optional<history::Position> RecoverFrom(const std::string& offset_json) {
    const std::string payload = R"({"recover":{"epoch":")" + history::FormatEpoch(kStream) +
                                R"(","offset":)" + offset_json + "}}";
    // Kept while `joins` points into it.
    const std::vector<Action> actions = Handle(1, Msg("1", "1", "room:1", "phx_join", payload));
    std::vector<const Action*> joins = OfKind(actions, Kind::kJoinHistory);
    EXPECT_EQ(joins.size(), 1u) << payload;
    return joins.empty() ? std::nullopt : joins[0]->recover;
  }
  static constexpr uint64_t kStream = 0x5eed;
  history::Rules rules_{{{"room:*", 10, 60000}}};
};

TEST_F(HubHistoryTest, ARecoverOffsetIsAnyU64AsANumberOrAsDecimalDigits) {
  using Position = history::Position;
  EXPECT_EQ(RecoverFrom("7"), (Position{kStream, 7}));
  EXPECT_EQ(RecoverFrom(R"("7")"), (Position{kStream, 7}));
  EXPECT_EQ(RecoverFrom(R"("18446744073709551615")"), (Position{kStream, UINT64_MAX}));
  EXPECT_EQ(RecoverFrom(R"("18446744073709551610")"), (Position{kStream, UINT64_MAX - 5}));
  // The value decides, not the number of digits.
  EXPECT_EQ(RecoverFrom(R"("000000000000000000042")"), (Position{kStream, 42}));
  for (const char* bad : {R"("18446744073709551616")", R"("99999999999999999999")", R"("")",
                          R"("+1")", R"("-1")", R"(" 1")", R"("1 ")", R"("0x1")", "-1", "1.5"}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(RecoverFrom(bad), std::nullopt);
  }
}

TEST(HubApiStandaloneTest, WithoutAClusterTheLocalStateIsTheWholeState) {
  Hub hub({.messages_per_second = 0}, "s1.x.");
  EXPECT_EQ(hub.PresenceState("room:1"), "{}");
  hub.Connect(1, std::nullopt);
  std::vector<Action> out;
  hub.Handle(1, test::Msg("1", "1", "room:1", "phx_join", R"({"presence":{"key":"a","meta":{}}})"),
             0, &out);
  std::optional<std::string> state = hub.PresenceState("room:1");
  ASSERT_TRUE(state);
  EXPECT_EQ(test::Json(*state), test::Json(R"({"a":{"metas":[{"phx_ref":"s1.x.1"}]}})"));
  out.clear();
  hub.Publish("room:1", "e", "[]", &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_FALSE(out[0].publish);
  // A key changes nothing without a broker: delivered here at once.
  out.clear();
  hub.Publish("room:1", "e", "[]", &out, "k");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].recipients.size(), 1u);
  EXPECT_FALSE(out[0].publish);
  EXPECT_TRUE(out[0].key.empty());
}

}  // namespace
}  // namespace sb::worker
