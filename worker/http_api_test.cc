#include "worker/http_api.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>

namespace sb::worker {
namespace {

const std::string kKey = "0123456789abcdef0123";
constexpr std::string_view kAuth = "Bearer 0123456789abcdef0123";

ApiDecision Post(std::string_view target, std::string_view body,
                 std::optional<std::string_view> auth = kAuth) {
  ApiPolicy policy;
  policy.key = &kKey;
  return DecideApi("POST", target, auth, body, policy);
}

std::string ErrorCode(const ApiDecision& d) {
  return std::string(boost::json::parse(d.body).at("error").at("code").as_string());
}

TEST(HttpApiTest, ApiTargetsAreThoseUnderApi) {
  EXPECT_TRUE(IsApiTarget("/api/publish"));
  EXPECT_TRUE(IsApiTarget("/api/presence?topic=a"));
  EXPECT_FALSE(IsApiTarget("/api"));
  EXPECT_FALSE(IsApiTarget("/socket/websocket?x=/api/"));
}

TEST(HttpApiTest, OffAnswers404WhateverTheRequest) {
  ApiDecision d = DecideApi("POST", "/api/publish", kAuth, "{}", ApiPolicy{});
  EXPECT_EQ(d.status, 404);
  EXPECT_FALSE(d.request);
  EXPECT_EQ(d.endpoint, ApiEndpoint::kPublish);
}

TEST(HttpApiTest, MissingOrWrongKeyIs401BeforeRouting) {
  EXPECT_EQ(Post("/api/publish", "{}", std::nullopt).status, 401);
  EXPECT_EQ(Post("/api/publish", "{}", "Bearer 0123456789abcdef0124").status, 401);
  EXPECT_EQ(Post("/api/publish", "{}", "Bearer 0123456789abcdef012").status, 401);
  EXPECT_EQ(Post("/api/publish", "{}", "Basic 0123456789abcdef0123").status, 401);
  EXPECT_EQ(Post("/api/publish", "{}", "Bearer ").status, 401);
  EXPECT_EQ(Post("/api/nope", "{}", std::nullopt).status, 401) << "paths are not revealed";
  ApiDecision d = Post("/api/publish", "{}", std::nullopt);
  EXPECT_EQ(ErrorCode(d), "unauthorized");
  EXPECT_EQ(d.body.find(kKey), std::string::npos);
}

TEST(HttpApiTest, HistoryTakesATopicASinceAndALimit) {
  ApiPolicy policy;
  policy.key = &kKey;
  ApiDecision d =
      DecideApi("GET", "/api/history?topic=room%3A1&since=17&limit=5", kAuth, "", policy);
  ASSERT_TRUE(d.request);
  EXPECT_EQ(d.endpoint, ApiEndpoint::kHistory);
  EXPECT_EQ(d.request->topics, std::vector<std::string>{"room:1"});
  EXPECT_EQ(d.request->since, 17u);
  EXPECT_EQ(d.request->limit, 5u);
  d = DecideApi("GET", "/api/history?topic=a", kAuth, "", policy);
  ASSERT_TRUE(d.request);
  EXPECT_EQ(d.request->since, 0u);
  EXPECT_EQ(d.request->limit, kMaxApiHistoryLimit);
  for (const char* bad : {"/api/history?topic=a&since=-1", "/api/history?topic=a&since=x",
                          "/api/history?topic=a&limit=0", "/api/history?topic=a&limit=1001",
                          "/api/history?topic=a&since=99999999999999999999", "/api/history"}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(DecideApi("GET", bad, kAuth, "", policy).status, 400);
  }
  EXPECT_EQ(Post("/api/history?topic=a", "{}").status, 405);
}

TEST(HttpApiTest, HistorySinceIsAnyU64InDecimalDigits) {
  ApiPolicy policy;
  policy.key = &kKey;
  auto since = [&](const std::string& text) -> std::optional<uint64_t> {
    ApiDecision d = DecideApi("GET", "/api/history?topic=a&since=" + text, kAuth, "", policy);
    if (!d.request) return std::nullopt;
    return d.request->since;
  };
  EXPECT_EQ(since("18446744073709551615"), UINT64_MAX);
  EXPECT_EQ(since("0"), 0u);
  // The value decides, not the number of digits.
  EXPECT_EQ(since("000000000000000000017"), 17u);
  for (const char* bad : {"18446744073709551616", "", "+1", "%2B1", "%201", "1%20", "0x1", "1.0"}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(since(bad), std::nullopt);
  }
  for (const char* bad : {"+5", "%2B5", "", "18446744073709551617"}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(DecideApi("GET", std::string("/api/history?topic=a&limit=") + bad, kAuth, "", policy)
                  .status,
              400);
  }
}

TEST(HttpApiTest, UnknownPathsAre404) { EXPECT_EQ(Post("/api/nope", "{}").status, 404); }

TEST(HttpApiTest, WrongMethodIs405) {
  ApiPolicy policy;
  policy.key = &kKey;
  EXPECT_EQ(DecideApi("GET", "/api/publish", kAuth, "", policy).status, 405);
  EXPECT_EQ(DecideApi("POST", "/api/presence?topic=a", kAuth, "", policy).status, 405);
}

TEST(HttpApiTest, PublishKeepsThePayloadBytes) {
  const std::string payload = R"({ "b" : [1, 2.50, "\u00e9"],"a":null })";
  ApiDecision d = Post("/api/publish", R"({"topic":"room:1","event":"msg","payload":)" + payload +
                                           R"(,"idempotency_key":"k1"})");
  ASSERT_TRUE(d.request) << d.body;
  EXPECT_EQ(d.request->endpoint, ApiEndpoint::kPublish);
  EXPECT_EQ(d.request->topics, std::vector<std::string>{"room:1"});
  EXPECT_EQ(d.request->event, "msg");
  EXPECT_EQ(d.request->payload, payload.substr(0, payload.size()));
  EXPECT_EQ(d.request->idempotency_key, "k1");
}

TEST(HttpApiTest, ScalarAndEscapedNamePayloads) {
  ApiDecision d = Post("/api/publish", R"({"topic":"t","event":"e","pay\u006coad":  -1.5e3  })");
  ASSERT_TRUE(d.request) << d.body;
  EXPECT_EQ(d.request->payload, "-1.5e3");
  d = Post("/api/publish", R"({"payload":"x,}\"y","topic":"t","event":"e"})");
  ASSERT_TRUE(d.request) << d.body;
  EXPECT_EQ(d.request->payload, R"("x,}\"y")");
}

TEST(HttpApiTest, BroadcastTakesSeveralDistinctTopics) {
  ApiDecision d = Post("/api/broadcast", R"({"topics":["a","b"],"event":"e","payload":{}})");
  ASSERT_TRUE(d.request) << d.body;
  EXPECT_EQ(d.request->topics, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(Post("/api/broadcast", R"({"topics":["a","a"],"event":"e","payload":{}})").status, 400);
  EXPECT_EQ(Post("/api/broadcast", R"({"topics":[],"event":"e","payload":{}})").status, 400);
  EXPECT_EQ(Post("/api/broadcast", R"({"topic":"a","event":"e","payload":{}})").status, 400);
  std::string many = R"({"event":"e","payload":1,"topics":[)";
  for (size_t i = 0; i <= kMaxApiTopics; ++i) many += (i ? ",\"" : "\"") + std::to_string(i) + "\"";
  EXPECT_EQ(Post("/api/broadcast", many + "]}").status, 400);
}

TEST(HttpApiTest, BadBodiesAre400WithACode) {
  struct Case {
    std::string body;
    std::string code;
  };
  const std::string long_topic(1025, 't');
  for (const Case& c : std::vector<Case>{
           {"", "bad_request"},
           {"[1]", "bad_request"},
           {R"({"topic":"t","event":"e"})", "bad_request"},
           {R"({"topic":"t","event":"e","payload":1,"x":2})", "bad_request"},
           {R"({"topic":"t","event":"e","payload":1,"payload":2})", "bad_request"},
           {R"({"topic":1,"event":"e","payload":1})", "bad_request"},
           {R"({"topic":"t","event":"e","payload":1} x)", "bad_request"},
           {R"({"topic":"","event":"e","payload":1})", "invalid_topic"},
           {R"({"topic":")" + long_topic + R"(","event":"e","payload":1})", "invalid_topic"},
           {R"({"topic":"t","event":"","payload":1})", "invalid_event"},
           {R"({"topic":"t","event":"phx_join","payload":1})", "reserved_event"},
           {R"({"topic":"t","event":"presence_diff","payload":1})", "reserved_event"},
           {R"({"topic":"t","event":"heartbeat","payload":1})", "reserved_event"},
           {R"({"topic":"t","event":"e","payload":1,"idempotency_key":""})", "bad_request"},
           {"{\"topic\":\"t\",\"event\":\"e\",\"payload\":\"\xff\"}", "bad_request"},
       }) {
    ApiDecision d = Post("/api/publish", c.body);
    ASSERT_EQ(d.status, 400) << c.body;
    EXPECT_FALSE(d.request) << c.body;
    EXPECT_EQ(ErrorCode(d), c.code) << c.body;
  }
}

TEST(HttpApiTest, PayloadDepthIsBoundedAsForClients) {
  // The payload at level 2, as in a client's message array: 63 levels of
  // payload fit the decoder's 64, 64 do not.
  auto nested = [](int levels) {
    return std::string(static_cast<size_t>(levels), '[') +
           std::string(static_cast<size_t>(levels), ']');
  };
  EXPECT_TRUE(
      Post("/api/publish", R"({"topic":"t","event":"e","payload":)" + nested(63) + "}").request);
  EXPECT_EQ(
      Post("/api/publish", R"({"topic":"t","event":"e","payload":)" + nested(64) + "}").status,
      400);
}

TEST(HttpApiTest, PresenceReadsTheTopicFromTheQuery) {
  ApiPolicy policy;
  policy.key = &kKey;
  ApiDecision d = DecideApi("GET", "/api/presence?x=1&topic=room%3A1+a", kAuth, "", policy);
  ASSERT_TRUE(d.request);
  EXPECT_EQ(d.request->endpoint, ApiEndpoint::kPresence);
  EXPECT_EQ(d.request->topics, std::vector<std::string>{"room:1 a"});
  EXPECT_EQ(DecideApi("GET", "/api/presence", kAuth, "", policy).status, 400);
  EXPECT_EQ(DecideApi("GET", "/api/presence?topic=", kAuth, "", policy).status, 400);
}

TEST(HttpApiTest, ResponsesSayWhetherTheConnectionStays) {
  std::string r = ApiResponse(200, kApiOkBody, true);
  EXPECT_EQ(r.rfind("HTTP/1.1 200 OK\r\n", 0), 0u);
  EXPECT_NE(r.find("Connection: keep-alive\r\n"), std::string::npos);
  EXPECT_NE(r.find("Content-Length: 11\r\n"), std::string::npos);
  EXPECT_TRUE(r.ends_with("\r\n\r\n{\"ok\":true}"));
  r = ApiResponse(401, ApiErrorBody("unauthorized", "x"), false);
  EXPECT_NE(r.find("Connection: close\r\n"), std::string::npos);
  EXPECT_NE(r.find("WWW-Authenticate: Bearer\r\n"), std::string::npos);
  EXPECT_NE(ApiResponse(503, "{}", true).find("Retry-After: 1\r\n"), std::string::npos);
  EXPECT_EQ(ApiErrorBody("c", "a \"quoted\" one"),
            R"({"error":{"code":"c","message":"a \"quoted\" one"}})");
}

TEST(HttpApiTest, StatusIndexCoversEveryStatus) {
  for (size_t i = 0; i < kApiStatuses.size(); ++i) EXPECT_EQ(ApiStatusIndex(kApiStatuses[i]), i);
}

TEST(IdempotencyTableTest, ARepeatWithinFiveMinutesGetsTheFirstAnswer) {
  IdempotencyTable t;
  EXPECT_EQ(t.Find("k", 0), nullptr);
  t.Insert("k", "first", 1000);
  ASSERT_NE(t.Find("k", 1000 + IdempotencyTable::kTtlMs - 1), nullptr);
  EXPECT_EQ(*t.Find("k", 2000), "first");
  t.Insert("k", "second", 3000);
  EXPECT_EQ(*t.Find("k", 3000), "first");
  EXPECT_EQ(t.Find("k", 1000 + IdempotencyTable::kTtlMs), nullptr) << "expired";
  EXPECT_EQ(t.size(), 0u);
}

TEST(IdempotencyTableTest, FullForgetsTheOldestFirst) {
  IdempotencyTable t(2);
  t.Insert("a", "1", 0);
  t.Insert("b", "2", 1);
  t.Insert("c", "3", 2);
  EXPECT_EQ(t.size(), 2u);
  EXPECT_EQ(t.evicted(), 1u);
  EXPECT_EQ(t.Find("a", 3), nullptr);
  EXPECT_NE(t.Find("b", 3), nullptr);
  EXPECT_NE(t.Find("c", 3), nullptr);
}

class ApiKeyFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sb_api_key_XXXXXX";
    int fd = ::mkstemp(tmpl);
    ASSERT_GE(fd, 0);
    ::close(fd);
    path_ = tmpl;
  }
  void TearDown() override { ::unlink(path_.c_str()); }
  void Write(const std::string& text, mode_t mode) {
    std::ofstream(path_) << text;
    ::chmod(path_.c_str(), mode);
  }
  std::string path_;
};

TEST_F(ApiKeyFileTest, ReadsTheFirstLineOfAPrivateFile) {
  Write(kKey + "\n", 0600);
  Result<std::string> key = LoadApiKey(path_);
  ASSERT_TRUE(key.ok()) << key.status().message();
  EXPECT_EQ(*key, kKey);
}

TEST_F(ApiKeyFileTest, RefusesSharedShortOrEmptyFiles) {
  Write(kKey + "\n", 0640);
  EXPECT_FALSE(LoadApiKey(path_).ok());
  Write(kKey + "\n", 0604);
  EXPECT_FALSE(LoadApiKey(path_).ok());
  Write("short\n", 0600);
  EXPECT_FALSE(LoadApiKey(path_).ok());
  Write("", 0600);
  EXPECT_FALSE(LoadApiKey(path_).ok());
  Result<std::string> r = LoadApiKey(path_ + ".missing");
  EXPECT_FALSE(r.ok());
}

}  // namespace
}  // namespace sb::worker

namespace sb::worker {
namespace {

// Random JSON texts with the spellings a relay must keep: whitespace,
// escapes (quotes and brackets inside strings), number forms, nesting.
std::string RandomJson(std::mt19937& rng, int depth) {
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  auto space = [&] { return std::string(static_cast<size_t>(pick(3)), " \n\t"[pick(3)]); };
  switch (depth <= 0 ? pick(4) : pick(6)) {
    case 0:
      return std::vector<std::string>{"0", "-1.50", "1e3", "2E-2",
                                      "123456789012345678901"}[pick(5)];
    case 1:
      return std::vector<std::string>{R"("a\"]}")", R"("\u00e9\n")", R"("[{,:")", R"("")",
                                      "\"\xc3\xa9\""}[pick(5)];
    case 2:
      return std::vector<std::string>{"true", "false", "null"}[pick(3)];
    case 3:
      return "\"s" + std::to_string(pick(100)) + "\"";
    case 4: {
      std::string out = "[" + space();
      for (int i = 0, n = pick(4); i < n; ++i) {
        if (i) out += "," + space();
        out += RandomJson(rng, depth - 1) + space();
      }
      return out + "]";
    }
    default: {
      std::string out = "{" + space();
      for (int i = 0, n = pick(4); i < n; ++i) {
        if (i) out += "," + space();
        out +=
            "\"k" + std::to_string(i) + "\"" + space() + ":" + space() + RandomJson(rng, depth - 1);
      }
      return out + space() + "}";
    }
  }
}

TEST(HttpApiPropertyTest, ThePayloadIsAlwaysTheExactTextGivenWhereverItSits) {
  std::mt19937 rng(20261207);
  for (int i = 0; i < 2000; ++i) {
    const std::string payload = RandomJson(rng, 4);
    // The payload first, between or last: the scanner skips what precedes it.
    std::vector<std::string> members = {R"("topic" : "t")", R"("event":"e")",
                                        "\"payload\" :  " + payload};
    std::rotate(members.begin(), members.begin() + i % 3, members.end());
    std::string body = "{ ";
    for (size_t m = 0; m < members.size(); ++m) body += (m ? " ,\n" : "") + members[m];
    body += "}";
    ApiDecision d = Post("/api/publish", body);
    ASSERT_TRUE(d.request) << body << " -> " << d.body;
    ASSERT_EQ(d.request->payload, payload) << body;
  }
}

}  // namespace
}  // namespace sb::worker
