#include "worker/address_counts.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <string>

namespace sb::worker {
namespace {

AddressCounts::Key V4(const char* text) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(1234);
  EXPECT_EQ(inet_pton(AF_INET, text, &a.sin_addr), 1);
  auto key = AddressCounts::KeyOf(reinterpret_cast<const sockaddr*>(&a), sizeof a);
  EXPECT_TRUE(key.has_value());
  return key.value_or(AddressCounts::Key{});
}

AddressCounts::Key V6(const char* text, uint16_t port = 1234) {
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_port = htons(port);
  EXPECT_EQ(inet_pton(AF_INET6, text, &a.sin6_addr), 1);
  auto key = AddressCounts::KeyOf(reinterpret_cast<const sockaddr*>(&a), sizeof a);
  EXPECT_TRUE(key.has_value());
  return key.value_or(AddressCounts::Key{});
}

TEST(AddressCounts, KeysIgnoreThePortAndMapIpv4InIpv6ToIpv4) {
  EXPECT_EQ(V4("127.0.0.2"), V6("::ffff:127.0.0.2"));
  EXPECT_EQ(V6("2001:db8::1", 1), V6("2001:db8::1", 2));
  EXPECT_NE(V4("127.0.0.2"), V4("127.0.0.3"));
  EXPECT_NE(V6("2001:db8::1"), V6("2001:db8::2"));
  EXPECT_NE(V4("0.0.0.1"), V6("::1"));
}

TEST(AddressCounts, OtherFamiliesAndShortAddressesHaveNoKey) {
  sockaddr_un u{};
  u.sun_family = AF_UNIX;
  EXPECT_FALSE(AddressCounts::KeyOf(reinterpret_cast<const sockaddr*>(&u), sizeof u));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  EXPECT_FALSE(AddressCounts::KeyOf(reinterpret_cast<const sockaddr*>(&a), 4));
}

TEST(AddressCounts, RefusesAnAddressAtItsLimitOnly) {
  AddressCounts counts(2);
  const auto a = V4("127.0.0.2"), b = V4("127.0.0.3");
  EXPECT_TRUE(counts.Add(a));
  EXPECT_TRUE(counts.Add(a));
  EXPECT_FALSE(counts.Add(a));
  EXPECT_EQ(counts.count(a), 2u);
  EXPECT_TRUE(counts.Add(b));
  EXPECT_TRUE(counts.Add(V6("::ffff:127.0.0.3")));
  EXPECT_FALSE(counts.Add(b));
  counts.Remove(a);
  EXPECT_TRUE(counts.Add(a));
  EXPECT_FALSE(counts.Add(a));
}

TEST(AddressCounts, ForgetsAnAddressThatHoldsNothing) {
  AddressCounts counts(3);
  for (int i = 0; i < 100; ++i) {
    const auto k = V4(("10.0.0." + std::to_string(i)).c_str());
    ASSERT_TRUE(counts.Add(k));
    counts.Remove(k);
  }
  EXPECT_EQ(counts.addresses(), 0u);
  const auto k = V4("10.0.0.1");
  ASSERT_TRUE(counts.Add(k));
  ASSERT_TRUE(counts.Add(k));
  EXPECT_EQ(counts.addresses(), 1u);
  counts.Remove(k);
  counts.Remove(k);
  EXPECT_EQ(counts.addresses(), 0u);
}

TEST(AddressCounts, ZeroIsUnlimitedAndKeepsNothing) {
  AddressCounts counts(0);
  const auto a = V4("127.0.0.2");
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(counts.Add(a));
  EXPECT_EQ(counts.addresses(), 0u);
  counts.Remove(a);
}

TEST(AddressCounts, AnAdoptedSocketCountsEvenPastTheLimit) {
  AddressCounts counts(1);
  const auto a = V4("10.0.0.9");
  ASSERT_TRUE(counts.Add(a));
  counts.Adopt(a);
  EXPECT_EQ(counts.count(a), 2u);
  EXPECT_FALSE(counts.Add(a));
  counts.Remove(a);
  EXPECT_FALSE(counts.Add(a)) << "one is still there";
  counts.Remove(a);
  EXPECT_TRUE(counts.Add(a));
}

}  // namespace
}  // namespace sb::worker
