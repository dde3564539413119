#include "broker/peer_endpoint.h"

#include <gtest/gtest.h>

namespace sb::broker {
namespace {

constexpr char kKey[] = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID";

TEST(PeerEndpointTest, OnlyNumericLoopbackAddressesAreLoopback) {
  EXPECT_TRUE(IsLoopbackTcp("tcp://127.0.0.1:7000"));
  EXPECT_TRUE(IsLoopbackTcp("tcp://127.5.6.7:0"));
  EXPECT_TRUE(IsLoopbackTcp("tcp://[::1]:7000"));
  EXPECT_FALSE(IsLoopbackTcp("tcp://128.0.0.1:7000"));
  EXPECT_FALSE(IsLoopbackTcp("tcp://10.0.0.1:7000"));
  EXPECT_FALSE(IsLoopbackTcp("tcp://0.0.0.0:7000"));
  EXPECT_FALSE(IsLoopbackTcp("tcp://*:7000"));
  EXPECT_FALSE(IsLoopbackTcp("tcp://[::]:7000"));
  EXPECT_FALSE(IsLoopbackTcp("tcp://[::ffff:10.0.0.1]:7000"));
  EXPECT_FALSE(IsLoopbackTcp("tcp://localhost:7000")) << "a name could resolve anywhere";
  EXPECT_FALSE(IsLoopbackTcp("tcp://lo:7000")) << "nor an interface's name";
  EXPECT_FALSE(IsLoopbackTcp("tcp://127.0.0.1"));
  EXPECT_FALSE(IsLoopbackTcp("ipc:///tmp/x"));
  EXPECT_FALSE(IsLoopbackTcp("tcp://127.0.0.1.evil.example:7000"));
}

TEST(PeerEndpointTest, ANonLoopbackBindNeedsCurveOrInsecure) {
  EXPECT_TRUE(CheckPeerBind("tcp://127.0.0.1:0", false, false).ok());
  Status s = CheckPeerBind("tcp://0.0.0.0:7000", false, false);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("--curve-secret-file"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("--insecure"), std::string::npos) << s.message();
  EXPECT_TRUE(CheckPeerBind("tcp://0.0.0.0:7000", true, false).ok());
  EXPECT_TRUE(CheckPeerBind("tcp://0.0.0.0:7000", false, true).ok());
}

TEST(PeerEndpointTest, OnlyTcpEndpointsAreTaken) {
  EXPECT_FALSE(CheckPeerBind("ipc:///tmp/peer", true, true).ok());
  EXPECT_FALSE(CheckPeerBind("inproc://peer", true, true).ok());
  EXPECT_FALSE(CheckPeerBind("tcp://", true, true).ok());
  EXPECT_FALSE(CheckPeerBind("127.0.0.1:7000", true, true).ok());
}

TEST(PeerEndpointTest, APeerKeyIsANameAndAValidPublicKey) {
  Result<PeerKey> k = ParsePeerKey(std::string("node2=") + kKey);
  ASSERT_TRUE(k.ok()) << k.status().message();
  EXPECT_EQ(k->name, "node2");
  EXPECT_EQ(k->public_key, kKey);
  EXPECT_FALSE(ParsePeerKey(kKey).ok()) << "no name";
  EXPECT_FALSE(ParsePeerKey(std::string("=") + kKey).ok());
  EXPECT_FALSE(ParsePeerKey("node2=").ok());
  EXPECT_FALSE(ParsePeerKey("node2=short").ok());
  // Z85 has '=' in its alphabet: the name ends at the first one.
  const std::string with_eq = std::string(39, '0') + "=";
  Result<PeerKey> eq = ParsePeerKey("node2=" + with_eq);
  ASSERT_TRUE(eq.ok()) << eq.status().message();
  EXPECT_EQ(eq->public_key, with_eq);
}

}  // namespace
}  // namespace sb::broker
