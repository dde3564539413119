#include "common/zap_policy.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/curve.h"

namespace sb {
namespace {

constexpr char kMember[] = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID";
constexpr char kStranger[] = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";

// A request as libzmq's session sends it (less the envelope).
std::vector<std::string> Request(std::string mechanism, std::vector<std::string> credentials) {
  std::vector<std::string> f = {"1.0", "7", "peer", "10.0.0.2", "", std::move(mechanism)};
  f.insert(f.end(), credentials.begin(), credentials.end());
  return f;
}

ZapReply Ask(ZapPolicy& p, const std::vector<std::string>& request) {
  std::vector<std::string_view> frames(request.begin(), request.end());
  return p.Decide(frames);
}

std::string Raw(const char* z85) { return curve::Decode(z85).value(); }

TEST(ZapPolicyTest, AnAdmittedKeyGets200WithTheMemberNameAsUserId) {
  ZapPolicy p;
  ASSERT_TRUE(p.Admit("node2", kMember).ok());
  ZapReply r = Ask(p, Request("CURVE", {Raw(kMember)}));
  EXPECT_EQ(r.request_id, "7");
  EXPECT_EQ(r.status_code, "200");
  EXPECT_EQ(r.user_id, "node2");
  EXPECT_EQ(p.admitted(), 1u);
  const auto frames = r.Frames();
  EXPECT_EQ(frames[0], "1.0");
  EXPECT_EQ(frames[1], "7");
  EXPECT_EQ(frames[2], "200");
  EXPECT_EQ(frames[4], "node2");
  EXPECT_EQ(frames[5], "");
}

TEST(ZapPolicyTest, AnUnknownKeyGets400AndIsCounted) {
  ZapPolicy p;
  ASSERT_TRUE(p.Admit("node2", kMember).ok());
  ZapReply r = Ask(p, Request("CURVE", {Raw(kStranger)}));
  EXPECT_EQ(r.status_code, "400");
  EXPECT_EQ(r.status_text, "unknown key");
  EXPECT_EQ(r.user_id, "");
  EXPECT_EQ(p.refused(ZapPolicy::Refusal::kUnknownKey), 1u);
  EXPECT_EQ(p.admitted(), 0u);
  ZapPolicy empty;
  EXPECT_EQ(Ask(empty, Request("CURVE", {Raw(kMember)})).status_code, "400")
      << "no members, nobody admitted";
}

TEST(ZapPolicyTest, AdmittingAgainRenamesAndRemovingRefusesFromThenOn) {
  ZapPolicy p;
  ASSERT_TRUE(p.Admit("node2", kMember).ok());
  ASSERT_TRUE(p.Admit("node2b", kMember).ok());
  EXPECT_EQ(p.size(), 1u);
  EXPECT_EQ(Ask(p, Request("CURVE", {Raw(kMember)})).user_id, "node2b");
  EXPECT_TRUE(p.Remove(kMember));
  EXPECT_FALSE(p.Remove(kMember));
  EXPECT_EQ(Ask(p, Request("CURVE", {Raw(kMember)})).status_code, "400");
}

TEST(ZapPolicyTest, AnInvalidKeyOrNameIsNotAdmitted) {
  ZapPolicy p;
  EXPECT_FALSE(p.Admit("node2", "short").ok());
  EXPECT_FALSE(p.Admit("node2", std::string(40, '#')).ok());
  EXPECT_FALSE(p.Admit("", kMember).ok());
  EXPECT_EQ(p.size(), 0u);
}

TEST(ZapPolicyTest, OtherMechanismsGet400) {
  ZapPolicy p;
  ASSERT_TRUE(p.Admit("node2", kMember).ok());
  EXPECT_EQ(Ask(p, Request("NULL", {})).status_code, "400");
  EXPECT_EQ(Ask(p, Request("PLAIN", {"user", "pass"})).status_code, "400");
  EXPECT_EQ(p.refused(ZapPolicy::Refusal::kMechanism), 2u);
}

TEST(ZapPolicyTest, MalformedRequestsGet500WithTheirRequestIdAndNeverCrash) {
  ZapPolicy p;
  ASSERT_TRUE(p.Admit("node2", kMember).ok());
  std::vector<std::string> wrong_version = Request("CURVE", {Raw(kMember)});
  wrong_version[0] = "2.0";
  ZapReply r = Ask(p, wrong_version);
  EXPECT_EQ(r.status_code, "500");
  EXPECT_EQ(r.request_id, "7");
  EXPECT_EQ(Ask(p, Request("CURVE", {})).status_code, "500") << "no key";
  EXPECT_EQ(Ask(p, Request("CURVE", {Raw(kMember).substr(1)})).status_code, "500");
  EXPECT_EQ(Ask(p, Request("CURVE", {Raw(kMember), Raw(kMember)})).status_code, "500");
  EXPECT_EQ(Ask(p, Request("CURVE", {std::string(kMember)})).status_code, "500")
      << "Z85 text, not the 32 bytes";
  EXPECT_EQ(Ask(p, {"1.0", "9"}).status_code, "500");
  EXPECT_EQ(Ask(p, {"1.0", "9"}).request_id, "9");
  ZapReply none = Ask(p, {});
  EXPECT_EQ(none.status_code, "500");
  EXPECT_EQ(none.request_id, "");
  EXPECT_EQ(p.refused(ZapPolicy::Refusal::kMalformed), 8u);
  EXPECT_EQ(p.admitted(), 0u);
}

}  // namespace
}  // namespace sb
