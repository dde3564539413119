// Hub: a hand-off to a new process (docs/UPGRADE.md). What the old hub
// exports, through the state's encoding, makes a new hub that answers every
// socket as the old one would.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "protocol/testing/phoenix_message.h"
#include "worker/handoff_state.h"
#include "worker/hub.h"

namespace sb::worker {
namespace {

using test::Msg;

struct FakeCluster : ClusterView {
  bool up() const override { return true; }
  bool CanPublish(size_t) const override { return true; }
};

// An action with its recipients copied (they are views into the hub).
struct Seen {
  Action::Kind kind;
  ConnId conn;
  std::string topic;
  std::string data;
  std::vector<ConnId> recipients;
  bool publish;
  bool owed;
  bool operator==(const Seen&) const = default;
};

std::vector<Seen> Copy(const std::vector<Action>& actions) {
  std::vector<Seen> out;
  for (const Action& a : actions) {
    out.push_back({a.kind, a.conn, a.topic, a.data,
                   std::vector<ConnId>(a.recipients.begin(), a.recipients.end()), a.publish,
                   a.owed});
  }
  return out;
}

std::vector<Seen> Handle(Hub& hub, ConnId conn, const phx::Message& msg, int64_t now_ms) {
  std::vector<Action> out;
  hub.Handle(conn, msg, now_ms, &out);
  return Copy(out);
}

std::string PresenceJoin(std::string_view key, std::string_view meta) {
  return std::string(R"({"presence":{"key":")") + std::string(key) + R"(","meta":)" +
         std::string(meta) + "}}";
}

// Exports `old`, sends the state through its encoding, imports it into `fresh`.
void HandOver(const Hub& old, const std::vector<ConnId>& ids, Hub& fresh) {
  handoff::Session session;
  old.ExportSession(&session);
  std::vector<handoff::Connection> conns;
  for (ConnId id : ids) {
    handoff::Connection& c = conns.emplace_back();
    c.id = id;
    ASSERT_TRUE(old.ExportConnection(id, &c));
  }
  Result<std::string> session_record = handoff::EncodeSession(session);
  ASSERT_TRUE(session_record.ok()) << session_record.status().message();
  Result<std::string> chunk = handoff::EncodeChunk(conns);
  ASSERT_TRUE(chunk.ok()) << chunk.status().message();
  Result<handoff::Session> decoded_session = handoff::DecodeSession(session_record.value());
  ASSERT_TRUE(decoded_session.ok()) << decoded_session.status().message();
  Result<std::vector<handoff::Connection>> decoded =
      handoff::DecodeChunk(chunk.value(), ids.size());
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();

  ASSERT_TRUE(fresh.ImportSession(decoded_session.value()).ok());
  for (const handoff::Connection& c : decoded.value()) {
    Status imported = fresh.ImportConnection(c);
    ASSERT_TRUE(imported.ok()) << imported.message();
  }
}

constexpr HubLimits kLimits{.messages_per_second = 0};

class HubHandoffTest : public ::testing::Test {
 protected:
  HubHandoffTest() : old_(kLimits, "s0."), fresh_(kLimits, "other.") {}

  void SetUpSockets() {
    old_.Connect(1, std::nullopt);
    old_.Connect(2, Identity{"alice", {"room:*"}});
    Handle(old_, 1, Msg("1", "1", "room:a", "phx_join", PresenceJoin("u1", R"({"n":1})")), 10);
    Handle(old_, 2, Msg("5", "5", "room:a", "phx_join", PresenceJoin("u2", R"({"n":2})")), 10);
    Handle(old_, 2, Msg("6", "6", "room:b", "phx_join", "{}"), 10);
    Handle(old_, 1, Msg(std::nullopt, "2", "lobby", "phx_join", "{}"), 10);
  }

  Hub old_;
  Hub fresh_;
};

TEST_F(HubHandoffTest, ImportedSocketsAreAnsweredAsTheOldHubWould) {
  SetUpSockets();
  HandOver(old_, {1, 2}, fresh_);

  EXPECT_EQ(fresh_.connections(), 2u);
  EXPECT_EQ(fresh_.topics(), old_.topics());
  for (const char* topic : {"room:a", "room:b", "lobby"}) {
    ASSERT_NE(fresh_.Subscribers(topic), nullptr) << topic;
    EXPECT_EQ(*fresh_.Subscribers(topic), *old_.Subscribers(topic)) << topic;
    EXPECT_EQ(fresh_.PresenceState(topic), old_.PresenceState(topic)) << topic;
  }
  // A push, one with a stale join_ref, one to a topic not joined, a leave
  // (its presence leaves with the same phx_ref), a new join (the next ref),
  // a disconnect: the same answers, to the same recipients.
  const std::vector<std::pair<ConnId, phx::Message>> script = {
      {1, Msg("1", "3", "room:a", "shout", R"({"x":1})")},
      {2, Msg("4", "7", "room:a", "shout", R"({"x":2})")},
      {2, Msg("6", "8", "lobby", "shout", "{}")},
      {1, Msg(std::nullopt, "4", "lobby", "shout", "{}")},
      {2, Msg("5", "9", "room:a", "phx_leave", "{}")},
      {2, Msg("10", "10", "room:c", "phx_join", PresenceJoin("u2", "{}"))},
      {2, Msg("11", "11", "secret", "phx_join", "{}")},
  };
  for (const auto& [conn, msg] : script) {
    EXPECT_EQ(Handle(fresh_, conn, msg, 20), Handle(old_, conn, msg, 20))
        << msg.topic << " " << msg.event;
  }
  std::vector<Action> a, b;
  fresh_.Disconnect(1, &a);
  old_.Disconnect(1, &b);
  EXPECT_EQ(Copy(a), Copy(b));
}

TEST_F(HubHandoffTest, ExportOfTheImportIsTheSame) {
  SetUpSockets();
  HandOver(old_, {1, 2}, fresh_);
  handoff::Session s1, s2;
  old_.ExportSession(&s1);
  fresh_.ExportSession(&s2);
  EXPECT_EQ(s1, s2);
  EXPECT_EQ(s1.presence_ref_prefix, "s0.");
  EXPECT_EQ(s1.next_presence_seq, 3u);
  for (ConnId id : {1u, 2u}) {
    handoff::Connection c1, c2;
    ASSERT_TRUE(old_.ExportConnection(id, &c1));
    ASSERT_TRUE(fresh_.ExportConnection(id, &c2));
    EXPECT_EQ(c1, c2) << id;
  }
  handoff::Connection c2;
  ASSERT_TRUE(old_.ExportConnection(2, &c2));
  ASSERT_TRUE(c2.identity.has_value());
  EXPECT_EQ(c2.identity->topic_patterns, std::vector<std::string>{"room:*"});
  ASSERT_EQ(c2.channels.size(), 2u);
  EXPECT_EQ(c2.channels[0].topic, "room:a");
  EXPECT_EQ(c2.channels[0].join_ref, "5");
  EXPECT_EQ(c2.channels[0].presence_seq, 2u);
  EXPECT_EQ(c2.channels[0].presence_key, "u2");
  EXPECT_EQ(c2.channels[0].presence_meta, R"({"phx_ref":"s0.2","n":2})");
  EXPECT_FALSE(old_.ExportConnection(3, &c2));
}

TEST(HubHandoffRateTest, TheRateBucketMovesWithTheSocket) {
  const HubLimits limits{.messages_per_second = 1, .message_burst = 2};
  Hub old(limits, "s0."), fresh(limits, "s1.");
  old.Connect(1, std::nullopt);
  Handle(old, 1, Msg("1", "1", "t", "phx_join", "{}"), 1000);
  HandOver(old, {1}, fresh);
  // One token left in both; then both refuse until a second has passed.
  for (int64_t now : {1000, 1000, 1999, 2000}) {
    const phx::Message push = Msg("1", "2", "t", "e", "{}");
    EXPECT_EQ(Handle(fresh, 1, push, now), Handle(old, 1, push, now)) << now;
  }
  std::vector<Seen> refused = Handle(fresh, 1, Msg("1", "3", "t", "e", "{}"), 2000);
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_NE(refused[0].data.find("rate limited"), std::string::npos);
}

TEST(HubHandoffClusterTest, TheOtherShardsPresenceMovesWithNoDiff) {
  FakeCluster cluster;
  Hub old(kLimits, "s0.", &cluster), fresh(kLimits, "s1.", &cluster);
  old.Connect(1, std::nullopt);
  Handle(old, 1, Msg("1", "1", "room", "phx_join", PresenceJoin("me", "{}")), 0);
  Handle(old, 1, Msg("2", "2", "waiting", "phx_join", "{}"), 0);
  std::vector<Action> ignored;
  const std::string remote = R"({"them":{"metas":[{"phx_ref":"s9.1","n":9}]}})";
  old.RemoteSnapshot("room", remote, &ignored);
  HandOver(old, {1}, fresh);

  // Imports emit nothing: the new process's hello restates the topics.
  std::vector<std::string> t1, t2;
  std::vector<mesh::TopicState> p1, p2;
  old.ClusterState(&t1, &p1);
  fresh.ClusterState(&t2, &p2);
  std::sort(t1.begin(), t1.end());
  std::sort(t2.begin(), t2.end());
  EXPECT_EQ(t1, t2);
  EXPECT_EQ(fresh.PresenceState("room"), old.PresenceState("room"));
  EXPECT_NE(fresh.PresenceState("room")->find("s9.1"), std::string::npos);
  // A topic whose snapshot had not come is still waiting for it.
  EXPECT_EQ(fresh.PresenceState("waiting"), std::nullopt);
  // The broker's next snapshot, unchanged, is no presence change.
  std::vector<Action> a, b;
  fresh.RemoteSnapshot("room", remote, &a);
  old.RemoteSnapshot("room", remote, &b);
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(Copy(a), Copy(b));
  // A joiner gets the whole cluster's state at once, as from the old hub.
  fresh.Connect(2, std::nullopt);
  old.Connect(2, std::nullopt);
  const phx::Message join = Msg("3", "3", "room", "phx_join", "{}");
  EXPECT_EQ(Handle(fresh, 2, join, 0), Handle(old, 2, join, 0));
}

TEST(HubHandoffRefusalTest, ABadStateChangesNothing) {
  Hub hub(kLimits, "s1.");
  handoff::Session session;
  session.presence_ref_prefix = "s0.";
  session.next_presence_seq = 5;
  session.remote_presence.push_back({"t", "[]"});
  EXPECT_FALSE(hub.ImportSession(session).ok());
  session.remote_presence.clear();
  ASSERT_TRUE(hub.ImportSession(session).ok());

  handoff::Connection c;
  c.id = 1;
  c.channels.push_back({.topic = "t", .join_ref = "1"});
  c.channels.push_back({.topic = "t", .join_ref = "2"});
  EXPECT_FALSE(hub.ImportConnection(c).ok());  // a topic twice
  c.channels.pop_back();
  c.channels[0].presence_seq = 5;  // never issued
  c.channels[0].presence_key = "k";
  c.channels[0].presence_meta = R"({"phx_ref":"s0.5"})";
  EXPECT_FALSE(hub.ImportConnection(c).ok());
  c.channels[0].presence_seq = 4;
  c.channels[0].presence_meta = "[1]";
  EXPECT_FALSE(hub.ImportConnection(c).ok());
  EXPECT_EQ(hub.connections(), 0u);
  EXPECT_EQ(hub.topics(), 0u);
  c.channels[0].presence_meta = R"({"phx_ref":"s0.4"})";
  ASSERT_TRUE(hub.ImportConnection(c).ok());
  EXPECT_FALSE(hub.ImportConnection(c).ok());     // the id twice
  EXPECT_FALSE(hub.ImportSession(session).ok());  // sockets already there
  EXPECT_EQ(hub.PresenceState("t"), R"({"k":{"metas":[{"phx_ref":"s0.4"}]}})");
}

}  // namespace
}  // namespace sb::worker
