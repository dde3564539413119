// Membership: snapshots and changes as joined/left/changed events, record
// parsing and validation, this node's own record ignored.

#include "broker/membership.h"

#include <gtest/gtest.h>

namespace sb::broker {
namespace {

constexpr char kKeyA[] = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
constexpr char kKeyB[] = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID";

Member M(std::string name, std::string endpoint = "tcp://10.0.0.1:7000",
         std::string incarnation = "i1", std::string key = kKeyA) {
  return {std::move(name), std::move(endpoint), std::move(key), std::move(incarnation)};
}

MemberRecord R(std::string name, const Member& m) {
  return {std::move(name), FormatMemberRecord(m)};
}

using Events = std::vector<MemberEvent>;
using std::vector;

TEST(MembershipTest, FormatAndParseRoundTrip) {
  Member m = M("b", "tcp://db-2.example:7100", "5f3a9c", kKeyB);
  Result<Member> back = ParseMemberRecord("b", FormatMemberRecord(m));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back.value(), m);
}

TEST(MembershipTest, ParseIgnoresUnknownFields) {
  Result<Member> m =
      ParseMemberRecord("b", std::string(R"({"broker":"tcp://h:1","curve_public":")") + kKeyA +
                                 R"(","incarnation":"x","zone":"eu"})");
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(m->endpoint, "tcp://h:1");
}

TEST(MembershipTest, ParseRefusesBadRecords) {
  const std::string key = kKeyA;
  for (const std::string& bad : vector<std::string>{
           "", "{", "[]", "null", R"({"broker":"tcp://h:1","curve_public":")" + key + R"("})",
           R"({"broker":1,"curve_public":")" + key + R"(","incarnation":"x"})",
           R"({"broker":"udp://h:1","curve_public":")" + key + R"(","incarnation":"x"})",
           R"({"broker":"tcp://h:0","curve_public":")" + key + R"(","incarnation":"x"})",
           R"({"broker":"tcp://h:99999","curve_public":")" + key + R"(","incarnation":"x"})",
           R"({"broker":"tcp://:5","curve_public":")" + key + R"(","incarnation":"x"})",
           R"({"broker":"tcp://h:1","curve_public":"short","incarnation":"x"})",
           R"({"broker":"tcp://h:1","curve_public":")" + key + R"(","incarnation":""})",
           R"({"broker":"tcp://h:1","curve_public":")" + key + R"(","incarnation":"a b"})"}) {
    EXPECT_FALSE(ParseMemberRecord("b", bad).ok()) << bad;
  }
  // The name comes from the key: a key with '/' past the prefix is no node.
  EXPECT_FALSE(ParseMemberRecord("x/y", FormatMemberRecord(M("x"))).ok());
  EXPECT_FALSE(ParseMemberRecord("", FormatMemberRecord(M("x"))).ok());
}

TEST(MembershipTest, KeyValidation) {
  EXPECT_TRUE(ValidateCurvePublic(kKeyA).ok());
  EXPECT_FALSE(ValidateCurvePublic(std::string(40, '"')).ok());  // '"' is not Z85
  EXPECT_FALSE(ValidateCurvePublic(std::string(kKeyA) + "0").ok());
}

TEST(MembershipTest, StaticPeerSplitsAtTheFirstTwoEquals) {
  // Z85 keys may hold '=': it belongs to the key.
  const std::string key = "abcdefghij=abcdefghij=abcdefghij=abcdefgh";
  ASSERT_EQ(key.size(), 41u);
  const std::string key40 = key.substr(1);
  Result<Member> m = ParseStaticPeer("node-b=tcp://10.0.0.2:7000=" + key40);
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(m->name, "node-b");
  EXPECT_EQ(m->endpoint, "tcp://10.0.0.2:7000");
  EXPECT_EQ(m->curve_public, key40);
  EXPECT_EQ(m->incarnation, "static");
  EXPECT_FALSE(ParseStaticPeer("node-b=tcp://10.0.0.2:7000").ok());
  EXPECT_FALSE(ParseStaticPeer("node-b").ok());
  EXPECT_FALSE(ParseStaticPeer("=tcp://10.0.0.2:7000=" + key40).ok());
  EXPECT_FALSE(ParseStaticPeer("b=ipc:///tmp/x=" + key40).ok());
}

TEST(MembershipTest, SnapshotReportsJoinedLeftAndChanged) {
  Membership ms("self");
  vector<Member> first = {M("a"), M("b"), M("c")};
  EXPECT_EQ(ms.ApplySnapshot(first), (Events{{MemberEventKind::kJoined, M("a")},
                                             {MemberEventKind::kJoined, M("b")},
                                             {MemberEventKind::kJoined, M("c")}}));
  // a unchanged, b new incarnation, c gone, d new.
  vector<Member> second = {M("d"), M("b", "tcp://10.0.0.1:7000", "i2"), M("a")};
  EXPECT_EQ(ms.ApplySnapshot(second),
            (Events{{MemberEventKind::kChanged, M("b", "tcp://10.0.0.1:7000", "i2")},
                    {MemberEventKind::kLeft, M("c")},
                    {MemberEventKind::kJoined, M("d")}}));
  EXPECT_EQ(ms.members().size(), 3u);
  EXPECT_TRUE(ms.ApplySnapshot(second).empty());                      // the same again: nothing
  EXPECT_EQ(ms.ApplySnapshot(std::span<const Member>()).size(), 3u);  // all left
  EXPECT_TRUE(ms.members().empty());
}

TEST(MembershipTest, ChangedOnEndpointOrKey) {
  Membership ms("self");
  (void)ms.Put(M("a"));
  EXPECT_EQ(ms.Put(M("a", "tcp://10.0.0.9:7000")),
            (Events{{MemberEventKind::kChanged, M("a", "tcp://10.0.0.9:7000")}}));
  Member rekeyed = M("a", "tcp://10.0.0.9:7000", "i1", kKeyB);
  EXPECT_EQ(ms.Put(rekeyed), (Events{{MemberEventKind::kChanged, rekeyed}}));
  EXPECT_TRUE(ms.Put(rekeyed).empty());
}

TEST(MembershipTest, OwnRecordIsIgnoredEverywhere) {
  Membership ms("self");
  vector<Member> snap = {M("self"), M("a")};
  EXPECT_EQ(ms.ApplySnapshot(snap), (Events{{MemberEventKind::kJoined, M("a")}}));
  EXPECT_TRUE(ms.Put(M("self")).empty());
  EXPECT_TRUE(ms.Put(MemberRecord{"self", "not json"}).empty());
  EXPECT_TRUE(ms.Delete("self").empty());
  EXPECT_EQ(ms.members().size(), 1u);
  EXPECT_EQ(ms.bad_records(), 0u);  // our own record is never judged
}

TEST(MembershipTest, PutAndDeleteRecords) {
  Membership ms("self");
  EXPECT_EQ(ms.Put(R("a", M("a"))), (Events{{MemberEventKind::kJoined, M("a")}}));
  EXPECT_EQ(ms.Delete("a"), (Events{{MemberEventKind::kLeft, M("a")}}));
  EXPECT_TRUE(ms.Delete("a").empty());  // not a member: nothing
}

TEST(MembershipTest, BadRecordsAreSkippedAndCounted) {
  Membership ms("self");
  (void)ms.Put(R("a", M("a")));
  // A bad put leaves the member as it was.
  EXPECT_TRUE(ms.Put(MemberRecord{"a", "{\"broker\":"}).empty());
  EXPECT_EQ(ms.members().at("a"), M("a"));
  EXPECT_EQ(ms.bad_records(), 1u);
  // In a snapshot the bad ones are skipped, the good ones taken.
  vector<MemberRecord> snap = {
      R("a", M("a")), {"b", "[1,2]"}, R("c", M("c")), R("bad/name", M("x"))};
  EXPECT_EQ(ms.ApplySnapshot(snap), (Events{{MemberEventKind::kJoined, M("c")}}));
  EXPECT_EQ(ms.bad_records(), 3u);
  // A member struct that does not validate counts too.
  EXPECT_TRUE(ms.Put(M("d", "tcp://h")).empty());
  EXPECT_EQ(ms.bad_records(), 4u);
}

TEST(MembershipTest, SnapshotWithTheSameNameTwiceTakesTheLast) {
  Membership ms("self");
  vector<Member> snap = {M("a", "tcp://h:1"), M("a", "tcp://h:2")};
  EXPECT_EQ(ms.ApplySnapshot(snap), (Events{{MemberEventKind::kJoined, M("a", "tcp://h:2")}}));
}

TEST(MembershipTest, EventNames) {
  EXPECT_EQ(MemberEventName(MemberEventKind::kJoined), "joined");
  EXPECT_EQ(MemberEventName(MemberEventKind::kLeft), "left");
  EXPECT_EQ(MemberEventName(MemberEventKind::kChanged), "changed");
}

}  // namespace
}  // namespace sb::broker
