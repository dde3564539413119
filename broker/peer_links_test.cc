#include "broker/peer_links.h"

#include <gtest/gtest.h>

namespace sb::broker {
namespace {

using Kind = PeerLinks::Action::Kind;
using State = PeerLinks::State;

constexpr int64_t kMs = 1'000'000;

Member B() {
  return {.name = "b",
          .endpoint = "tcp://127.0.0.1:7101",
          .curve_public = std::string(40, 'x'),
          .incarnation = "static"};
}

std::vector<Kind> Kinds(const std::vector<PeerLinks::Action>& actions) {
  std::vector<Kind> out;
  for (const auto& a : actions) out.push_back(a.kind);
  return out;
}

// A link to b, welcomed at `now`.
PeerLinks UpLink(int64_t hello_at, int64_t now) {
  PeerLinks links({.heartbeat_ms = 100, .misses = 3});
  links.OnMember({.kind = MemberEventKind::kJoined, .member = B()});
  links.OnConnected("b", hello_at);
  links.OnWelcome("b", {.node = "b", .cluster = "", .incarnation = "i1"}, now);
  return links;
}

TEST(PeerLinksTest, AJoinedMemberIsConnectedGreetedAndUpOnItsWelcome) {
  PeerLinks links({.heartbeat_ms = 100, .misses = 3});
  auto a = links.OnMember({.kind = MemberEventKind::kJoined, .member = B()});
  ASSERT_EQ(Kinds(a), std::vector<Kind>{Kind::kConnect});
  EXPECT_EQ(a[0].member, B());
  EXPECT_EQ(links.links().at("b").state, State::kConnecting);
  EXPECT_TRUE(links.Tick(10 * 1000 * kMs).empty()) << "nothing is due while connecting";

  EXPECT_EQ(Kinds(links.OnConnected("b", 1000 * kMs)), std::vector<Kind>{Kind::kSendHello});
  EXPECT_EQ(links.links().at("b").state, State::kGreeting);
  a = links.OnWelcome("b", {.node = "b", .cluster = "", .incarnation = "i1"}, 1003 * kMs);
  ASSERT_EQ(Kinds(a), std::vector<Kind>{Kind::kUp});
  EXPECT_EQ(a[0].rtt_ns, 3 * kMs) << "the hello's round trip";
  EXPECT_EQ(links.links().at("b").state, State::kUp);
  EXPECT_EQ(links.links().at("b").incarnation, "i1");
}

TEST(PeerLinksTest, AWelcomeNamingAnotherNodeOrUnaskedIsIgnored) {
  PeerLinks links({.heartbeat_ms = 100, .misses = 3});
  links.OnMember({.kind = MemberEventKind::kJoined, .member = B()});
  EXPECT_TRUE(links.OnWelcome("b", {.node = "b", .cluster = "", .incarnation = "i"}, 0).empty())
      << "no hello sent yet";
  links.OnConnected("b", 0);
  EXPECT_TRUE(links.OnWelcome("b", {.node = "c", .cluster = "", .incarnation = "i"}, 0).empty());
  EXPECT_EQ(links.links().at("b").state, State::kGreeting);
  EXPECT_TRUE(links.OnWelcome("z", {.node = "z", .cluster = "", .incarnation = "i"}, 0).empty());
}

TEST(PeerLinksTest, HeartbeatsGoEveryIntervalAndTheirEchoesGiveTheRtt) {
  PeerLinks links = UpLink(0, 1 * kMs);
  EXPECT_TRUE(links.Tick(100 * kMs).empty());
  auto a = links.Tick(101 * kMs);
  ASSERT_EQ(Kinds(a), std::vector<Kind>{Kind::kSendHeartbeat});
  EXPECT_EQ(a[0].stamp_ns, 101 * kMs);
  EXPECT_TRUE(links.Tick(150 * kMs).empty());
  links.OnHeartbeat("b", 101 * kMs, 101 * kMs + 400'000);
  EXPECT_EQ(links.links().at("b").rtt_ns, 400'000);
  // An echo from the future or far past is not a round trip of ours.
  links.OnHeartbeat("b", 999 * kMs, 160 * kMs);
  EXPECT_EQ(links.links().at("b").rtt_ns, 400'000);
  EXPECT_EQ(Kinds(links.Tick(201 * kMs)), std::vector<Kind>{Kind::kSendHeartbeat});
}

TEST(PeerLinksTest, ALinkSilentForThreeIntervalsIsDownAndMadeAnew) {
  PeerLinks links = UpLink(0, 0);
  links.Tick(100 * kMs);
  links.OnHeartbeat("b", 100 * kMs, 101 * kMs);  // last heard at 101 ms
  links.Tick(200 * kMs);
  EXPECT_EQ(Kinds(links.Tick(400 * kMs)), std::vector<Kind>{Kind::kSendHeartbeat})
      << "299 ms of silence: still up";
  auto a = links.Tick(401 * kMs);
  ASSERT_EQ(Kinds(a), (std::vector<Kind>{Kind::kDown, Kind::kConnect}));
  EXPECT_EQ(a[0].reason, "no heartbeat for 3 intervals");
  EXPECT_EQ(a[1].member, B());
  EXPECT_EQ(links.links().at("b").state, State::kConnecting);
  EXPECT_TRUE(links.Tick(10'000 * kMs).empty()) << "down once; the new socket waits to connect";
  // The new connection says hello again and is up on its welcome.
  EXPECT_EQ(Kinds(links.OnConnected("b", 10'001 * kMs)), std::vector<Kind>{Kind::kSendHello});
  EXPECT_EQ(
      Kinds(links.OnWelcome("b", {.node = "b", .cluster = "", .incarnation = "i2"}, 10'002 * kMs)),
      std::vector<Kind>{Kind::kUp});
}

TEST(PeerLinksTest, AnUnansweredHelloIsRetriedOnANewConnectionWithoutADown) {
  PeerLinks links({.heartbeat_ms = 100, .misses = 3});
  links.OnMember({.kind = MemberEventKind::kJoined, .member = B()});
  links.OnConnected("b", 0);
  EXPECT_TRUE(links.Tick(299 * kMs).empty());
  EXPECT_EQ(Kinds(links.Tick(300 * kMs)), std::vector<Kind>{Kind::kConnect});
}

TEST(PeerLinksTest, AClosedConnectionIsDownAndTheReconnectGreetsAgain) {
  PeerLinks links = UpLink(0, 0);
  auto a = links.OnDisconnected("b");
  ASSERT_EQ(Kinds(a), std::vector<Kind>{Kind::kDown});
  EXPECT_EQ(a[0].reason, "connection closed");
  EXPECT_TRUE(links.OnDisconnected("b").empty()) << "down once";
  EXPECT_TRUE(links.Tick(10'000 * kMs).empty()) << "libzmq reconnects by itself";
  EXPECT_EQ(Kinds(links.OnConnected("b", 10'000 * kMs)), std::vector<Kind>{Kind::kSendHello});
}

TEST(PeerLinksTest, AFailedHandshakeIsRetriedOnANewSocketThreeIntervalsLater) {
  PeerLinks links({.heartbeat_ms = 100, .misses = 3});
  links.OnMember({.kind = MemberEventKind::kJoined, .member = B()});
  EXPECT_TRUE(links.OnHandshakeFailed("b", 1000 * kMs).empty());
  EXPECT_TRUE(links.Tick(1299 * kMs).empty());
  EXPECT_EQ(Kinds(links.Tick(1300 * kMs)), std::vector<Kind>{Kind::kConnect});
  EXPECT_TRUE(links.Tick(5000 * kMs).empty()) << "once per failure";
  // Up, then a failed handshake: down.
  links.OnConnected("b", 6000 * kMs);
  links.OnWelcome("b", {.node = "b", .cluster = "", .incarnation = "i"}, 6000 * kMs);
  auto a = links.OnHandshakeFailed("b", 6001 * kMs);
  ASSERT_EQ(Kinds(a), std::vector<Kind>{Kind::kDown});
  EXPECT_EQ(a[0].reason, "handshake failed");
}

TEST(PeerLinksTest, AHandshakeWhileUpIsADownAndANewHello) {
  PeerLinks links = UpLink(0, 0);
  EXPECT_EQ(Kinds(links.OnConnected("b", 5 * kMs)),
            (std::vector<Kind>{Kind::kDown, Kind::kSendHello}));
}

TEST(PeerLinksTest, AChangedMemberIsRelinkedAndALeftOneClosed) {
  PeerLinks links = UpLink(0, 0);
  Member moved = B();
  moved.endpoint = "tcp://127.0.0.1:7201";
  auto a = links.OnMember({.kind = MemberEventKind::kChanged, .member = moved});
  ASSERT_EQ(Kinds(a), (std::vector<Kind>{Kind::kDown, Kind::kConnect}));
  EXPECT_EQ(a[0].reason, "member changed");
  EXPECT_EQ(a[1].member, moved);
  EXPECT_EQ(links.links().at("b").state, State::kConnecting);

  a = links.OnMember({.kind = MemberEventKind::kLeft, .member = moved});
  EXPECT_EQ(Kinds(a), std::vector<Kind>{Kind::kClose}) << "not up: no down";
  EXPECT_TRUE(links.links().empty());
  EXPECT_TRUE(links.OnMember({.kind = MemberEventKind::kLeft, .member = moved}).empty());
  EXPECT_TRUE(links.OnConnected("b", 0).empty()) << "a late event of a closed socket";
}

TEST(PeerLinksTest, ALeftMemberThatWasUpIsDownThenClosed) {
  PeerLinks links = UpLink(0, 0);
  auto a = links.OnMember({.kind = MemberEventKind::kLeft, .member = B()});
  ASSERT_EQ(Kinds(a), (std::vector<Kind>{Kind::kDown, Kind::kClose}));
  EXPECT_EQ(a[0].reason, "left");
}

// --- InboundLinks ------------------------------------------------------------

mesh::PeerIntro Hello(std::string node, std::string cluster = "prod") {
  return {.node = std::move(node), .cluster = std::move(cluster), .incarnation = "i1"};
}

TEST(InboundLinksTest, AHelloIsAcceptedOnlyFromTheMemberItsKeyWasAdmittedFor) {
  InboundLinks in({.heartbeat_ms = 100, .misses = 3}, "prod");
  std::string replaced;
  EXPECT_EQ(in.OnHello("r1", "b", Hello("c"), 0, &replaced), InboundLinks::HelloResult::kWrongNode);
  EXPECT_EQ(in.OnHello("r1", "b", Hello("b", "test"), 0, &replaced),
            InboundLinks::HelloResult::kWrongCluster);
  EXPECT_TRUE(in.links().empty());
  EXPECT_EQ(in.OnHeard("r1", 0), nullptr) << "no accepted hello: not answered";
  EXPECT_EQ(in.OnHello("r1", "b", Hello("b"), 0, &replaced), InboundLinks::HelloResult::kAccepted);
  ASSERT_NE(in.OnHeard("r1", 1), nullptr);
  EXPECT_EQ(in.OnHeard("r1", 1)->node, "b");
  // Plain text: no admission to check the name against.
  EXPECT_EQ(in.OnHello("r2", "", Hello("c"), 0, &replaced), InboundLinks::HelloResult::kAccepted);
}

TEST(InboundLinksTest, ANewHelloFromTheSameMemberReplacesItsOldLink) {
  InboundLinks in({.heartbeat_ms = 100, .misses = 3}, "prod");
  std::string replaced;
  in.OnHello("r1", "b", Hello("b"), 0, &replaced);
  EXPECT_TRUE(replaced.empty());
  in.OnHello("r2", "b", Hello("b"), 0, &replaced);
  EXPECT_EQ(replaced, "r1");
  EXPECT_EQ(in.links().size(), 1u);
  EXPECT_EQ(in.OnHeard("r1", 0), nullptr);
}

TEST(InboundLinksTest, ALinkSilentForThreeIntervalsIsForgotten) {
  InboundLinks in({.heartbeat_ms = 100, .misses = 3}, "prod");
  std::string replaced;
  in.OnHello("r1", "b", Hello("b"), 0, &replaced);
  in.OnHello("r2", "c", Hello("c"), 0, &replaced);
  in.OnHeard("r2", 100 * kMs);
  EXPECT_TRUE(in.Tick(299 * kMs).empty());
  auto gone = in.Tick(300 * kMs);
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0].node, "b");
  EXPECT_EQ(in.OnHeard("r1", 300 * kMs), nullptr);
  EXPECT_TRUE(in.Forget("c"));
  EXPECT_FALSE(in.Forget("c"));
  EXPECT_TRUE(in.links().empty());
}

}  // namespace
}  // namespace sb::broker
