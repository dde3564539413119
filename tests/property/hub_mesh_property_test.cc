// What the hub accepts, the mesh carries: a property test of the promise in
// protocol/limits.h. Seeded random joins (topics empty to past
// limits::kMaxTopicBytes, unicode and control characters; presence metas of
// random depth, size and shape) go through the client's path — Phoenix text,
// phx::DecodeText, worker::Hub in a cluster — and whatever the hub accepts
// goes to a real broker::Router twice, as a shard would send it: live (a
// hello, then the subscribe and presence messages as the hub emitted them)
// and as a resync (a first hello built from Hub::ClusterState exactly as
// worker/cluster_session's SendHello builds it). The router must welcome
// the shard, leave nothing out and refuse nothing, and hold every topic and
// meta. A refused join must say one of the hub's documented reasons.

#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "broker/router.h"
#include "protocol/limits.h"
#include "protocol/mesh.h"
#include "protocol/mesh_testing.h"
#include "protocol/phoenix.h"
#include "worker/hub.h"

namespace sb {
namespace {

using worker::Action;
using Kind = worker::Action::Kind;

constexpr int kCasesPerSeed = 700;
constexpr uint32_t kSeeds[] = {1, 7, 42, 2026, 90210};

// The broker is up and the outbox open: every join is tracked for the mesh.
struct UpCluster : worker::ClusterView {
  bool up() const override { return true; }
  bool CanPublish(size_t) const override { return true; }
};

class Recorder : public broker::LinkSender {
 public:
  bool Send(const std::string& routing_id, const mesh::Message& msg) override {
    log.Record(msg, routing_id);
    return true;
  }
  bool SendPacked(const std::string& routing_id, std::string_view packed) override {
    log.RecordPacked(packed, routing_id);
    return true;
  }
  mesh_testing::SentLog log;
};

// Random client input. Every string it makes is valid UTF-8 (the gateway
// closes a text message that is not, 1007, before the hub sees it).
class Gen {
 public:
  explicit Gen(uint32_t seed) : rng_(seed) {}

  size_t Below(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }
  bool OneIn(size_t n) { return Below(n) == 0; }

  // One character: ASCII, a control character, a JSON metacharacter, or a
  // two-, three- or four-byte UTF-8 sequence.
  void AppendChar(std::string& s) {
    switch (Below(8)) {
      case 0:
        s.push_back(static_cast<char>(1 + Below(31)));  // control (NUL kept for case 1)
        return;
      case 1:
        s.push_back("\"\\/\b\f\n\r\t\0"[Below(9)]);
        return;
      case 2:
        s += "\xC3\xA9";  // é
        return;
      case 3:
        s += "\xE2\x82\xAC";  // €
        return;
      case 4:
        s += "\xF0\x9F\x98\x80";  // 😀
        return;
      default:
        s.push_back(static_cast<char>('!' + Below(94)));
        return;
    }
  }
  // About `bytes` bytes (a multi-byte character may pass it by up to 3).
  std::string Text(size_t bytes) {
    std::string s;
    while (s.size() < bytes) AppendChar(s);
    return s;
  }

  std::string Topic() {
    switch (Below(6)) {
      case 0:
        return "";
      case 1:  // around the limit
        return Text(limits::kMaxTopicBytes - 4 + Below(9));
      case 2:
        return Text(1 + Below(1100));
      default:
        return "room:" + Text(Below(24));
    }
  }

  // A JSON value nested exactly `depth` deep (0: a scalar), objects and
  // arrays mixed, with about `budget` bytes of strings at each level.
  void AppendValue(std::string& out, int depth, size_t budget) {
    if (depth == 0) {
      switch (Below(6)) {
        case 0:
          out += std::to_string(static_cast<int64_t>(Below(1u << 30)) - (1 << 29));
          return;
        case 1:
          out += "1.5e300";
          return;
        case 2:
          out += OneIn(2) ? "true" : "null";
          return;
        default:
          phx::AppendJsonString(out, Text(budget));
          return;
      }
    }
    bool array = OneIn(3);
    out.push_back(array ? '[' : '{');
    size_t fields = 1 + Below(3);
    // One member carries the depth; the others are shallower.
    size_t deep = Below(fields);
    for (size_t i = 0; i < fields; ++i) {
      if (i > 0) out.push_back(',');
      if (!array) {
        phx::AppendJsonString(out, Text(Below(8)) + std::to_string(i));
        out.push_back(':');
      }
      // Shallow siblings (at most 2 deep) keep the size linear in the depth.
      int d =
          i == deep ? depth - 1 : static_cast<int>(Below(static_cast<size_t>(std::min(depth, 3))));
      AppendValue(out, d, budget / fields);
    }
    out.push_back(array ? ']' : '}');
  }

  // A join payload: mostly {"presence":{"key":..,"meta":..}}, the meta an
  // object (or not) of random depth 0..70 and size up to past the hub's
  // presence bound; sometimes no presence, or a malformed one.
  std::string Payload() {
    switch (Below(10)) {
      case 0:
        return "{}";
      case 1:
        return "{\"presence\":" + std::string(OneIn(2) ? "[]" : "{\"key\":\"\"}") + "}";
      case 2:
        return "{\"presence\":{\"key\":\"k\"}}";
      default:
        break;
    }
    std::string out = "{\"presence\":{\"key\":";
    phx::AppendJsonString(out, OneIn(20) ? Text(1 + Below(5000)) : Text(1 + Below(12)));
    out += ",\"meta\":";
    int depth = static_cast<int>(Below(71));
    if (OneIn(4)) depth = limits::kMaxPresenceMetaDepth - 2 + static_cast<int>(Below(5));
    size_t budget = OneIn(6) ? Below(6000) : Below(300);
    if (depth == 0 || !OneIn(8)) {
      // An object at the top: the meta the hub may accept.
      out.push_back('{');
      phx::AppendJsonString(out, "m");
      out.push_back(':');
      // The object is level 1; its member carries the rest.
      if (depth <= 1) {
        AppendValue(out, 0, budget);
      } else {
        AppendValue(out, depth - 1, budget);
      }
      out.push_back('}');
    } else {
      AppendValue(out, depth, budget);  // may be an array at the top
    }
    out += "}}";
    return out;
  }

 private:
  std::mt19937 rng_;
};

// JSON as deep as anything under test (Boost.JSON's default stops at 32).
boost::json::value Parse(std::string_view text) {
  boost::json::parse_options options;
  options.max_depth = 256;
  return boost::json::parse(boost::json::string_view(text.data(), text.size()), {}, options);
}

// What the client's text becomes in the shard: decoded like the gateway
// decodes it, or nullopt when the gateway would close the socket instead.
std::optional<phx::Message> Decoded(const std::string& join_ref, const std::string& topic,
                                    const std::string& payload) {
  std::string text = "[";
  phx::AppendJsonString(text, join_ref);
  text += ",";
  phx::AppendJsonString(text, join_ref);
  text += ",";
  phx::AppendJsonString(text, topic);
  text += ",\"phx_join\",";
  text += payload;
  text += "]";
  phx::Message msg;
  phx::DecodeError error;
  if (!phx::DecodeText(text, &msg, &error)) return std::nullopt;
  return msg;
}

// The reply's "reason", or "" when the join was accepted.
std::string ReplyReason(const std::vector<Action>& actions, const std::string& topic) {
  for (const Action& a : actions) {
    if (a.kind != Kind::kSend) continue;
    boost::json::value v = Parse(a.data);
    const boost::json::array& m = v.as_array();
    if (m.at(3).as_string() != "phx_reply" || m.at(2).as_string() != topic) continue;
    const boost::json::object& p = m.at(4).as_object();
    if (p.at("status").as_string() == "ok") return "";
    return std::string(p.at("response").as_object().at("reason").as_string());
  }
  ADD_FAILURE() << "no phx_reply to the join";
  return "?";
}

std::string Token() { return std::string(mesh::kTokenHexDigits, 'a'); }

// A shard's first hello, as ClusterSession::SendHello builds it.
mesh::Hello HelloOf(const worker::Hub* hub, uint64_t instance) {
  mesh::Hello hello;
  hello.shard = "0";
  hello.instance = instance;
  hello.window = 1000;
  hello.token = Token();
  hello.heartbeat_ms = 200;
  hello.outbox = 1024;
  hello.acked = 0;
  if (hub) hub->ClusterState(&hello.topics, &hello.presence);
  return hello;
}

void Feed(broker::Router& router, const std::string& from, const mesh::Message& m) {
  std::vector<std::string> frames = mesh_testing::EncodeFrames(m);
  std::vector<std::string_view> views(frames.begin(), frames.end());
  router.OnMessage(from, views, 1000);
}

void FeedHello(broker::Router& router, const mesh::Hello& hello) {
  std::string body = mesh::EncodeHello(hello);
  Feed(router, "shard-0", {.type = mesh::Type::kHello, .body = body});
}

// The router took the shard whole: welcomed, nothing left out or refused,
// every topic subscribed and every meta held with its text.
void ExpectHolds(const broker::Router& router, const Recorder& rec,
                 const std::vector<std::string>& topics,
                 const std::vector<mesh::TopicState>& presence, const std::string& what) {
  EXPECT_EQ(rec.log.Of(mesh::Type::kWelcome, "shard-0").size(), 1u) << what;
  EXPECT_TRUE(rec.log.Of(mesh::Type::kReset, "shard-0").empty()) << what;
  const broker::Router::Counters& c = router.counters();
  for (uint64_t n : c.hello_dropped) EXPECT_EQ(n, 0u) << what;
  for (uint64_t n : c.refused) EXPECT_EQ(n, 0u) << what;
  broker::LinkId link = router.FindInstance(1);
  ASSERT_NE(link, broker::kNoLink) << what;
  for (const std::string& t : topics) {
    EXPECT_TRUE(router.interests().IsSubscribed(link, t))
        << what << ": topic of " << t.size() << " bytes";
  }
  size_t metas = 0;
  for (const mesh::TopicState& ts : presence) {
    boost::json::object state = Parse(router.presence().StateJson(ts.topic)).as_object();
    for (const mesh::PresenceEntry& e : ts.metas) {
      ++metas;
      const boost::json::value* key = state.if_contains(e.key);
      ASSERT_NE(key, nullptr) << what << ": key of " << e.key.size() << " bytes";
      bool found = false;
      for (const boost::json::value& m : key->at("metas").as_array()) {
        if (m.at("phx_ref").as_string() == e.phx_ref) {
          found = true;
          EXPECT_EQ(m, Parse(e.meta_json)) << what;
        }
      }
      EXPECT_TRUE(found) << what << ": meta " << e.phx_ref;
    }
  }
  EXPECT_EQ(router.presence().metas(), metas) << what;
}

broker::RouterOptions Options() {
  broker::RouterOptions o;
  o.epoch = 9;
  return o;
}

class HubMeshPropertyTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(HubMeshPropertyTest, WhatTheHubAcceptsTheRouterTakesWhole) {
  Gen gen(GetParam());
  const std::set<std::string> documented = {"invalid topic", "invalid presence",
                                            "presence too large"};
  size_t accepted = 0, refused = 0, closed = 0, tracked = 0;
  for (int i = 0; i < kCasesPerSeed; ++i) {
    UpCluster view;
    worker::Hub hub({.messages_per_second = 0}, "p0.", &view);
    Recorder live_rec;
    broker::Router live(Options(), &live_rec);
    FeedHello(live, HelloOf(nullptr, 1));  // a shard with nothing yet
    size_t joins = 1 + gen.Below(4);
    for (size_t j = 0; j < joins; ++j) {
      worker::ConnId conn = 1 + gen.Below(3);
      hub.Connect(conn, std::nullopt);
      std::string topic = gen.Topic();
      std::string payload = gen.Payload();
      std::optional<phx::Message> msg = Decoded(std::to_string(j + 1), topic, payload);
      if (!msg) {
        ++closed;  // the socket closes (1007); no join happens
        continue;
      }
      std::vector<Action> out;
      hub.Handle(conn, *msg, 1000, &out);
      std::string reason = ReplyReason(out, topic);
      std::string what = "seed " + std::to_string(GetParam()) + " case " + std::to_string(i) +
                         " join " + std::to_string(j) + " (topic " + std::to_string(topic.size()) +
                         " bytes, payload " + std::to_string(payload.size()) + " bytes)";
      if (!reason.empty()) {
        ++refused;
        EXPECT_TRUE(documented.contains(reason)) << what << ": " << reason;
        if (topic.empty() || topic.size() > limits::kMaxTopicBytes) {
          EXPECT_EQ(reason, "invalid topic") << what;
        }
        continue;
      }
      ++accepted;
      EXPECT_FALSE(topic.empty()) << what;
      EXPECT_LE(topic.size(), limits::kMaxTopicBytes) << what;
      // Live: the messages the shard's session sends for these actions.
      for (const Action& a : out) {
        if (a.kind == Kind::kSubscribe) {
          Feed(live, "shard-0", {.type = mesh::Type::kSubscribe, .topic = a.topic});
        } else if (a.kind == Kind::kPresence) {
          ++tracked;
          Feed(live, "shard-0", {.type = mesh::Type::kPresence, .topic = a.topic, .body = a.data});
        }
      }
      std::vector<std::string> topics;
      std::vector<mesh::TopicState> presence;
      hub.ClusterState(&topics, &presence);
      ExpectHolds(live, live_rec, topics, presence, what + ", live");
      if (::testing::Test::HasFailure()) return;
    }
    // Resync: all of it in a new broker's first hello.
    mesh::Hello hello = HelloOf(&hub, 1);
    Result<mesh::Hello> decoded = mesh::DecodeHello(mesh::EncodeHello(hello));
    ASSERT_TRUE(decoded.ok()) << decoded.status().message();
    for (uint64_t n : decoded.value().dropped) EXPECT_EQ(n, 0u);
    Recorder rec;
    broker::Router router(Options(), &rec);
    FeedHello(router, hello);
    ExpectHolds(router, rec, hello.topics, hello.presence,
                "seed " + std::to_string(GetParam()) + " case " + std::to_string(i) + ", hello");
    if (::testing::Test::HasFailure()) return;
  }
  // The generator reaches every side of the limits.
  EXPECT_GT(accepted, 100u);
  EXPECT_GT(tracked, 50u);
  EXPECT_GT(refused, 100u);
  EXPECT_GT(closed, 0u);
  std::printf("seed %u: %zu accepted (%zu with presence), %zu refused, %zu closed\n", GetParam(),
              accepted, tracked, refused, closed);
}

INSTANTIATE_TEST_SUITE_P(Seeds, HubMeshPropertyTest, ::testing::ValuesIn(kSeeds));

}  // namespace
}  // namespace sb
