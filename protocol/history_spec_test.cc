#include "protocol/history_spec.h"

#include <gtest/gtest.h>

namespace sb::history {
namespace {

TEST(HistoryRule, ParsesSizeAndTtlWithEveryUnit) {
  Result<Rule> r = ParseRule("room:*=1000/10m");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->pattern, "room:*");
  EXPECT_EQ(r->size, 1000u);
  EXPECT_EQ(r->ttl_ms, 600'000);
  EXPECT_EQ(ParseRule("a=1/250ms")->ttl_ms, 250);
  EXPECT_EQ(ParseRule("a=1/30s")->ttl_ms, 30'000);
  EXPECT_EQ(ParseRule("a=1/2h")->ttl_ms, 7'200'000);
  // The last '=' splits: a pattern may hold one.
  EXPECT_EQ(ParseRule("a=b=5/1s")->pattern, "a=b");
}

TEST(HistoryRule, EveryMistakeIsNamed) {
  const std::pair<const char*, const char*> cases[] = {
      {"room:*", "no '='"},
      {"=10/1m", "empty pattern"},
      {"room:*=10", "no '/'"},
      {"room:*=0/1m", "SIZE must be"},
      {"room:*=-1/1m", "SIZE must be"},
      {"room:*=2000000/1m", "SIZE must be"},
      {"room:*=x/1m", "SIZE must be"},
      {"room:*=10/10", "TTL needs a unit"},
      {"room:*=10/0s", "TTL must be"},
      {"room:*=10/8000h", "TTL must be"},
      {"room:*=10/ms", "TTL must be"},
  };
  for (const auto& [text, why] : cases) {
    SCOPED_TRACE(text);
    Result<Rule> r = ParseRule(text);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Status::Code::kInvalidConfig);
    EXPECT_NE(r.status().message().find(why), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find(text), std::string::npos) << r.status().message();
  }
}

TEST(HistoryRules, TheFirstMatchingPatternIsTheTopics) {
  Result<Rules> rules = Rules::Parse({"room:lobby=5/1s", "room:*=100/1m", "*=1/1s"});
  ASSERT_TRUE(rules.ok());
  EXPECT_EQ(rules->Find("room:lobby")->size, 5u);
  EXPECT_EQ(rules->Find("room:lobby2")->size, 100u);
  EXPECT_EQ(rules->Find("room:")->size, 100u);
  EXPECT_EQ(rules->Find("chat")->size, 1u);
  Result<Rules> exact = Rules::Parse({"room:1=5/1s"});
  EXPECT_EQ(exact->Find("room:12"), nullptr);
  EXPECT_FALSE(Rules::Parse({"ok=1/1s", "bad"}).ok());
  EXPECT_TRUE(Rules().empty());
}

TEST(HistoryEpoch, IsSixteenHexDigitsBothWays) {
  EXPECT_EQ(FormatEpoch(1), "0000000000000001");
  EXPECT_EQ(FormatEpoch(0xfedcba9876543210), "fedcba9876543210");
  EXPECT_EQ(ParseEpoch("fedcba9876543210"), 0xfedcba9876543210u);
  EXPECT_EQ(ParseEpoch("FEDCBA9876543210"), 0xfedcba9876543210u);
  EXPECT_EQ(ParseEpoch("0000000000000000"), std::nullopt);
  EXPECT_EQ(ParseEpoch("123"), std::nullopt);
  EXPECT_EQ(ParseEpoch("000000000000000g"), std::nullopt);
}

}  // namespace
}  // namespace sb::history
