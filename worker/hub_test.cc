// Hub: Phoenix channel semantics as events in, actions out.

#include "worker/hub.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "protocol/limits.h"
#include "protocol/testing/json.h"
#include "protocol/testing/phoenix_message.h"

namespace sb::worker {
namespace {

using Kind = Action::Kind;
using Ref = std::optional<std::string>;

using test::Json;
using test::Msg;

// A text message to one socket, compared as JSON (and, where the bytes
// matter, by the callers with EXPECT_EQ on data).
void ExpectSend(const Action& a, ConnId conn, std::string_view json) {
  EXPECT_EQ(a.kind, Kind::kSend);
  EXPECT_EQ(a.conn, conn);
  EXPECT_FALSE(a.binary);
  EXPECT_EQ(Json(a.data), Json(json)) << a.data;
}

void ExpectFanout(const Action& a, std::string_view topic, ConnId except, std::string_view json) {
  EXPECT_EQ(a.kind, Kind::kBroadcast);
  EXPECT_EQ(a.topic, topic);
  EXPECT_EQ(a.conn, except);
  EXPECT_FALSE(a.binary);
  EXPECT_EQ(Json(a.data), Json(json)) << a.data;
}

std::vector<ConnId> Subs(const Hub& hub, std::string_view topic) {
  const std::vector<ConnId>* s = hub.Subscribers(topic);
  return s ? *s : std::vector<ConnId>{};
}

class HubTest : public ::testing::Test {
 protected:
  explicit HubTest(HubLimits limits = {.messages_per_second = 0}) : hub_(limits, "s0.") {}

  std::vector<Action> Handle(ConnId conn, const phx::Message& msg) {
    std::vector<Action> out;
    hub_.Handle(conn, msg, now_ms_, &out);
    return out;
  }
  std::vector<Action> Join(ConnId conn, const std::string& topic, const std::string& join_ref,
                           const std::string& payload = "{}") {
    return Handle(conn, Msg(join_ref, join_ref, topic, "phx_join", payload));
  }
  std::vector<Action> Disconnect(ConnId conn) {
    std::vector<Action> out;
    hub_.Disconnect(conn, &out);
    return out;
  }

  Hub hub_;
  int64_t now_ms_ = 1000;
};

// --- Heartbeat

TEST_F(HubTest, HeartbeatIsAnsweredBeforeAnyJoin) {
  hub_.Connect(1, std::nullopt);
  auto out = Handle(1, Msg(std::nullopt, "16", "phoenix", "heartbeat"));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].kind, Kind::kSend);
  EXPECT_EQ(out[0].conn, 1u);
  EXPECT_EQ(out[0].data, R"([null,"16","phoenix","phx_reply",{"status":"ok","response":{}}])");
}

class RateLimitedHubTest : public HubTest {
 protected:
  RateLimitedHubTest() : HubTest({.messages_per_second = 1, .message_burst = 2}) {}
};

TEST_F(RateLimitedHubTest, HeartbeatsAreNotRateLimited) {
  hub_.Connect(1, std::nullopt);
  for (int i = 0; i < 50; ++i) {
    auto out = Handle(1, Msg(std::nullopt, std::to_string(i), "phoenix", "heartbeat"));
    ASSERT_EQ(out.size(), 1u);
    ExpectSend(out[0], 1,
               R"([null,")" + std::to_string(i) +
                   R"(","phoenix","phx_reply",{"status":"ok","response":{}}])");
  }
  // They took no tokens: the whole burst is still there.
  EXPECT_EQ(Join(1, "room:1", "1").size(), 2u);
  EXPECT_EQ(Handle(1, Msg("1", "2", "room:1", "shout")).size(), 2u);
  EXPECT_EQ(hub_.stats().rate_limited, 0u);
}

// --- Rate limit

TEST_F(RateLimitedHubTest, OverTheRateGetsAnErrorReplyAndNothingElse) {
  hub_.Connect(1, std::nullopt);
  hub_.Connect(2, std::nullopt);
  Join(1, "room:1", "1");
  Join(2, "room:1", "1");
  EXPECT_EQ(Handle(1, Msg("1", "2", "room:1", "shout")).size(), 2u);
  auto out = Handle(1, Msg("1", "3", "room:1", "shout", R"({"m":1})"));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(
      out[0].data,
      R"(["1","3","room:1","phx_reply",{"status":"error","response":{"reason":"rate limited"}}])");
  EXPECT_EQ(out[0].conn, 1u);
  EXPECT_EQ(hub_.stats().rate_limited, 1u);
  EXPECT_EQ(hub_.stats().broadcasts, 1u);
  EXPECT_EQ(hub_.stats().joins_refused(), 0u);

  // The socket stays usable once the bucket refills.
  now_ms_ += 1000;
  EXPECT_EQ(Handle(1, Msg("1", "4", "room:1", "shout")).size(), 2u);
}

TEST_F(RateLimitedHubTest, RateLimitedJoinIsARefusedJoin) {
  hub_.Connect(1, std::nullopt);
  Join(1, "a", "1");
  Join(1, "b", "2");
  auto out = Join(1, "c", "3");
  ASSERT_EQ(out.size(), 1u);
  ExpectSend(
      out[0], 1,
      R"(["3","3","c","phx_reply",{"status":"error","response":{"reason":"rate limited"}}])");
  EXPECT_EQ(Subs(hub_, "c"), std::vector<ConnId>{});
  EXPECT_EQ(hub_.stats().rate_limited, 1u);
  EXPECT_EQ(hub_.stats().joins_refused(), 1u);
  EXPECT_EQ(hub_.stats().joins_ok, 2u);
}

TEST_F(RateLimitedHubTest, EachSocketHasItsOwnBucket) {
  hub_.Connect(1, std::nullopt);
  hub_.Connect(2, std::nullopt);
  Join(1, "a", "1");
  Join(1, "b", "2");
  EXPECT_EQ(Join(1, "c", "3").size(), 1u);  // refused
  EXPECT_EQ(Join(2, "c", "1").size(), 2u);  // ok + presence_state
}

// --- Join

TEST_F(HubTest, JoinRepliesOkThenPushesAnEmptyPresenceState) {
  hub_.Connect(1, std::nullopt);
  auto out = Join(1, "room:1", "6", R"({"p":1})");
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].kind, Kind::kSend);
  EXPECT_EQ(out[0].conn, 1u);
  EXPECT_EQ(out[0].data, R"(["6","6","room:1","phx_reply",{"status":"ok","response":{}}])");
  EXPECT_EQ(out[1].kind, Kind::kSend);
  EXPECT_EQ(out[1].data, R"(["6",null,"room:1","presence_state",{}])");
  EXPECT_EQ(Subs(hub_, "room:1"), std::vector<ConnId>{1});
  EXPECT_EQ(hub_.topics(), 1u);
  EXPECT_EQ(hub_.stats().joins_ok, 1u);
}

TEST_F(HubTest, JoinPayloadThatIsNotAnObjectIsJustParams) {
  hub_.Connect(1, std::nullopt);
  EXPECT_EQ(Join(1, "a", "1", "[1,2]").size(), 2u);
  EXPECT_EQ(Join(1, "b", "2", "null").size(), 2u);
  EXPECT_EQ(Join(1, "c", "3", R"({"presenceX":1})").size(), 2u);
  EXPECT_EQ(hub_.stats().joins_ok, 3u);
}

TEST_F(HubTest, JoinOutsideTheTokensTopicsIsUnauthorized) {
  hub_.Connect(1, Identity{.sub = "alice", .topic_patterns = {"room:*", "lobby"}});
  auto out = Join(1, "admin:1", "3");
  ASSERT_EQ(out.size(), 1u);
  ExpectSend(
      out[0], 1,
      R"(["3","3","admin:1","phx_reply",{"status":"error","response":{"reason":"unauthorized"}}])");
  EXPECT_EQ(hub_.Subscribers("admin:1"), nullptr);
  EXPECT_EQ(hub_.topics(), 0u);
  EXPECT_EQ(hub_.stats().joins_refused(), 1u);

  EXPECT_EQ(Join(1, "room:42", "4").size(), 2u);
  EXPECT_EQ(Join(1, "lobby", "5").size(), 2u);
  EXPECT_EQ(hub_.stats().joins_ok, 2u);
}

TEST_F(HubTest, WithoutIdentityEveryTopicIsAllowed) {
  hub_.Connect(1, std::nullopt);
  EXPECT_EQ(Join(1, "admin:1", "1").size(), 2u);
}

TEST_F(HubTest, DuplicateJoinClosesTheOldChannelThenJoins) {
  hub_.Connect(1, std::nullopt);
  Join(1, "room:1", "4");
  auto out = Join(1, "room:1", "6");
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].data, R"(["4","4","room:1","phx_close",{}])");
  EXPECT_EQ(out[0].conn, 1u);
  EXPECT_EQ(out[1].data, R"(["6","6","room:1","phx_reply",{"status":"ok","response":{}}])");
  EXPECT_EQ(out[2].data, R"(["6",null,"room:1","presence_state",{}])");
  EXPECT_EQ(Subs(hub_, "room:1"), std::vector<ConnId>{1});

  // The old join_ref is stale now; the new one works.
  EXPECT_TRUE(Handle(1, Msg("4", "7", "room:1", "shout")).empty());
  EXPECT_EQ(Handle(1, Msg("6", "8", "room:1", "shout")).size(), 2u);
}

TEST_F(HubTest, DuplicateJoinSubscribesAgainAtTheEnd) {
  hub_.Connect(1, std::nullopt);
  hub_.Connect(2, std::nullopt);
  Join(1, "room:1", "1");
  Join(2, "room:1", "1");
  Join(1, "room:1", "2");
  // A rejoin is a new subscription: it goes to the end.
  EXPECT_EQ(Subs(hub_, "room:1"), (std::vector<ConnId>{2, 1}));
}

TEST_F(HubTest, DuplicateJoinWithPresenceLeavesThenJoinsAgain) {
  hub_.Connect(1, std::nullopt);
  hub_.Connect(2, std::nullopt);
  Join(1, "room:1", "1", R"({"presence":{"key":"alice","meta":{"v":1}}})");
  Join(2, "room:1", "1");
  auto out = Join(1, "room:1", "2", R"({"presence":{"key":"alice","meta":{"v":2}}})");
  ASSERT_EQ(out.size(), 5u);
  ExpectSend(out[0], 1, R"(["1","1","room:1","phx_close",{}])");
  // The old meta leaves for everyone but the rejoining socket, whose new
  // channel gets a fresh state anyway.
  ExpectFanout(out[1], "room:1", 1,
               R"([null,null,"room:1","presence_diff",
                   {"joins":{},"leaves":{"alice":{"metas":[{"phx_ref":"s0.1","v":1}]}}}])");
  ExpectSend(out[2], 1, R"(["2","2","room:1","phx_reply",{"status":"ok","response":{}}])");
  ExpectSend(
      out[3], 1,
      R"(["2",null,"room:1","presence_state",{"alice":{"metas":[{"phx_ref":"s0.2","v":2}]}}])");
  ExpectFanout(out[4], "room:1", 0,
               R"([null,null,"room:1","presence_diff",
                   {"joins":{"alice":{"metas":[{"phx_ref":"s0.2","v":2}]}},"leaves":{}}])");
}

TEST_F(HubTest, TooManyChannelsJoined) {
  Hub hub({.max_topics_per_socket = 2, .messages_per_second = 0}, "s0.");
  hub.Connect(1, std::nullopt);
  std::vector<Action> out;
  hub.Handle(1, Msg("1", "1", "a", "phx_join"), 0, &out);
  hub.Handle(1, Msg("2", "2", "b", "phx_join"), 0, &out);
  out.clear();
  hub.Handle(1, Msg("5", "5", "c", "phx_join"), 0, &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(
      out[0].data,
      R"(["5","5","c","phx_reply",{"status":"error","response":{"reason":"too many channels joined"}}])");
  EXPECT_EQ(hub.Subscribers("c"), nullptr);
  EXPECT_EQ(hub.stats().joins_refused(), 1u);

  // A rejoin of a joined topic is not one more channel.
  out.clear();
  hub.Handle(1, Msg("6", "6", "a", "phx_join"), 0, &out);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[1].data, R"(["6","6","a","phx_reply",{"status":"ok","response":{}}])");

  // After a leave there is room again.
  out.clear();
  hub.Handle(1, Msg("2", "7", "b", "phx_leave"), 0, &out);
  hub.Handle(1, Msg("8", "8", "c", "phx_join"), 0, &out);
  EXPECT_EQ(hub.Subscribers("c")->size(), 1u);
  EXPECT_EQ(hub.stats().joins_ok, 4u);
}

TEST_F(HubTest, JoinWithNullJoinRefIsAChannelWithNullJoinRef) {
  hub_.Connect(1, std::nullopt);
  auto out = Handle(1, Msg(std::nullopt, "3", "room:1", "phx_join"));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].data, R"([null,"3","room:1","phx_reply",{"status":"ok","response":{}}])");
  EXPECT_EQ(out[1].data, R"([null,null,"room:1","presence_state",{}])");
  // Any non-null join_ref is stale for it, as in Phoenix.
  EXPECT_TRUE(Handle(1, Msg("3", "4", "room:1", "shout")).empty());
  out = Handle(1, Msg(std::nullopt, "5", "room:1", "phx_leave"));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1].data, R"([null,null,"room:1","phx_close",{}])");
}

// --- Presence on join

TEST_F(HubTest, JoinWithPresenceTracksAndTellsEveryone) {
  hub_.Connect(1, std::nullopt);
  auto out = Join(1, "room:1", "1", R"({"presence":{"key":"alice","meta":{"device":"web"}}})");
  ASSERT_EQ(out.size(), 3u);
  ExpectSend(out[0], 1, R"(["1","1","room:1","phx_reply",{"status":"ok","response":{}}])");
  // The joiner sees itself in its state.
  EXPECT_EQ(out[1].kind, Kind::kSend);
  EXPECT_EQ(out[1].data, R"(["1",null,"room:1","presence_state",)"
                         R"({"alice":{"metas":[{"phx_ref":"s0.1","device":"web"}]}}])");
  // And the diff goes to every subscriber, the joiner included.
  EXPECT_EQ(out[2].kind, Kind::kBroadcast);
  EXPECT_EQ(out[2].conn, 0u);
  EXPECT_EQ(out[2].topic, "room:1");
  EXPECT_EQ(out[2].data,
            R"([null,null,"room:1","presence_diff",)"
            R"({"joins":{"alice":{"metas":[{"phx_ref":"s0.1","device":"web"}]}},"leaves":{}}])");

  hub_.Connect(2, std::nullopt);
  out = Join(2, "room:1", "9", R"({"presence":{"key":"bob"}})");
  ASSERT_EQ(out.size(), 3u);
  ExpectSend(out[1], 2,
             R"(["9",null,"room:1","presence_state",
                 {"alice":{"metas":[{"phx_ref":"s0.1","device":"web"}]},
                  "bob":{"metas":[{"phx_ref":"s0.2"}]}}])");
  ExpectFanout(out[2], "room:1", 0,
               R"([null,null,"room:1","presence_diff",
                   {"joins":{"bob":{"metas":[{"phx_ref":"s0.2"}]}},"leaves":{}}])");
}

TEST_F(HubTest, JoinWithoutPresenceStillGetsTheTopicsState) {
  hub_.Connect(1, std::nullopt);
  hub_.Connect(2, std::nullopt);
  Join(1, "room:1", "1", R"({"presence":{"key":"alice"}})");
  auto out = Join(2, "room:1", "1");
  ASSERT_EQ(out.size(), 2u);
  ExpectSend(out[1], 2,
             R"(["1",null,"room:1","presence_state",{"alice":{"metas":[{"phx_ref":"s0.1"}]}}])");
}

TEST_F(HubTest, TwoSocketsOneKey) {
  hub_.Connect(1, std::nullopt);
  hub_.Connect(2, std::nullopt);
  Join(1, "room:1", "1", R"({"presence":{"key":"alice","meta":{"tab":1}}})");
  auto out = Join(2, "room:1", "1", R"({"presence":{"key":"alice","meta":{"tab":2}}})");
  ExpectSend(out[1], 2,
             R"(["1",null,"room:1","presence_state",
                 {"alice":{"metas":[{"phx_ref":"s0.1","tab":1},{"phx_ref":"s0.2","tab":2}]}}])");
  out = Disconnect(1);
  ASSERT_EQ(out.size(), 1u);
  ExpectFanout(out[0], "room:1", 1,
               R"([null,null,"room:1","presence_diff",
                   {"joins":{},"leaves":{"alice":{"metas":[{"phx_ref":"s0.1","tab":1}]}}}])");
  hub_.Connect(3, std::nullopt);
  out = Join(3, "room:1", "1");
  ExpectSend(
      out[1], 3,
      R"(["1",null,"room:1","presence_state",{"alice":{"metas":[{"phx_ref":"s0.2","tab":2}]}}])");
}

TEST_F(HubTest, ClientCannotChooseItsPhxRef) {
  hub_.Connect(1, std::nullopt);
  auto out = Join(1, "room:1", "1", R"({"presence":{"key":"a","meta":{"phx_ref":"mine","x":1}}})");
  ExpectSend(out[1], 1,
             R"(["1",null,"room:1","presence_state",{"a":{"metas":[{"phx_ref":"s0.1","x":1}]}}])");
}

TEST_F(HubTest, PhxRefsAreUniqueBase36) {
  std::vector<std::string> refs;
  for (ConnId c = 1; c <= 37; ++c) {
    hub_.Connect(c, std::nullopt);
    auto out = Join(c, "room:" + std::to_string(c % 3), "1", R"({"presence":{"key":"k"}})");
    ASSERT_EQ(out.size(), 3u);
    const auto diff = Json(out[2].data).at(4);
    refs.emplace_back(diff.at("joins").at("k").at("metas").at(0).at("phx_ref").as_string());
  }
  EXPECT_EQ(refs[0], "s0.1");
  EXPECT_EQ(refs[9], "s0.a");
  EXPECT_EQ(refs[35], "s0.10");
  EXPECT_EQ(refs[36], "s0.11");
  std::sort(refs.begin(), refs.end());
  EXPECT_EQ(std::unique(refs.begin(), refs.end()), refs.end());
}

TEST_F(HubTest, InvalidPresenceRefusesTheJoin) {
  hub_.Connect(1, std::nullopt);
  for (const char* payload : {
           R"({"presence":"alice"})",
           R"({"presence":null})",
           R"({"presence":[]})",
           R"({"presence":{}})",
           R"({"presence":{"key":""}})",
           R"({"presence":{"key":5}})",
           R"({"presence":{"key":null}})",
           R"({"presence":{"meta":{}}})",
           R"({"presence":{"key":"a","meta":[1]}})",
           R"({"presence":{"key":"a","meta":"x"}})",
           R"({"presence":{"key":"a","meta":null}})",
       }) {
    SCOPED_TRACE(payload);
    auto out = Join(1, "room:1", "2", payload);
    ASSERT_EQ(out.size(), 1u);
    ExpectSend(
        out[0], 1,
        R"(["2","2","room:1","phx_reply",{"status":"error","response":{"reason":"invalid presence"}}])");
  }
  EXPECT_EQ(hub_.Subscribers("room:1"), nullptr);
  EXPECT_EQ(hub_.topics(), 0u);
  EXPECT_EQ(hub_.stats().joins_refused(), 11u);
  EXPECT_EQ(hub_.stats().joins_ok, 0u);
}

TEST_F(HubTest, PresenceOverTheLimitRefusesTheJoin) {
  // 4096 bytes by default: key and meta JSON together.
  hub_.Connect(1, std::nullopt);
  auto join = [&](const std::string& key, size_t pad, const std::string& ref) {
    // {"p":"..."} is 8 bytes around the padding.
    return Join(
        1, "room:" + ref, ref,
        R"({"presence":{"key":")" + key + R"(","meta":{"p":")" + std::string(pad, 'x') + R"("}}})");
  };
  auto out = join("k", 4096 - 1 - 8, "1");
  ASSERT_EQ(out.size(), 3u) << "exactly at the limit: tracked";
  EXPECT_TRUE(out[1].owed);
  out = join("k", 4096 - 8, "2");
  ASSERT_EQ(out.size(), 1u);
  ExpectSend(
      out[0], 1,
      R"(["2","2","room:2","phx_reply",{"status":"error","response":{"reason":"presence too large"}}])");
  out = join(std::string(4096, 'k'), 0, "3");
  ASSERT_EQ(out.size(), 1u) << "a long key counts too";
  out = join("k", 100 * 1024, "4");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(hub_.Subscribers("room:2"), nullptr);
  EXPECT_EQ(hub_.stats().joins_presence_too_large, 3u);
  EXPECT_EQ(hub_.stats().joins_refused(), 3u);
  // A join without presence is not limited by it.
  EXPECT_EQ(Join(1, "room:5", "5", R"({"other":")" + std::string(8192, 'x') + R"("})").size(), 2u);
}

class SmallPresenceHubTest : public HubTest {
 protected:
  SmallPresenceHubTest() : HubTest({.messages_per_second = 0, .max_presence_bytes = 10}) {}
};

TEST_F(SmallPresenceHubTest, TheLimitIsAFlag) {
  hub_.Connect(1, std::nullopt);
  // 3 + 7 bytes, then 4 + 7.
  EXPECT_EQ(Join(1, "a", "1", R"({"presence":{"key":"kkk","meta":{"a":1}}})").size(), 3u);
  EXPECT_EQ(Join(1, "b", "2", R"({"presence":{"key":"kkkk","meta":{"a":1}}})").size(), 1u);
  EXPECT_EQ(hub_.stats().joins_presence_too_large, 1u);
}

TEST_F(HubTest, OnlyPresenceStatesAreOwed) {
  hub_.Connect(1, std::nullopt);
  hub_.Connect(2, std::nullopt);
  Join(2, "room:1", "1");
  std::vector<Action> all = Join(1, "room:1", "1", R"({"presence":{"key":"a"}})");
  for (const Action& a : Handle(1, Msg("1", "2", "room:1", "shout"))) all.push_back(a);
  for (const Action& a : Handle(1, Msg("1", "3", "room:1", "phx_leave"))) all.push_back(a);
  size_t owed = 0;
  for (const Action& a : all) {
    const bool state = a.data.find("\"presence_state\"") != std::string::npos;
    EXPECT_EQ(a.owed, state) << a.data;
    owed += a.owed ? 1 : 0;
  }
  EXPECT_EQ(owed, 1u);
}

TEST_F(HubTest, RefusedRejoinKeepsTheChannel) {
  hub_.Connect(1, std::nullopt);
  Join(1, "room:1", "1");
  auto out = Join(1, "room:1", "2", R"({"presence":{"key":""}})");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(Subs(hub_, "room:1"), std::vector<ConnId>{1});
  EXPECT_EQ(Handle(1, Msg("1", "3", "room:1", "shout")).size(), 2u);
}

// --- Leave

TEST_F(HubTest, LeaveRepliesOkThenClosesAndUnsubscribes) {
  hub_.Connect(1, std::nullopt);
  Join(1, "room:1", "1");
  auto out = Handle(1, Msg("1", "2", "room:1", "phx_leave"));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].data, R"(["1","2","room:1","phx_reply",{"status":"ok","response":{}}])");
  EXPECT_EQ(out[1].data, R"(["1","1","room:1","phx_close",{}])");
  EXPECT_EQ(out[0].conn, 1u);
  EXPECT_EQ(out[1].conn, 1u);
  EXPECT_EQ(hub_.Subscribers("room:1"), nullptr);
  EXPECT_EQ(hub_.topics(), 0u);
  EXPECT_EQ(hub_.stats().leaves, 1u);
  // Left: a push is now unmatched.
  out = Handle(1, Msg("1", "3", "room:1", "shout"));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_NE(out[0].data.find("unmatched topic"), std::string::npos);
}

TEST_F(HubTest, LeaveWithNullJoinRefLeavesTheCurrentChannel) {
  hub_.Connect(1, std::nullopt);
  Join(1, "room:1", "4");
  auto out = Handle(1, Msg(std::nullopt, "5", "room:1", "phx_leave"));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].data, R"(["4","5","room:1","phx_reply",{"status":"ok","response":{}}])");
  EXPECT_EQ(out[1].data, R"(["4","4","room:1","phx_close",{}])");
  EXPECT_EQ(hub_.topics(), 0u);
}

TEST_F(HubTest, LeaveOfATopicNotJoinedRepliesOk) {
  hub_.Connect(1, std::nullopt);
  auto out = Handle(1, Msg("3", "7", "room:1", "phx_leave"));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data, R"(["3","7","room:1","phx_reply",{"status":"ok","response":{}}])");
  EXPECT_EQ(hub_.stats().leaves, 0u);
}

TEST_F(HubTest, LeaveWithAStaleJoinRefIsDropped) {
  hub_.Connect(1, std::nullopt);
  Join(1, "room:1", "1");
  Join(1, "room:1", "3");
  EXPECT_TRUE(Handle(1, Msg("1", "4", "room:1", "phx_leave")).empty());
  EXPECT_EQ(Subs(hub_, "room:1"), std::vector<ConnId>{1});
  EXPECT_EQ(hub_.stats().stale_dropped, 1u);
  EXPECT_EQ(hub_.stats().leaves, 0u);
}

TEST_F(HubTest, LeaveWithPresenceTellsTheRemainingSubscribers) {
  hub_.Connect(1, std::nullopt);
  hub_.Connect(2, std::nullopt);
  Join(1, "room:1", "1", R"({"presence":{"key":"alice","meta":{"m":1}}})");
  Join(2, "room:1", "1", R"({"presence":{"key":"bob"}})");
  auto out = Handle(1, Msg("1", "2", "room:1", "phx_leave"));
  ASSERT_EQ(out.size(), 3u);
  ExpectSend(out[0], 1, R"(["1","2","room:1","phx_reply",{"status":"ok","response":{}}])");
  ExpectSend(out[1], 1, R"(["1","1","room:1","phx_close",{}])");
  ExpectFanout(out[2], "room:1", 1,
               R"([null,null,"room:1","presence_diff",
                   {"joins":{},"leaves":{"alice":{"metas":[{"phx_ref":"s0.1","m":1}]}}}])");
  EXPECT_EQ(Subs(hub_, "room:1"), std::vector<ConnId>{2});
  hub_.Connect(3, std::nullopt);
  out = Join(3, "room:1", "1");
  ExpectSend(out[1], 3,
             R"(["1",null,"room:1","presence_state",{"bob":{"metas":[{"phx_ref":"s0.2"}]}}])");
}

// --- Recipients and limits

TEST_F(HubTest, ABroadcastNamesItsRecipientsAsTheyAreAfterTheCall) {
  hub_.Connect(1, std::nullopt);
  hub_.Connect(2, std::nullopt);
  Join(1, "room:1", "1", R"({"presence":{"key":"alice"}})");
  Join(2, "room:1", "1");
  auto out = Handle(2, Msg("1", "5", "room:1", "msg", R"({"t":1})"));
  ASSERT_EQ(out[0].kind, Kind::kBroadcast);
  EXPECT_EQ(std::vector<ConnId>(out[0].recipients.begin(), out[0].recipients.end()),
            (std::vector<ConnId>{1, 2}))
      << "the sender is among them; conn names who is excepted";
  EXPECT_EQ(out[0].conn, 2u);
  // Alice's leave diff goes to those still there: not to alice.
  out = Disconnect(1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(std::vector<ConnId>(out[0].recipients.begin(), out[0].recipients.end()),
            std::vector<ConnId>{2});
  // A topic emptied by the call: a broadcast nobody here receives.
  Join(2, "room:2", "2", R"({"presence":{"key":"bob"}})");
  out = Disconnect(2);
  for (const Action& a : out) {
    EXPECT_EQ(a.kind, Kind::kBroadcast);
    EXPECT_TRUE(a.recipients.empty());
  }
}

TEST_F(HubTest, AnotherShardsBroadcastGoesToTheTopicsSubscribers) {
  hub_.Connect(1, std::nullopt);
  hub_.Connect(2, std::nullopt);
  Join(1, "room:1", "1");
  Join(2, "room:1", "1");
  auto to = hub_.Deliver("room:1");
  EXPECT_EQ(std::vector<ConnId>(to.begin(), to.end()), (std::vector<ConnId>{1, 2}));
  EXPECT_TRUE(hub_.Deliver("room:2").empty()) << "nobody joined: nobody receives";
  EXPECT_EQ(hub_.stats().deliveries_from_cluster, 1u);
}

TEST_F(HubTest, ATopicTheMeshCannotCarryIsRefusedAtTheJoin) {
  hub_.Connect(1, std::nullopt);
  const std::string longest(limits::kMaxTopicBytes, 't');
  for (const std::string& topic : {std::string(), longest + "t"}) {
    auto out = Join(1, topic, "1");
    ASSERT_EQ(out.size(), 1u);
    EXPECT_NE(out[0].data.find(R"("reason":"invalid topic")"), std::string::npos) << out[0].data;
    EXPECT_EQ(hub_.Subscribers(topic), nullptr);
  }
  EXPECT_EQ(hub_.stats().joins_invalid_topic, 2u);
  auto out = Join(1, longest, "2");
  EXPECT_EQ(Subs(hub_, longest), std::vector<ConnId>{1});
}

// `depth` nested objects: {"a":{"a":…{}}}.
std::string NestedMeta(int depth) {
  std::string s;
  for (int i = 1; i < depth; ++i) s += R"({"a":)";
  s += "{}";
  for (int i = 1; i < depth; ++i) s += "}";
  return s;
}

TEST_F(HubTest, APresenceMetaNestedDeeperThanTheMeshCarriesIsRefused) {
  hub_.Connect(1, std::nullopt);
  auto out = Join(
      1, "room:1", "1",
      R"({"presence":{"key":"a","meta":)" + NestedMeta(limits::kMaxPresenceMetaDepth + 1) + "}}");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_NE(out[0].data.find(R"("reason":"invalid presence")"), std::string::npos);
  EXPECT_EQ(hub_.Subscribers("room:1"), nullptr);
  out =
      Join(1, "room:1", "2",
           R"({"presence":{"key":"a","meta":)" + NestedMeta(limits::kMaxPresenceMetaDepth) + "}}");
  EXPECT_EQ(Subs(hub_, "room:1"), std::vector<ConnId>{1});
}

// --- Reserved events

TEST_F(HubTest, ReservedEventsAreRefusedAndNeverRelayed) {
  hub_.Connect(1, std::nullopt);
  hub_.Connect(2, std::nullopt);
  Join(1, "room:1", "1");
  Join(2, "room:1", "1");
  int n = 0;
  for (const char* event :
       {"phx_reply", "phx_close", "phx_error", "presence_state", "presence_diff", "heartbeat"}) {
    SCOPED_TRACE(event);
    std::string ref = std::to_string(10 + n++);
    auto out = Handle(1, Msg("1", ref, "room:1", event, R"({"joins":{},"leaves":{}})"));
    ASSERT_EQ(out.size(), 1u);
    ExpectSend(
        out[0], 1,
        R"(["1",")" + ref +
            R"(","room:1","phx_reply",{"status":"error","response":{"reason":"reserved event"}}])");
  }
  EXPECT_EQ(hub_.stats().reserved_refused, 6u);
  EXPECT_EQ(hub_.stats().broadcasts, 0u);
  // Also on a topic the socket has not joined, with the message's refs.
  auto out = Handle(1, Msg(std::nullopt, "20", "other", "presence_diff"));
  ASSERT_EQ(out.size(), 1u);
  ExpectSend(
      out[0], 1,
      R"([null,"20","other","phx_reply",{"status":"error","response":{"reason":"reserved event"}}])");
}

// --- Pushes

TEST_F(HubTest, PushToATopicNotJoinedIsUnmatched) {
  hub_.Connect(1, std::nullopt);
  hub_.Connect(2, std::nullopt);
  Join(2, "room:9", "1");
  auto out = Handle(1, Msg("5", "7", "room:9", "shout"));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].kind, Kind::kSend);
  EXPECT_EQ(out[0].conn, 1u);
  EXPECT_EQ(
      out[0].data,
      R"([null,"7","room:9","phx_reply",{"status":"error","response":{"reason":"unmatched topic"}}])");
  EXPECT_EQ(hub_.stats().unmatched, 1u);
  EXPECT_EQ(hub_.stats().broadcasts, 0u);
}

TEST_F(HubTest, PushIsRelayedByteForByteToOthersAndAcknowledged) {
  hub_.Connect(1, std::nullopt);
  hub_.Connect(2, std::nullopt);
  Join(1, "room:1", "6");
  Join(2, "room:1", "2");
  const std::string payload =
      R"({ "n" : 1.000000000000000000000001, "big": 123456789012345678901234567890, "s":"\u00e9" })";
  auto out = Handle(1, Msg("6", "13", "room:1", "shout", payload));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].kind, Kind::kBroadcast);
  EXPECT_EQ(out[0].topic, "room:1");
  EXPECT_EQ(out[0].conn, 1u);  // the sender is excepted
  EXPECT_FALSE(out[0].binary);
  EXPECT_EQ(out[0].data, R"([null,null,"room:1","shout",)" + payload + "]");
  EXPECT_EQ(out[1].kind, Kind::kSend);
  EXPECT_EQ(out[1].conn, 1u);
  EXPECT_EQ(out[1].data, R"(["6","13","room:1","phx_reply",{"status":"ok","response":{}}])");
  EXPECT_EQ(hub_.stats().broadcasts, 1u);
}

TEST_F(HubTest, BinaryPushIsRelayedAsABinaryBroadcastWithATextReply) {
  hub_.Connect(1, std::nullopt);
  hub_.Connect(2, std::nullopt);
  Join(1, "room:1", "6");
  Join(2, "room:1", "2");
  phx::Message m = Msg("6", "15", "room:1", "bin", std::string("\x01\x00\x02\xff", 4));
  m.binary = true;
  auto out = Handle(1, m);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].kind, Kind::kBroadcast);
  EXPECT_TRUE(out[0].binary);
  EXPECT_EQ(out[0].conn, 1u);
  EXPECT_EQ(out[0].data, std::string("\x02\x06\x03room:1bin\x01\x00\x02\xff", 16));
  EXPECT_EQ(out[1].kind, Kind::kSend);
  EXPECT_FALSE(out[1].binary);
  EXPECT_EQ(out[1].data, R"(["6","15","room:1","phx_reply",{"status":"ok","response":{}}])");
}

TEST_F(HubTest, PushWithAStaleJoinRefIsDropped) {
  hub_.Connect(1, std::nullopt);
  Join(1, "room:1", "6");
  EXPECT_TRUE(Handle(1, Msg("5", "13", "room:1", "shout")).empty());
  EXPECT_EQ(hub_.stats().stale_dropped, 1u);
  EXPECT_EQ(hub_.stats().broadcasts, 0u);
}

TEST_F(HubTest, PushWithNullJoinRefIsRelayedAndAnsweredWithTheChannelsJoinRef) {
  hub_.Connect(1, std::nullopt);
  Join(1, "room:1", "6");
  auto out = Handle(1, Msg(std::nullopt, "13", "room:1", "shout"));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].data, R"([null,null,"room:1","shout",{}])");
  EXPECT_EQ(out[1].data, R"(["6","13","room:1","phx_reply",{"status":"ok","response":{}}])");
}

TEST_F(HubTest, PushIsAFanoutEvenWhenTheSenderIsAlone) {
  hub_.Connect(1, std::nullopt);
  Join(1, "room:1", "6");
  auto out = Handle(1, Msg("6", "7", "room:1", "shout"));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].kind, Kind::kBroadcast);
}

TEST_F(HubTest, MessagesFromAnUnknownSocketAreIgnored) {
  EXPECT_TRUE(Join(99, "room:1", "1").empty());
  EXPECT_TRUE(Handle(99, Msg("1", "2", "room:1", "shout")).empty());
  EXPECT_EQ(hub_.topics(), 0u);
}

// --- Disconnect

TEST_F(HubTest, DisconnectLeavesEveryTopicWithOneDiffPerTopic) {
  hub_.Connect(1, std::nullopt);
  hub_.Connect(2, std::nullopt);
  Join(1, "a", "1", R"({"presence":{"key":"alice","meta":{"t":"a"}}})");
  Join(1, "b", "2", R"({"presence":{"key":"alice","meta":{"t":"b"}}})");
  Join(1, "c", "3");
  Join(2, "a", "1");
  Join(2, "b", "2");
  EXPECT_EQ(hub_.topics(), 3u);

  auto out = Disconnect(1);
  // No replies to the gone socket; one leave diff per topic with presence.
  ASSERT_EQ(out.size(), 2u);
  std::vector<std::string> topics;
  for (const Action& a : out) {
    EXPECT_EQ(a.kind, Kind::kBroadcast);
    EXPECT_EQ(a.conn, 1u);
    topics.push_back(a.topic);
    ExpectFanout(
        a, a.topic, 1,
        R"([null,null,")" + a.topic +
            R"(","presence_diff",{"joins":{},"leaves":{"alice":{"metas":[{"phx_ref":"s0.)" +
            (a.topic == "a" ? "1" : "2") + R"(","t":")" + a.topic + R"("}]}}}])");
  }
  std::sort(topics.begin(), topics.end());
  EXPECT_EQ(topics, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(Subs(hub_, "a"), std::vector<ConnId>{2});
  EXPECT_EQ(Subs(hub_, "b"), std::vector<ConnId>{2});
  EXPECT_EQ(hub_.Subscribers("c"), nullptr);
  EXPECT_EQ(hub_.topics(), 2u);
  EXPECT_EQ(hub_.connections(), 1u);
}

TEST_F(HubTest, DisconnectOfTheLastSubscriberLeavesNothingBehind) {
  hub_.Connect(1, std::nullopt);
  Join(1, "a", "1", R"({"presence":{"key":"alice"}})");
  Join(1, "b", "2");
  auto out = Disconnect(1);
  ASSERT_EQ(out.size(), 1u);  // the diff still goes out: the topic may have subscribers elsewhere
  EXPECT_EQ(hub_.topics(), 0u);
  EXPECT_EQ(hub_.connections(), 0u);

  // A new socket finds an empty topic, presence included.
  hub_.Connect(2, std::nullopt);
  out = Join(2, "a", "1");
  EXPECT_EQ(out[1].data, R"(["1",null,"a","presence_state",{}])");
}

TEST_F(HubTest, DisconnectOfAnUnknownSocketIsANoOp) {
  hub_.Connect(1, std::nullopt);
  Join(1, "a", "1");
  EXPECT_TRUE(Disconnect(2).empty());
  EXPECT_TRUE(Disconnect(1).empty());
  EXPECT_TRUE(Disconnect(1).empty());
  EXPECT_EQ(hub_.connections(), 0u);
}

TEST_F(HubTest, SubscribersKeepJoinOrder) {
  for (ConnId c = 1; c <= 4; ++c) {
    hub_.Connect(c, std::nullopt);
    Join(c, "room:1", "1");
  }
  EXPECT_EQ(Subs(hub_, "room:1"), (std::vector<ConnId>{1, 2, 3, 4}));
  Handle(2, Msg("1", "2", "room:1", "phx_leave"));
  EXPECT_EQ(Subs(hub_, "room:1"), (std::vector<ConnId>{1, 3, 4}));
  Disconnect(1);
  EXPECT_EQ(Subs(hub_, "room:1"), (std::vector<ConnId>{3, 4}));
  Join(2, "room:1", "3");
  EXPECT_EQ(Subs(hub_, "room:1"), (std::vector<ConnId>{3, 4, 2}));
}

TEST_F(HubTest, ManySocketsManyTopicsLeaveNoStateBehind) {
  for (ConnId c = 1; c <= 200; ++c) {
    hub_.Connect(c, std::nullopt);
    for (int t = 0; t < 10; ++t) {
      std::string topic = "t" + std::to_string((c + t) % 25);
      std::string jr = std::to_string(t + 1);
      Join(c, topic, jr, t % 2 ? "{}" : R"({"presence":{"key":"u)" + std::to_string(c) + R"("}})");
    }
  }
  EXPECT_EQ(hub_.topics(), 25u);
  for (ConnId c = 1; c <= 200; c += 2) Disconnect(c);
  for (ConnId c = 2; c <= 200; c += 2) {
    for (int t = 0; t < 10; ++t) {
      std::string topic = "t" + std::to_string((c + t) % 25);
      Handle(c, Msg(std::nullopt, "x", topic, "phx_leave"));
    }
  }
  EXPECT_EQ(hub_.topics(), 0u);
  EXPECT_EQ(hub_.connections(), 100u);
  for (ConnId c = 2; c <= 200; c += 2) Disconnect(c);
  EXPECT_EQ(hub_.connections(), 0u);
}

}  // namespace
}  // namespace sb::worker
