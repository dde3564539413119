// Router: sessions, routing once per shard, credit, acks, presence, expiry —
// driven with encoded mesh frames and a recording sender, no sockets.

#include "broker/router.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <deque>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "broker/topic_owner.h"
#include "protocol/mesh_testing.h"
#include "protocol/testing/json.h"

namespace sb::broker {
namespace {

using mesh_testing::SentMessage;
using test::Json;

// Records what the router sends, whichever way (protocol/mesh_testing).
// A routing id in `gone` is a closed connection: nothing reaches it.
class Recorder : public LinkSender {
 public:
  bool Send(const std::string& routing_id, const mesh::Message& msg) override {
    if (gone.contains(routing_id)) return false;
    log.Record(msg, routing_id);
    return true;
  }
  bool SendPacked(const std::string& routing_id, std::string_view packed) override {
    if (gone.contains(routing_id)) return false;
    log.RecordPacked(packed, routing_id);
    packed_.emplace_back(routing_id, std::string(packed));
    return true;
  }
  // Every field of what `to` was sent packed of `type` (a kBatch's messages
  // one by one), oldest first; views into this recorder.
  std::vector<mesh::Message> Packed(const std::string& to, mesh::Type type) const {
    std::vector<mesh::Message> out;
    auto keep = [&](std::span<const std::string_view> frames) {
      mesh::Message m;
      if (!mesh::Decode(frames, &m).ok()) {
        ADD_FAILURE() << "a message that does not decode was sent";
      } else if (m.type == mesh::Type::kBatch) {
        (void)mesh::ForEachInBatch(m.body, [&](std::span<const std::string_view> inner) {
          mesh::Message one;
          if (mesh::Decode(inner, &one).ok() && one.type == type) out.push_back(one);
        });
      } else if (m.type == type) {
        out.push_back(m);
      }
    };
    for (const auto& [rid, packed] : packed_) {
      if (rid != to) continue;
      std::vector<std::string_view> frames;
      if (mesh::Unpack(packed, &frames).ok()) keep(frames);
    }
    return out;
  }
  std::set<std::string> gone;
  // What `to` received of `type` since the log was last cleared.
  std::vector<SentMessage> Take(const std::string& to, mesh::Type type) const {
    return log.Of(type, to);
  }
  mesh_testing::SentLog log;

 private:
  std::deque<std::pair<std::string, std::string>> packed_;  // a deque: views stay valid
};

class RouterTest : public ::testing::Test {
 protected:
  explicit RouterTest(QueuePolicy queue = {}, int64_t settle_ms = 0,
                      PeerOutboxOptions peer_outbox = {}, std::string node = "",
                      int64_t presence_interval_ms = 0)
      : router_(Options(queue, settle_ms, peer_outbox, std::move(node), presence_interval_ms),
                &rec_) {}

  static RouterOptions Options(QueuePolicy queue, int64_t settle_ms,
                               PeerOutboxOptions peer_outbox = {}, std::string node = "",
                               int64_t presence_interval_ms = 0) {
    RouterOptions o;
    o.presence_interval_ms = presence_interval_ms;
    o.node = std::move(node);
    o.queue = queue;
    o.peer_outbox = peer_outbox;
    // A window of settle_ms as long as no shard announces a longer heartbeat.
    if (settle_ms > 0) o.settle = {.heartbeat_ms = settle_ms / 2, .max_ms = kMaxSettleMs};
    o.liveness = {.interval_ms = 100, .misses = 3};
    o.epoch = 77;
    o.history.rules = history::Rules::Parse({"room:*=100/1h", "short:*=100/1s"}).value();
    o.history.new_stream = [n = uint64_t{499}]() mutable { return ++n; };
    return o;
  }

  void Feed(const std::string& from, const mesh::Message& m) {
    std::vector<std::string> frames = mesh_testing::EncodeFrames(m);
    std::vector<std::string_view> views(frames.begin(), frames.end());
    router_.OnMessage(from, views, now_us_);
  }
  // The token a test shard of `instance` proves itself with.
  static std::string TokenOf(uint64_t instance) {
    char buf[mesh::kTokenHexDigits + 1];
    std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(instance),
                  ~static_cast<unsigned long long>(instance));
    return buf;
  }
  void Hello(const std::string& from, uint64_t instance, std::vector<std::string> topics,
             uint32_t window = 100, std::vector<mesh::TopicState> presence = {}) {
    SayHello(from, {.shard = from,
                    .instance = instance,
                    .window = window,
                    .token = TokenOf(instance),
                    .topics = std::move(topics),
                    .presence = std::move(presence)});
  }
  void SayHello(const std::string& from, const mesh::Hello& h) {
    std::string body = mesh::EncodeHello(h);
    Feed(from, {.type = mesh::Type::kHello, .body = body});
  }
  void Publish(const std::string& from, uint64_t seq, const std::string& topic,
               const std::string& body = "[null,null,\"t\",\"e\",{}]") {
    Feed(from, {.type = mesh::Type::kPublish, .seq = seq, .topic = topic, .body = body});
  }
  void KeyedPublish(const std::string& from, uint64_t seq, const std::string& topic,
                    const std::string& key,
                    const std::string& body = "[null,null,\"t\",\"e\",{}]") {
    Feed(from, {.type = mesh::Type::kPublish,
                .seq = seq,
                .flags = mesh::kFlagKeyed,
                .topic = topic,
                .body = body,
                .key = key});
  }
  void SequencedPublish(const std::string& from, uint64_t seq, const std::string& topic,
                        const std::string& body = "[null,null,\"t\",\"e\",{}]") {
    Feed(from, {.type = mesh::Type::kPublish,
                .seq = seq,
                .flags = mesh::kFlagSequenced,
                .topic = topic,
                .body = body});
  }
  void Fetch(const std::string& from, uint64_t id, const std::string& topic, uint64_t after,
             uint32_t limit) {
    Feed(from, {.type = mesh::Type::kFetch, .n = limit, .topic = topic, .offset = after, .id = id});
  }
  void Restate(const std::string& from, const std::string& topic, uint64_t stream, uint64_t offset,
               uint64_t origin, uint64_t seq, const std::string& body = "old") {
    Feed(from, {.type = mesh::Type::kRestate,
                .seq = seq,
                .origin = origin,
                .flags = mesh::kFlagSequenced,
                .topic = topic,
                .body = body,
                .offset = offset,
                .stream = stream});
  }
  void Credit(const std::string& from, uint32_t n) {
    Feed(from, {.type = mesh::Type::kCredit, .n = n});
  }
  void Track(const std::string& from, const std::string& topic, const std::string& key,
             const std::string& ref, bool leave = false) {
    mesh::PresenceEntry e{key, ref, "{\"phx_ref\":\"" + ref + "\"}"};
    mesh::PresenceChange c;
    (leave ? c.leaves : c.joins).push_back(e);
    std::string body = mesh::EncodePresenceChange(c);
    Feed(from, {.type = mesh::Type::kPresence, .topic = topic, .body = body});
  }
  void Flush() { router_.Flush(now_us_); }
  // Shards a and b on room:1, b's window of 1 taken by its snapshot, and
  // 100 publishes of a queued for b: b is far behind.
  void PutBBehind() {
    Hello("a", 1, {"room:1"});
    Hello("b", 2, {"room:1"}, /*window=*/1);
    Flush();
    rec_.log.sent.clear();
    for (uint64_t seq = 1; seq <= 100; ++seq) Publish("a", seq, "room:1");
  }
  // Moves the clock on by `us` in ticks of 50 ms, `alive` heartbeating
  // (liveness expires a link after 300 ms of silence).
  void Advance(int64_t us, const std::vector<std::string>& alive) {
    while (us > 0) {
      const int64_t step = std::min<int64_t>(us, 50'000);
      now_us_ += step;
      us -= step;
      for (const std::string& from : alive) Feed(from, {.type = mesh::Type::kHeartbeat});
      router_.OnTick(now_us_);
    }
  }

  Recorder rec_;
  Router router_;
  int64_t now_us_ = 1'000'000;
};

TEST(RouterOptionsTest, AQueueThatCannotHoldTheLargestMeshMessageIsRefused) {
  RouterOptions o;
  EXPECT_TRUE(ValidateRouterOptions(o).ok()) << "the defaults hold one";
  o.queue.max_bytes = mesh::kMaxPackedBytes - 1;
  EXPECT_EQ(ValidateRouterOptions(o).code(), Status::Code::kInvalidConfig);
  o.queue.max_bytes = mesh::kMaxPackedBytes;
  EXPECT_TRUE(ValidateRouterOptions(o).ok());
  o.queue.max_messages = 0;
  EXPECT_EQ(ValidateRouterOptions(o).code(), Status::Code::kInvalidConfig);
}

TEST_F(RouterTest, HelloIsWelcomedWithTheEpochAndASnapshotPerTopic) {
  Hello("a", 1, {"room:1", "room:2"});
  Flush();
  auto welcome = rec_.Take("a", mesh::Type::kWelcome);
  ASSERT_EQ(welcome.size(), 1u);
  EXPECT_EQ(welcome[0].epoch, 77u);
  auto snaps = rec_.Take("a", mesh::Type::kSnapshot);
  ASSERT_EQ(snaps.size(), 2u);
  EXPECT_EQ(snaps[0].body, "{}");
  EXPECT_EQ(router_.links(), 1u);
  EXPECT_EQ(router_.interests().subscriptions(), 2u);
}

TEST_F(RouterTest, AHelloWithBadEntriesIsWelcomedWithoutThemAndTheyAreCounted) {
  const std::string deep = "{\"d\":" + std::string(mesh::kMaxMetaDepth, '[') +
                           std::string(mesh::kMaxMetaDepth, ']') + "}";
  Hello("a", 1, {"room:1", "", std::string(mesh::kMaxTopicBytes + 1, 't')}, 100,
        {{"room:1", {{"alice", "r1", deep}, {"bob", "r2", "{\"phx_ref\":\"r2\"}"}}}});
  Flush();
  EXPECT_EQ(rec_.Take("a", mesh::Type::kWelcome).size(), 1u);
  EXPECT_EQ(router_.links(), 1u);
  EXPECT_EQ(router_.interests().subscriptions(), 1u);
  EXPECT_EQ(router_.presence().metas(), 1u) << "bob's meta, not alice's";
  const auto& dropped = router_.counters().hello_dropped;
  EXPECT_EQ(dropped[static_cast<size_t>(mesh::HelloDrop::kTopic)], 2u);
  EXPECT_EQ(dropped[static_cast<size_t>(mesh::HelloDrop::kMeta)], 1u);
  Publish("a", 1, "room:1");
  EXPECT_TRUE(rec_.Take("a", mesh::Type::kReset).empty()) << "a session, not a stranger";
}

TEST_F(RouterTest, AStrangerIsResetOncePerInterval) {
  Publish("x", 1, "room:1");
  Publish("x", 2, "room:1");
  EXPECT_EQ(rec_.Take("x", mesh::Type::kReset).size(), 1u);
  now_us_ += 200'000;
  Publish("x", 3, "room:1");
  EXPECT_EQ(rec_.Take("x", mesh::Type::kReset).size(), 2u);
  EXPECT_EQ(router_.counters().refused[static_cast<size_t>(Refused::kStranger)], 3u);
  EXPECT_EQ(router_.links(), 0u);
}

TEST_F(RouterTest, ABroadcastReachesEachOtherSubscribedShardOnceAndIsAckedWhenConsumed) {
  Hello("a", 1, {"room:1"});
  Hello("b", 2, {"room:1"});
  Hello("c", 3, {"room:1"});
  Hello("d", 4, {"room:other"});
  Flush();
  rec_.log.sent.clear();
  Publish("a", 1, "room:1", "payload");
  Flush();
  auto to_b = rec_.Take("b", mesh::Type::kDeliver);
  ASSERT_EQ(to_b.size(), 1u);
  EXPECT_EQ(to_b[0].origin, 1u);
  EXPECT_EQ(to_b[0].seq, 1u);
  EXPECT_EQ(to_b[0].body, "payload");
  EXPECT_EQ(rec_.Take("c", mesh::Type::kDeliver).size(), 1u);
  EXPECT_TRUE(rec_.Take("a", mesh::Type::kDeliver).empty());
  EXPECT_TRUE(rec_.Take("d", mesh::Type::kDeliver).empty());
  // Not done until both recipients consumed it.
  EXPECT_TRUE(rec_.Take("a", mesh::Type::kAck).empty());
  // Snapshots were credited on the way; the ack waits for the delivery.
  Credit("b", 2);
  Flush();
  EXPECT_TRUE(rec_.Take("a", mesh::Type::kAck).empty());
  Credit("c", 2);
  Flush();
  auto acks = rec_.Take("a", mesh::Type::kAck);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0].seq, 1u);
}

TEST_F(RouterTest, APublishStampIsCopiedToItsDeliveries) {
  Hello("a", 1, {"room:1"});
  Hello("b", 2, {"room:1"});
  Flush();
  rec_.log.sent.clear();
  // The origin's read time travels to the receiving shard's latency
  // histogram; a publish without one is delivered without one.
  const std::string body = "[null,null,\"room:1\",\"e\",{}]";
  Feed("a", {.type = mesh::Type::kPublish,
             .seq = 1,
             .flags = mesh::kFlagStamped,
             .stamp = 1'800'000'000'000'000'001,
             .topic = "room:1",
             .body = body});
  Publish("a", 2, "room:1");
  Flush();
  auto to_b = rec_.Take("b", mesh::Type::kDeliver);
  ASSERT_EQ(to_b.size(), 2u);
  EXPECT_EQ(to_b[0].flags, mesh::kFlagStamped);
  EXPECT_EQ(to_b[0].stamp, 1'800'000'000'000'000'001u);
  EXPECT_EQ(to_b[1].flags, 0);
  EXPECT_EQ(to_b[1].stamp, 0u);
}

TEST_F(RouterTest, APublishNobodyWantsIsAckedAtOnce) {
  Hello("a", 1, {"room:1"});
  Publish("a", 5, "room:1");
  Flush();
  auto acks = rec_.Take("a", mesh::Type::kAck);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0].seq, 5u);
}

TEST_F(RouterTest, NeverMoreThanTheCreditAndTheRestWaitsInTheQueue) {
  Hello("a", 1, {});
  Hello("b", 2, {"room:1"}, /*window=*/3);  // one credit goes to the snapshot
  Flush();
  for (uint64_t seq = 1; seq <= 5; ++seq) Publish("a", seq, "room:1");
  Flush();
  EXPECT_EQ(rec_.Take("b", mesh::Type::kDeliver).size(), 2u);
  EXPECT_EQ(rec_.log.batches, 1) << "what credit allowed this turn, in one message";
  size_t depth = 0;
  router_.ForEachLink([&](const Router::LinkView& v) {
    if (v.shard == "b") depth = v.queue.depth_messages();
  });
  EXPECT_EQ(depth, 3u);
  rec_.log.sent.clear();
  Credit("b", 3);  // consumed the snapshot and two deliveries
  Flush();
  EXPECT_EQ(rec_.Take("b", mesh::Type::kDeliver).size(), 3u);
  auto acks = rec_.Take("a", mesh::Type::kAck);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0].seq, 2u);
}

TEST_F(RouterTest, AResentPublishIsNotRoutedTwice) {
  Hello("a", 1, {});
  Hello("b", 2, {"room:1"});
  Publish("a", 1, "room:1");
  Publish("a", 1, "room:1");
  Flush();
  EXPECT_EQ(rec_.Take("b", mesh::Type::kDeliver).size(), 1u);
  EXPECT_EQ(router_.counters().refused[static_cast<size_t>(Refused::kDuplicate)], 1u);
}

// --- Idempotency keys ---------------------------------------------------------

TEST_F(RouterTest, AKeyedPublishGoesToItsOriginTooAndItsRepeatsToNobody) {
  Hello("a", 1, {"room:1"});
  Hello("b", 2, {"room:1"});
  Flush();
  rec_.log.sent.clear();
  KeyedPublish("a", 1, "room:1", "k", "first");
  Flush();
  // Every subscribed shard, the origin included, without the key.
  for (const char* to : {"a", "b"}) {
    auto d = rec_.Take(to, mesh::Type::kDeliver);
    ASSERT_EQ(d.size(), 1u) << to;
    EXPECT_EQ(d[0].origin, 1u);
    EXPECT_EQ(d[0].seq, 1u);
    EXPECT_EQ(d[0].body, "first");
    EXPECT_EQ(d[0].flags, 0) << "the key flag is not passed on";
  }
  Credit("a", 2);  // the snapshot and the delivery
  EXPECT_TRUE(rec_.Take("a", mesh::Type::kAck).empty()) << "b has not consumed it";
  Credit("b", 2);
  Flush();
  ASSERT_EQ(rec_.Take("a", mesh::Type::kAck).size(), 1u);
  rec_.log.sent.clear();
  // The same key and topic from the other shard, and again from the first:
  // routed to nobody, acked at once, counted.
  KeyedPublish("b", 1, "room:1", "k", "again");
  KeyedPublish("a", 2, "room:1", "k", "again");
  Flush();
  EXPECT_TRUE(rec_.Take("a", mesh::Type::kDeliver).empty());
  EXPECT_TRUE(rec_.Take("b", mesh::Type::kDeliver).empty());
  auto ack_a = rec_.Take("a", mesh::Type::kAck);
  auto ack_b = rec_.Take("b", mesh::Type::kAck);
  ASSERT_EQ(ack_a.size(), 1u);
  EXPECT_EQ(ack_a[0].seq, 2u);
  ASSERT_EQ(ack_b.size(), 1u);
  EXPECT_EQ(ack_b[0].seq, 1u);
  EXPECT_EQ(router_.counters().idempotent_repeats, 2u);
  EXPECT_EQ(router_.counters().publishes, 1u);
  // Another key, or the same key on another topic, is routed.
  KeyedPublish("b", 2, "room:1", "k2");
  KeyedPublish("b", 3, "room:2", "k");
  Flush();
  EXPECT_EQ(rec_.Take("a", mesh::Type::kDeliver).size(), 1u) << "a is not on room:2";
  EXPECT_EQ(router_.counters().publishes, 3u);
}

TEST_F(RouterTest, AKeyIsClaimedForFiveMinutes) {
  Hello("a", 1, {});
  Hello("b", 2, {"room:1"});
  KeyedPublish("a", 1, "room:1", "k");
  now_us_ += (mesh::kKeyTtlMs - 1) * 1000;
  Feed("a", {.type = mesh::Type::kHeartbeat});
  KeyedPublish("a", 2, "room:1", "k");
  Flush();
  EXPECT_EQ(rec_.Take("b", mesh::Type::kDeliver).size(), 1u);
  now_us_ += 1000;
  KeyedPublish("a", 3, "room:1", "k");
  Flush();
  EXPECT_EQ(rec_.Take("b", mesh::Type::kDeliver).size(), 2u) << "expired: a new publish";
  EXPECT_EQ(router_.counters().idempotent_repeats, 1u);
}

TEST_F(RouterTest, AResentKeyedPublishIsNotARepeat) {
  Hello("a", 1, {"room:1"});
  Hello("b", 2, {"room:1"});
  KeyedPublish("a", 1, "room:1", "k");
  KeyedPublish("a", 1, "room:1", "k");  // re-sent on the same broker: a duplicate seq
  Flush();
  EXPECT_EQ(rec_.Take("b", mesh::Type::kDeliver).size(), 1u);
  EXPECT_EQ(router_.counters().refused[static_cast<size_t>(Refused::kDuplicate)], 1u);
  EXPECT_EQ(router_.counters().idempotent_repeats, 0u);
}

TEST_F(RouterTest, ANewBrokerLearnsTheKeysFromTheHellos) {
  // A new broker: shard a accepted "k" on room:1 as its seq 4 a second ago
  // (the old broker routed it, or not: a's publish is unacked).
  SayHello("a", {.shard = "a",
                 .instance = 1,
                 .window = 100,
                 .token = TokenOf(1),
                 .topics = {"room:1"},
                 .idempotency = {{"k", "room:1", 4, 1000}, {"acked", "room:1", 2, 2000}}});
  Hello("b", 2, {"room:1"});
  EXPECT_EQ(router_.keys().size(), 2u);
  // b's repeat of either key is not routed...
  KeyedPublish("b", 1, "room:1", "k");
  KeyedPublish("b", 2, "room:1", "acked");
  Flush();
  EXPECT_TRUE(rec_.Take("a", mesh::Type::kDeliver).empty());
  EXPECT_EQ(router_.counters().idempotent_repeats, 2u);
  // ...but a's re-sent publish 4 itself is: the old broker may never have
  // routed it, and receivers drop it by origin and seq if it had.
  KeyedPublish("a", 4, "room:1", "k");
  Flush();
  EXPECT_EQ(rec_.Take("b", mesh::Type::kDeliver).size(), 1u);
  EXPECT_EQ(rec_.Take("a", mesh::Type::kDeliver).size(), 1u);
  EXPECT_EQ(router_.counters().idempotent_repeats, 2u);
  // The claims age from when the shard accepted them, not from the hello.
  now_us_ += (mesh::kKeyTtlMs - 2000) * 1000;
  KeyedPublish("b", 3, "room:1", "acked");
  Flush();
  EXPECT_EQ(rec_.Take("a", mesh::Type::kDeliver).size(), 2u);
}

TEST_F(RouterTest, PresenceIsDiffedToOthersAndSnapshottedForNewSubscribers) {
  Hello("a", 1, {"room:1"});
  Hello("b", 2, {"room:1"});
  Flush();
  rec_.log.sent.clear();
  Track("a", "room:1", "alice", "r1");
  Flush();
  auto diffs = rec_.Take("b", mesh::Type::kDiff);
  ASSERT_EQ(diffs.size(), 1u);
  EXPECT_NE(diffs[0].body.find("\"alice\""), std::string::npos);
  EXPECT_NE(diffs[0].body.find("\"joins\""), std::string::npos);
  EXPECT_TRUE(rec_.Take("a", mesh::Type::kDiff).empty());

  Hello("c", 3, {});
  Feed("c", {.type = mesh::Type::kSubscribe, .topic = "room:1"});
  Flush();
  auto snaps = rec_.Take("c", mesh::Type::kSnapshot);
  ASSERT_EQ(snaps.size(), 1u);
  EXPECT_NE(snaps[0].body.find("\"r1\""), std::string::npos);
}

TEST_F(RouterTest, AShardThatKeepsUpGetsATurnsChangesOfATopicInOneDiff) {
  Hello("a", 1, {"room:1", "room:2"});
  Hello("b", 2, {"room:1", "room:2"});
  Flush();
  rec_.log.sent.clear();
  Track("a", "room:1", "alice", "r1");
  Track("a", "room:1", "bob", "r2");
  Track("a", "room:2", "carol", "r3");
  Flush();
  auto diffs = rec_.Take("b", mesh::Type::kDiff);
  ASSERT_EQ(diffs.size(), 2u);
  EXPECT_EQ(diffs[0].topic, "room:1");
  EXPECT_EQ(Json(diffs[0].body).at("joins").as_object().size(), 2u);
  EXPECT_EQ(diffs[1].topic, "room:2");
  EXPECT_EQ(router_.counters().presence_changes, 3u);
  EXPECT_EQ(router_.counters().diffs, 2u);
}

TEST_F(RouterTest, AShardBehindIsOwedMergedPresenceNotEveryChange) {
  Hello("a", 1, {"room:1"});
  Hello("b", 2, {"room:1"}, /*window=*/1);  // the snapshot takes the window
  Flush();
  rec_.log.sent.clear();
  // 100 publishes put b far behind; meanwhile 50 join, and 10 of them leave.
  for (uint64_t seq = 1; seq <= 100; ++seq) Publish("a", seq, "room:1");
  for (int i = 0; i < 50; ++i) {
    Track("a", "room:1", "u" + std::to_string(i), "r" + std::to_string(i));
    Flush();
  }
  for (int i = 0; i < 10; ++i) {
    Track("a", "room:1", "u" + std::to_string(i), "r" + std::to_string(i), /*leave=*/true);
    Flush();
  }
  EXPECT_EQ(router_.counters().diffs, 0u) << "nothing queued while b is behind";
  const auto owed = [&] {
    size_t metas = 0;
    router_.ForEachLink([&](const Router::LinkView& v) {
      if (v.shard == "b") metas = v.presence.metas();
    });
    return metas;
  };
  EXPECT_EQ(owed(), 40u) << "a join that left before it was sent is owed nothing";
  // b catches up: one diff with the 40 that stayed, after the publishes.
  Credit("b", 101);
  Flush();
  EXPECT_EQ(rec_.Take("b", mesh::Type::kDeliver).size(), 100u);
  Credit("b", 100);
  Flush();
  auto diffs = rec_.Take("b", mesh::Type::kDiff);
  ASSERT_EQ(diffs.size(), 1u);
  const auto diff = Json(diffs[0].body);
  EXPECT_EQ(diff.at("joins").as_object().size(), 40u);
  EXPECT_TRUE(diff.at("leaves").as_object().empty());
  EXPECT_FALSE(diff.at("joins").as_object().contains("u0"));
  EXPECT_TRUE(diff.at("joins").as_object().contains("u49"));
  EXPECT_EQ(owed(), 0u);
  EXPECT_EQ(router_.counters().presence_changes, 60u);
  EXPECT_EQ(router_.counters().dropped[static_cast<size_t>(DropReason::kShed)], 0u);
}

TEST_F(RouterTest, AShardThatStaysBehindStillGetsPresenceOncePresenceWaitHasPassed) {
  PutBBehind();
  Track("a", "room:1", "alice", "r1");
  Flush();
  now_us_ += 99'000;
  Flush();
  EXPECT_EQ(router_.counters().diffs, 0u);
  now_us_ += 1'000;  // presence_wait_ms (100) since the change
  Flush();
  EXPECT_EQ(router_.counters().diffs, 1u) << "queued, behind the publishes, under credit";
  Credit("b", 102);
  Flush();
  auto diffs = rec_.Take("b", mesh::Type::kDiff);
  ASSERT_EQ(diffs.size(), 1u);
  EXPECT_NE(diffs[0].body.find("alice"), std::string::npos);
}

TEST_F(RouterTest, ASnapshotTakesThePlaceOfWhatWasOwedOnItsTopic) {
  PutBBehind();
  Track("a", "room:1", "alice", "r1");
  Flush();
  // b leaves the topic and comes back: it is sent a snapshot, which holds
  // alice; the change owed before it is not sent after it.
  Feed("b", {.type = mesh::Type::kUnsubscribe, .topic = "room:1"});
  Feed("b", {.type = mesh::Type::kSubscribe, .topic = "room:1"});
  Flush();
  Credit("b", 300);
  Flush();
  Credit("b", 300);
  Flush();
  auto snaps = rec_.Take("b", mesh::Type::kSnapshot);
  ASSERT_EQ(snaps.size(), 1u);  // the new subscription's
  EXPECT_NE(snaps[0].body.find("alice"), std::string::npos);
  EXPECT_TRUE(rec_.Take("b", mesh::Type::kDiff).empty());
}

TEST_F(RouterTest, AHelloAgainOnTheSameConnectionIsSentSnapshotsOnlyOfTopicsNewToTheBroker) {
  Hello("a", 1, {"room:1", "room:2"});
  Hello("b", 2, {"room:1", "room:2"});
  Flush();
  rec_.log.sent.clear();
  // b lost track of a busy broker and says hello again, now with a topic
  // whose subscribe was lost: everything it was sent came, in order.
  Hello("b", 2, {"room:1", "room:2", "room:3"});
  Flush();
  EXPECT_EQ(rec_.Take("b", mesh::Type::kWelcome).size(), 1u);
  auto snaps = rec_.Take("b", mesh::Type::kSnapshot);
  ASSERT_EQ(snaps.size(), 1u);
  EXPECT_EQ(snaps[0].topic, "room:3");
  // From a new connection (a re-bind) every topic's, as from a new shard.
  SayHello("b2", {.shard = "b",
                  .instance = 2,
                  .window = 100,
                  .token = TokenOf(2),
                  .topics = {"room:1", "room:2", "room:3"}});
  Flush();
  EXPECT_EQ(rec_.Take("b2", mesh::Type::kSnapshot).size(), 3u);
}

class RouterPresenceIntervalTest : public RouterTest {
 protected:
  RouterPresenceIntervalTest()
      : RouterTest(QueuePolicy{}, 0, PeerOutboxOptions{}, "", /*presence_interval_ms=*/500) {}
};

TEST_F(RouterPresenceIntervalTest, AShardIsSentPresenceAtMostOncePerIntervalMerged) {
  Hello("a", 1, {"room:1"});
  Hello("b", 2, {"room:1"});
  Flush();
  rec_.log.sent.clear();
  Track("a", "room:1", "k1", "r1");
  Flush();
  EXPECT_EQ(rec_.Take("b", mesh::Type::kDiff).size(), 1u) << "the first goes at once";
  rec_.log.sent.clear();
  for (int i = 2; i <= 4; ++i) {
    now_us_ += 100'000;
    Track("a", "room:1", "k" + std::to_string(i), "r" + std::to_string(i));
    Flush();
  }
  EXPECT_TRUE(rec_.Take("b", mesh::Type::kDiff).empty()) << "within the interval: held, merged";
  now_us_ += 200'000;  // 500 ms since the first
  Flush();
  auto diffs = rec_.Take("b", mesh::Type::kDiff);
  ASSERT_EQ(diffs.size(), 1u);
  EXPECT_EQ(Json(diffs[0].body).at("joins").as_object().size(), 3u);
}

TEST_F(RouterTest, AStalledBrokerDoesNotExpireTheShardsForItsOwnSilence) {
  Hello("a", 1, {"room:1"});
  Hello("b", 2, {"room:1"});
  Flush();
  router_.OnTick(now_us_);
  // The broker did not run for 2 s (liveness: 3 × 100 ms); the shards'
  // heartbeats of that time wait unread.
  now_us_ += 2'000'000;
  router_.OnTick(now_us_);
  EXPECT_EQ(router_.links(), 2u);
  EXPECT_EQ(router_.counters().expired, 0u);
  // Silence after it still counts: b, which says nothing more, goes.
  Advance(500'000, {"a"});
  EXPECT_EQ(router_.links(), 1u);
  EXPECT_EQ(router_.counters().expired, 1u);
}

TEST_F(RouterTest, ASilentShardIsDroppedWithOneLeaveDiffPerTopic) {
  Hello("a", 1, {"room:1", "room:2"});
  Hello("b", 2, {"room:1", "room:2"}, 100,
        {{"room:1", {{"u1", "b1", "{\"phx_ref\":\"b1\"}"}, {"u2", "b2", "{\"phx_ref\":\"b2\"}"}}},
         {"room:2", {{"u1", "b3", "{\"phx_ref\":\"b3\"}"}}}});
  Flush();
  rec_.log.sent.clear();
  Advance(500'000, {"a"});
  Flush();
  EXPECT_EQ(router_.links(), 1u);
  EXPECT_EQ(router_.counters().expired, 1u);
  auto diffs = rec_.Take("a", mesh::Type::kDiff);
  ASSERT_EQ(diffs.size(), 2u);
  for (const SentMessage& d : diffs) {
    EXPECT_NE(d.body.find("\"leaves\""), std::string::npos);
    if (d.topic == "room:1") {
      EXPECT_NE(d.body.find("b1"), std::string::npos);
      EXPECT_NE(d.body.find("b2"), std::string::npos);
    }
  }
  EXPECT_FALSE(rec_.Take("a", mesh::Type::kHeartbeat).empty());
  EXPECT_EQ(router_.presence().metas(), 0u);
}

TEST_F(RouterTest, TheSameInstanceReconnectingKeepsItsLink) {
  Hello("a", 1, {"room:1"});
  LinkId id = router_.FindInstance(1);
  Hello("a2", 1, {"room:1", "room:2"});
  EXPECT_EQ(router_.FindInstance(1), id);
  EXPECT_EQ(router_.links(), 1u);
  EXPECT_EQ(router_.counters().rebinds, 1u);
  EXPECT_EQ(router_.interests().subscriptions(), 2u);
  EXPECT_EQ(rec_.Take("a2", mesh::Type::kWelcome).size(), 1u);
}

// Shards a and b on room:1, b's snapshot consumed, and b's process coming
// back on a new connection (b2) with a's publishes 1 and 2 still undone.
class RouterReconnectTest : public RouterTest {
 protected:
  RouterReconnectTest() {
    Hello("a", 1, {"room:1"});
    Hello("b", 2, {"room:1"});
    Flush();
    Credit("b", 1);  // its snapshot
  }
  void PublishTwo() {
    Publish("a", 1, "room:1", "one");
    Publish("a", 2, "room:1", "two");
    Flush();
  }
  // b's process says hello again as b2: the seqs delivered on b2.
  std::vector<uint64_t> ReconnectB() {
    rec_.log.sent.clear();
    Hello("b2", 2, {"room:1"});
    Flush();
    return SeqsOf(rec_.Take("b2", mesh::Type::kDeliver));
  }
  // b2 consumes the two and its hello's snapshot: the seqs a is acked.
  std::vector<uint64_t> ConsumeOnB2() {
    Credit("b2", 3);
    Flush();
    return SeqsOf(rec_.Take("a", mesh::Type::kAck));
  }
  static std::vector<uint64_t> SeqsOf(const std::vector<SentMessage>& sent) {
    std::vector<uint64_t> seqs;
    for (const SentMessage& m : sent) seqs.push_back(m.seq);
    return seqs;
  }
};

TEST_F(RouterReconnectTest, ARebindSendsWhatWasInFlightOnTheOldConnectionAgain) {
  PublishTwo();
  ASSERT_EQ(rec_.Take("b", mesh::Type::kDeliver).size(), 2u);
  // b's connection closes with both in flight; the same process reconnects.
  EXPECT_EQ(ReconnectB(), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(router_.counters().resent, 2u);
  EXPECT_TRUE(rec_.Take("a", mesh::Type::kAck).empty()) << "not consumed yet";
  EXPECT_EQ(ConsumeOnB2(), std::vector<uint64_t>{2});
}

TEST_F(RouterReconnectTest, ADeliveryThatCouldNotBeSentStaysQueuedNotInFlight) {
  rec_.gone.insert("b");
  PublishTwo();
  EXPECT_EQ(router_.counters().send_failed, 2u);
  EXPECT_EQ(router_.counters().delivered, 0u);
  router_.ForEachLink([](const Router::LinkView& v) {
    if (v.instance != 2) return;
    EXPECT_EQ(v.in_flight, 0u);
    EXPECT_EQ(v.queue.depth_messages(), 2u);
  });
  Flush();  // no credit left for them: not tried again
  EXPECT_EQ(router_.counters().send_failed, 2u);
  EXPECT_TRUE(rec_.Take("a", mesh::Type::kAck).empty());
  // The same process reconnects: they go, in order, on the new connection.
  EXPECT_EQ(ReconnectB(), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(ConsumeOnB2(), std::vector<uint64_t>{2});
}

TEST_F(RouterTest, WhatAnExpiredLinkHeldIsCountedAsExpired) {
  Hello("a", 1, {"room:1"});
  Hello("b", 2, {"room:1"}, /*window=*/2);
  Flush();
  Credit("b", 1);
  for (uint64_t seq = 1; seq <= 5; ++seq) Publish("a", seq, "room:1");
  Flush();  // 2 in flight, 3 queued
  rec_.log.sent.clear();
  Advance(500'000, {"a"});
  Flush();
  EXPECT_EQ(router_.counters().expired, 1u);
  EXPECT_EQ(router_.counters().dropped[static_cast<size_t>(DropReason::kExpired)], 5u);
  EXPECT_EQ(router_.counters().dropped[static_cast<size_t>(DropReason::kDisconnect)], 0u);
  auto acks = rec_.Take("a", mesh::Type::kAck);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0].seq, 5u);
}

TEST_F(RouterTest, AnotherConnectionCannotTakeALiveInstanceWithoutItsToken) {
  Hello("a", 1, {"room:1"});
  Hello("b", 2, {"room:1"});
  Flush();
  rec_.log.sent.clear();
  // An intruder that saw instance 1 in a delivery: a wrong token, or none.
  for (const std::string& token : {std::string(32, 'f'), std::string()}) {
    SayHello("x", {.shard = "a", .instance = 1, .window = 100, .token = token, .topics = {}});
  }
  EXPECT_EQ(router_.counters().refused[static_cast<size_t>(Refused::kBadRebind)], 2u);
  EXPECT_EQ(router_.counters().rebinds, 0u);
  EXPECT_TRUE(rec_.Take("x", mesh::Type::kWelcome).empty());
  EXPECT_EQ(router_.interests().subscriptions(), 2u) << "a's state is a's";
  Publish("b", 1, "room:1", "for a");
  Flush();
  EXPECT_EQ(rec_.Take("a", mesh::Type::kDeliver).size(), 1u) << "a's session stays with a";
  EXPECT_TRUE(rec_.Take("x", mesh::Type::kDeliver).empty());
  // Nor can it publish as a: it is a stranger.
  Publish("x", 2, "room:1");
  EXPECT_EQ(rec_.Take("x", mesh::Type::kReset).size(), 1u);
}

TEST_F(RouterTest, APublishSeqOutsideTheOutboxWindowIsRefusedAndPoisonsNothing) {
  Hello("b", 2, {"room:1"});
  SayHello("a", {.shard = "a",
                 .instance = 1,
                 .window = 100,
                 .token = TokenOf(1),
                 .outbox = 3,
                 .acked = 10,
                 .topics = {}});
  Flush();
  rec_.log.sent.clear();
  Publish("a", 0, "room:1");           // would wrap done_seq
  Publish("a", UINT64_MAX, "room:1");  // would make every later one a duplicate
  Publish("a", 14, "room:1");          // more than the outbox holds past 10
  EXPECT_EQ(router_.counters().refused[static_cast<size_t>(Refused::kBadSeq)], 3u);
  for (uint64_t seq = 11; seq <= 13; ++seq) Publish("a", seq, "room:1");
  Flush();
  auto to_b = rec_.Take("b", mesh::Type::kDeliver);
  ASSERT_EQ(to_b.size(), 3u);
  EXPECT_EQ(to_b[0].seq, 11u);
  EXPECT_EQ(to_b[2].seq, 13u);
  EXPECT_EQ(router_.counters().refused[static_cast<size_t>(Refused::kDuplicate)], 0u);
  Credit("b", 4);  // the snapshot and three deliveries
  Flush();
  auto acks = rec_.Take("a", mesh::Type::kAck);
  ASSERT_FALSE(acks.empty());
  EXPECT_EQ(acks.back().seq, 13u);
  Publish("a", 16, "room:1");  // 13 is done: 16 fits the window again
  EXPECT_EQ(router_.counters().refused[static_cast<size_t>(Refused::kBadSeq)], 3u);
}

TEST_F(RouterTest, AnInstanceWithoutATokenGetsANewSessionOnceTheOldOneExpired) {
  mesh::Hello old{.shard = "a", .instance = 1, .window = 100, .topics = {"room:1"}};
  SayHello("a", old);
  LinkId first = router_.FindInstance(1);
  SayHello("a2", old);  // reconnected: cannot prove it is the same process
  EXPECT_EQ(router_.FindInstance(1), first);
  EXPECT_TRUE(rec_.Take("a2", mesh::Type::kWelcome).empty());
  Advance(400'000, {});
  EXPECT_EQ(router_.FindInstance(1), kNoLink) << "the old connection went silent";
  SayHello("a2", old);
  EXPECT_NE(router_.FindInstance(1), kNoLink);
  EXPECT_NE(router_.FindInstance(1), first);
  EXPECT_EQ(rec_.Take("a2", mesh::Type::kWelcome).size(), 1u);
}

TEST_F(RouterTest, AHelloAgainOnTheSameConnectionKeepsTheCreditAccounting) {
  Hello("a", 1, {});
  Hello("b", 2, {"room:1"}, /*window=*/3);  // the snapshot takes one
  Flush();
  for (uint64_t seq = 1; seq <= 2; ++seq) Publish("a", seq, "room:1");
  Flush();  // b has 3 in flight, no credit left
  Hello("b", 2, {"room:1"}, /*window=*/3);
  EXPECT_EQ(router_.counters().rebinds, 0u);
  Publish("a", 3, "room:1");
  Flush();
  rec_.log.sent.clear();
  Credit("b", 3);  // the three in flight come back: publishes 1 and 2 are done
  Flush();
  auto acks = rec_.Take("a", mesh::Type::kAck);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0].seq, 2u);
  size_t outstanding = 99;
  router_.ForEachLink([&](const Router::LinkView& v) {
    if (v.shard == "b") outstanding = v.queue.credit() + v.in_flight;
  });
  EXPECT_EQ(outstanding, 3u) << "credit left and messages in flight add up to the window";
}

TEST_F(RouterTest, FramesThatAreNotMeshV1AreCountedAndIgnored) {
  std::vector<std::string_view> frames = {"garbage"};
  router_.OnMessage("a", frames, now_us_);
  EXPECT_EQ(router_.counters().refused[static_cast<size_t>(Refused::kBadFrame)], 1u);
  EXPECT_TRUE(rec_.log.sent.empty());
}

// The messages a kHistory carries (views into its body), each a kDeliver.
std::vector<mesh::Message> MessagesIn(const mesh::Message& history) {
  std::vector<mesh::Message> out;
  Status s = mesh::ForEachInBatch(history.body, [&](std::span<const std::string_view> frames) {
    mesh::Message m;
    EXPECT_TRUE(mesh::Decode(frames, &m).ok());
    EXPECT_EQ(m.type, mesh::Type::kDeliver);
    out.push_back(m);
  });
  EXPECT_TRUE(s.ok()) << s.message();
  return out;
}

std::vector<uint64_t> OffsetsOf(const std::vector<mesh::Message>& messages) {
  std::vector<uint64_t> out;
  for (const mesh::Message& m : messages) out.push_back(m.offset);
  return out;
}

TEST_F(RouterTest, ASequencedPublishGetsTheNextOffsetAndGoesToItsOriginToo) {
  Hello("a", 1, {});  // the origin: no client of it is subscribed
  Hello("b", 2, {"room:1"});
  Hello("c", 3, {"room:1"});
  Hello("d", 4, {"room:2"});
  Flush();
  SequencedPublish("a", 1, "room:1", "one");
  SequencedPublish("a", 2, "room:1", "two");
  Flush();
  for (const std::string to : {"a", "b", "c"}) {
    auto d = rec_.Packed(to, mesh::Type::kDeliver);
    ASSERT_EQ(d.size(), 2u) << to;
    EXPECT_EQ(d[0].flags, mesh::kFlagSequenced);
    EXPECT_EQ(d[0].origin, 1u);
    EXPECT_EQ(d[0].seq, 1u);
    EXPECT_EQ(d[0].offset, 1u);
    EXPECT_EQ(d[0].stream, 500u);
    EXPECT_EQ(d[0].body, "one");
    EXPECT_EQ(d[1].offset, 2u);
    EXPECT_EQ(d[1].stream, 500u);
  }
  EXPECT_TRUE(rec_.Packed("d", mesh::Type::kDeliver).empty());
  EXPECT_EQ(router_.history().messages(), 2u);
  EXPECT_EQ(router_.history().counters().sequenced, 2u);
  EXPECT_EQ(router_.counters().routed, 6u);
  // Done once every recipient consumed it, the origin's own copy included.
  Credit("b", 10);
  Credit("c", 10);
  Flush();
  EXPECT_TRUE(rec_.Take("a", mesh::Type::kAck).empty());
  Credit("a", 2);
  Flush();
  auto acks = rec_.Take("a", mesh::Type::kAck);
  ASSERT_FALSE(acks.empty());
  EXPECT_EQ(acks.back().seq, 2u);
}

TEST_F(RouterTest, ASubscribedOriginGetsOneCopyWithItsFlagsAndStamp) {
  Hello("a", 1, {"room:1"});
  Flush();
  const uint8_t flags = mesh::kFlagSequenced | mesh::kFlagStamped | mesh::kFlagBinary;
  Feed("a", {.type = mesh::Type::kPublish,
             .seq = 1,
             .flags = flags,
             .stamp = 123,
             .topic = "room:1",
             .body = "bin"});
  Flush();
  auto d = rec_.Packed("a", mesh::Type::kDeliver);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].flags, flags);
  EXPECT_EQ(d[0].stamp, 123u);
  EXPECT_EQ(d[0].offset, 1u);
  // A publish without the flag skips its origin, as always, and is not kept.
  Publish("a", 2, "room:1");
  Flush();
  EXPECT_EQ(rec_.Packed("a", mesh::Type::kDeliver).size(), 1u);
  EXPECT_EQ(router_.history().messages(), 1u);
  // A duplicate (a resend on the same session) is not sequenced again.
  Feed("a", {.type = mesh::Type::kPublish,
             .seq = 1,
             .flags = flags,
             .stamp = 123,
             .topic = "room:1",
             .body = "bin"});
  Flush();
  EXPECT_EQ(rec_.Packed("a", mesh::Type::kDeliver).size(), 1u);
  EXPECT_EQ(router_.history().counters().sequenced, 1u);
}

TEST_F(RouterTest, AFetchIsAnsweredWithTheMessagesAfterItsOffsetUnderCredit) {
  Hello("a", 1, {"room:1"});
  Hello("b", 2, {}, /*window=*/1);
  Flush();
  for (uint64_t seq = 1; seq <= 3; ++seq) {
    SequencedPublish("a", seq, "room:1", "m" + std::to_string(seq));
  }
  Flush();
  Fetch("b", 42, "room:1", 1, 10);
  Flush();
  auto h = rec_.Packed("b", mesh::Type::kHistory);
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h[0].id, 42u);
  EXPECT_EQ(h[0].topic, "room:1");
  EXPECT_EQ(h[0].stream, 500u);
  EXPECT_EQ(h[0].top, 3u);
  EXPECT_EQ(h[0].first, 1u);
  auto in = MessagesIn(h[0]);
  ASSERT_EQ(OffsetsOf(in), (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(in[0].origin, 1u);
  EXPECT_EQ(in[0].seq, 2u);
  EXPECT_EQ(in[0].stream, 500u);
  EXPECT_EQ(in[0].flags, mesh::kFlagSequenced);
  EXPECT_EQ(in[0].topic, "room:1");
  EXPECT_EQ(in[1].body, "m3");
  // The position only, of a topic nothing was sequenced on yet: it waits
  // for credit like any data.
  Fetch("b", 43, "room:2", 0, 0);
  Flush();
  EXPECT_EQ(rec_.Packed("b", mesh::Type::kHistory).size(), 1u);
  Credit("b", 1);
  Flush();
  h = rec_.Packed("b", mesh::Type::kHistory);
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(h[1].id, 43u);
  EXPECT_EQ(h[1].stream, 501u);
  EXPECT_EQ(h[1].top, 0u);
  EXPECT_EQ(h[1].first, 1u);
  EXPECT_TRUE(h[1].body.empty());
  EXPECT_EQ(router_.history().counters().fetches, 2u);
  // An answer settles no publish: a's ack waited for its deliveries only.
  EXPECT_EQ(router_.counters().delivered, 3u);
}

TEST_F(RouterTest, HistoryFromAStrangerIsAnsweredWithAResetAndFromAShardIsRefused) {
  Restate("x", "room:1", 900, 1, 1, 1);
  Fetch("x", 1, "room:1", 0, 10);
  EXPECT_EQ(rec_.Take("x", mesh::Type::kReset).size(), 1u);
  EXPECT_EQ(router_.history().topics(), 0u);
  Hello("a", 1, {});
  std::string empty;
  Feed("a", {.type = mesh::Type::kHistory, .topic = "room:1", .body = empty, .stream = 1});
  EXPECT_EQ(router_.counters().refused[static_cast<size_t>(Refused::kBadFrame)], 1u);
}

TEST_F(RouterTest, HistoryExpiresByItsTopicsTtlOnTick) {
  Hello("a", 1, {});
  SequencedPublish("a", 1, "short:1");
  SequencedPublish("a", 2, "room:1");
  Flush();
  EXPECT_EQ(router_.history().messages(), 2u);
  now_us_ += 999'999;
  router_.OnTick(now_us_);
  EXPECT_EQ(router_.history().messages(), 2u);
  now_us_ += 1;
  router_.OnTick(now_us_);
  EXPECT_EQ(router_.history().messages(), 1u);
  EXPECT_EQ(router_.history().counters().evicted[static_cast<size_t>(HistoryEviction::kTtl)], 1u);
}

TEST_F(RouterTest, AMessageTooLargeForAFrameIsDroppedNotQueued) {
  RouterOptions o = Options({}, 0);
  o.max_packed_bytes = 200;
  Router router(o, &rec_);
  auto feed = [&](const std::string& from, const mesh::Hello& h) {
    std::string body = mesh::EncodeHello(h);
    std::vector<std::string> frames =
        mesh_testing::EncodeFrames({.type = mesh::Type::kHello, .body = body});
    std::vector<std::string_view> views(frames.begin(), frames.end());
    router.OnMessage(from, views, now_us_);
  };
  const std::string meta = "{\"phx_ref\":\"r1\",\"bio\":\"" + std::string(300, 'x') + "\"}";
  feed("a", {.shard = "a",
             .instance = 1,
             .window = 100,
             .topics = {"room:1"},
             .presence = {{"room:1", {{"alice", "r1", meta}}}}});
  feed("b", {.shard = "b", .instance = 2, .window = 100, .topics = {"room:1"}});
  router.Flush(now_us_);
  EXPECT_TRUE(rec_.Take("b", mesh::Type::kSnapshot).empty());
  EXPECT_EQ(router.counters().dropped[static_cast<size_t>(DropReason::kTooLarge)], 1u);
  router.Flush(now_us_);
  EXPECT_EQ(router.counters().snapshots, 2u) << "no repair of what cannot be sent";
  EXPECT_EQ(rec_.Take("b", mesh::Type::kWelcome).size(), 1u);
}

class RouterShedTest : public RouterTest {
 protected:
  RouterShedTest()
      : RouterTest(QueuePolicy{
            .max_messages = 2, .max_bytes = 1 << 20, .overload = OverloadPolicy::kShedOldest}) {}
};

TEST_F(RouterShedTest, ShedMessagesCountAsDoneAndShedPresenceIsRepaired) {
  Hello("a", 1, {"room:1"});
  Hello("b", 2, {"room:1"}, /*window=*/1);  // the snapshot takes it
  Flush();
  rec_.log.sent.clear();
  Track("a", "room:1", "alice", "r1");
  Flush();  // a diff for b, queued behind its window
  EXPECT_EQ(router_.counters().diffs, 1u);
  for (uint64_t seq = 1; seq <= 3; ++seq) Publish("a", seq, "room:1");
  Flush();
  EXPECT_EQ(router_.counters().dropped[static_cast<size_t>(DropReason::kShed)], 2u);
  // The diff and publish 1 were shed: 1 is done.
  auto acks = rec_.Take("a", mesh::Type::kAck);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0].seq, 1u);
  Credit("b", 3);
  Flush();
  EXPECT_EQ(rec_.Take("b", mesh::Type::kDeliver).size(), 2u);
  Credit("b", 2);
  Flush();  // drained: the repair snapshot goes out
  auto snaps = rec_.Take("b", mesh::Type::kSnapshot);
  ASSERT_EQ(snaps.size(), 1u);  // the repair
  EXPECT_NE(snaps[0].body.find("alice"), std::string::npos);
}

class RouterDisconnectTest : public RouterTest {
 protected:
  RouterDisconnectTest()
      : RouterTest(QueuePolicy{
            .max_messages = 2, .max_bytes = 1 << 20, .overload = OverloadPolicy::kDisconnect}) {}
};

TEST_F(RouterDisconnectTest, AnOverflowingShardIsDroppedAndTheOthersAreAcked) {
  Hello("a", 1, {"room:1"});
  Hello("b", 2, {"room:1"}, /*window=*/1);
  Hello("c", 3, {"room:1"});
  Flush();
  rec_.log.sent.clear();
  // Flushed after each: c always has credit, b has none left.
  for (uint64_t seq = 1; seq <= 3; ++seq) {
    Publish("a", seq, "room:1");
    Flush();
  }
  EXPECT_EQ(router_.counters().disconnected, 1u);
  EXPECT_EQ(router_.links(), 2u);
  EXPECT_EQ(rec_.Take("b", mesh::Type::kReset).size(), 1u);
  EXPECT_EQ(rec_.Take("c", mesh::Type::kDeliver).size(), 3u);
  Credit("c", 4);
  Flush();
  auto acks = rec_.Take("a", mesh::Type::kAck);
  ASSERT_FALSE(acks.empty());
  EXPECT_EQ(acks.back().seq, 3u);
}

class RouterSettleTest : public RouterTest {
 protected:
  RouterSettleTest() : RouterTest(QueuePolicy{}, /*settle_ms=*/500) {}

  // A hello from shard `name` (its routing id too) that lists `members`.
  static mesh::Hello ListingHello(const std::string& name, uint64_t instance,
                                  std::vector<std::string> members) {
    return {.shard = name,
            .instance = instance,
            .window = 100,
            .token = TokenOf(instance),
            .members = std::move(members),
            .topics = {"room:1"}};
  }
};

TEST_F(RouterSettleTest, ANewBrokerHoldsPublishesAndSnapshotsUntilShardsHadTimeToSayHello) {
  router_.OnTick(now_us_);  // the broker starts
  Hello("a", 1, {"room:1"});
  Publish("a", 7, "room:1");  // re-sent right after a's hello
  Flush();
  EXPECT_TRUE(rec_.Take("a", mesh::Type::kAck).empty()) << "held, not routed to nobody";
  EXPECT_TRUE(rec_.Take("a", mesh::Type::kSnapshot).empty());
  now_us_ += 300'000;
  Hello("b", 2, {"room:1"});  // b learns of the new broker later
  Flush();
  EXPECT_TRUE(rec_.Take("b", mesh::Type::kDeliver).empty());
  now_us_ += 300'000;
  Publish("a", 8, "room:1");  // settled, before the turn's flush: after 7, never before
  Flush();
  auto to_b = rec_.Take("b", mesh::Type::kDeliver);
  ASSERT_EQ(to_b.size(), 2u);
  EXPECT_EQ(to_b[0].seq, 7u);
  EXPECT_EQ(to_b[1].seq, 8u);
  EXPECT_EQ(rec_.Take("a", mesh::Type::kSnapshot).size(), 1u) << "snapshots once settled";
  EXPECT_EQ(rec_.Take("b", mesh::Type::kSnapshot).size(), 1u);
}

TEST_F(RouterSettleTest, AKeyedRepeatWhileSettlingIsAckedInItsOrder) {
  router_.OnTick(now_us_);  // the broker starts
  Hello("a", 1, {"room:1"});
  Hello("b", 2, {"room:1"});
  KeyedPublish("a", 7, "room:1", "k");
  KeyedPublish("b", 3, "room:1", "k");  // claimed by a's, while held
  Publish("b", 4, "room:1");
  Flush();
  EXPECT_TRUE(rec_.Take("b", mesh::Type::kAck).empty()) << "held: acked after the seqs before it";
  Advance(600'000, {"a", "b"});
  Publish("a", 8, "room:9");
  Flush();
  auto to_a = rec_.Take("a", mesh::Type::kDeliver);
  ASSERT_EQ(to_a.size(), 2u);  // a's own keyed publish, then b's 4
  EXPECT_EQ(to_a[0].origin, 1u);
  EXPECT_EQ(to_a[0].seq, 7u);
  EXPECT_EQ(to_a[1].seq, 4u);
  auto to_b = rec_.Take("b", mesh::Type::kDeliver);
  ASSERT_EQ(to_b.size(), 1u);
  EXPECT_EQ(to_b[0].seq, 7u);
  EXPECT_EQ(router_.counters().idempotent_repeats, 1u);
  Credit("a", 2);
  Flush();
  auto ack_b = rec_.Take("b", mesh::Type::kAck);
  ASSERT_FALSE(ack_b.empty());
  EXPECT_EQ(ack_b.back().seq, 4u);
}

TEST_F(RouterSettleTest, AShardWithALongerHeartbeatKeepsANewBrokerSettlingLonger) {
  router_.OnTick(now_us_);  // the broker starts: 500 ms by its own heartbeat
  SayHello("a", {.shard = "a",
                 .instance = 1,
                 .window = 100,
                 .token = TokenOf(1),
                 .heartbeat_ms = 1000,
                 .topics = {"room:1"}});
  Hello("b", 2, {"room:1"});
  now_us_ += 600'000;
  Publish("a", 1, "room:1");
  Flush();
  EXPECT_TRUE(rec_.Take("b", mesh::Type::kDeliver).empty())
      << "a shard that heartbeats every second may not have noticed the new broker yet";
  now_us_ += 1'500'000;  // 2 × 1000 ms since the start
  Flush();
  EXPECT_EQ(rec_.Take("b", mesh::Type::kDeliver).size(), 1u);
}

std::vector<std::string> MembersIn(const SentMessage& m) {
  Result<std::vector<std::string>> r = mesh::DecodeMembers(m.body);
  return r.ok() ? *r : std::vector<std::string>{"<refused>"};
}

TEST_F(RouterSettleTest, ANewBrokerSettlesOnceEveryListedShardHasSaidHello) {
  const std::vector<std::string> abc = {"a", "b", "c"};
  router_.OnTick(now_us_);
  SayHello("a", ListingHello("a", 1, abc));
  Publish("a", 7, "room:1");
  SayHello("b", ListingHello("b", 2, abc));
  Flush();
  EXPECT_TRUE(rec_.Take("b", mesh::Type::kDeliver).empty()) << "c has not said hello";
  EXPECT_EQ(router_.settle_end(), SettleEnd::kNotYet);
  now_us_ += 1000;  // far within the bound
  SayHello("c", ListingHello("c", 3, abc));
  EXPECT_EQ(router_.settle_end(), SettleEnd::kAllHello);
  Flush();
  EXPECT_EQ(rec_.Take("b", mesh::Type::kDeliver).size(), 1u);
  EXPECT_EQ(rec_.Take("c", mesh::Type::kDeliver).size(), 1u);
  EXPECT_EQ(rec_.Take("a", mesh::Type::kSnapshot).size(), 1u) << "snapshots once settled";
}

TEST_F(RouterSettleTest, AColdStartSettlesByTheBound) {
  router_.OnTick(now_us_);
  Hello("a", 1, {"room:1"});
  Hello("b", 2, {"room:1"});
  Publish("a", 1, "room:1");
  Advance(499'000, {"a", "b"});
  Flush();
  EXPECT_TRUE(rec_.Take("b", mesh::Type::kDeliver).empty());
  Advance(1000, {"a", "b"});
  EXPECT_EQ(router_.settle_end(), SettleEnd::kTimeout);
  Flush();
  EXPECT_EQ(rec_.Take("b", mesh::Type::kDeliver).size(), 1u);
}

TEST_F(RouterSettleTest, ShardsAreToldTheMembersAndTheOnesStillExpected) {
  router_.OnTick(now_us_);
  SayHello("b", ListingHello("b", 2, {"a", "b", "c"}));
  Flush();
  auto to_b = rec_.Take("b", mesh::Type::kMembers);
  ASSERT_EQ(to_b.size(), 1u);
  // a and c are expected: a broker killed now leaves their names with b.
  EXPECT_EQ(MembersIn(to_b[0]), (std::vector<std::string>{"a", "b", "c"}));
  rec_.log.sent.clear();
  SayHello("a", ListingHello("a", 1, {"a", "b", "c"}));
  Flush();
  // Nothing changed: only the shard that said hello is told.
  EXPECT_TRUE(rec_.Take("b", mesh::Type::kMembers).empty());
  ASSERT_EQ(rec_.Take("a", mesh::Type::kMembers).size(), 1u);
  // c never comes: once the bound ends the window, the rest are told.
  rec_.log.sent.clear();
  Advance(500'000, {"a", "b"});
  Flush();
  EXPECT_EQ(router_.settle_end(), SettleEnd::kTimeout);
  to_b = rec_.Take("b", mesh::Type::kMembers);
  ASSERT_EQ(to_b.size(), 1u);
  EXPECT_EQ(MembersIn(to_b[0]), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(router_.members(), (std::vector<std::string>{"a", "b"}));
}

TEST_F(RouterSettleTest, ALinkGoneOrJoinedTellsEveryShard) {
  router_.OnTick(now_us_);
  Hello("a", 1, {"room:1"});
  Hello("b", 2, {"room:1"});
  Advance(500'000, {"a", "b"});
  Flush();
  rec_.log.sent.clear();
  Hello("c", 3, {"room:1"});
  Flush();
  for (const std::string to : {"a", "b", "c"}) {
    auto m = rec_.Take(to, mesh::Type::kMembers);
    ASSERT_EQ(m.size(), 1u) << to;
    EXPECT_EQ(MembersIn(m[0]), (std::vector<std::string>{"a", "b", "c"}));
  }
  rec_.log.sent.clear();
  // b goes silent and expires (liveness 100 ms × 3).
  Advance(500'000, {"a", "c"});
  Flush();
  auto to_a = rec_.Take("a", mesh::Type::kMembers);
  ASSERT_EQ(to_a.size(), 1u);
  EXPECT_EQ(MembersIn(to_a[0]), (std::vector<std::string>{"a", "c"}));
}

}  // namespace
}  // namespace sb::broker

namespace sb::broker {
namespace {

// A new broker (settling 500 ms) and two shards a and b re-sending their
// outboxes of kTotal publishes each, in windows of `window` unacked
// (ClusterOptions::max_unacked), to shard c, which is healthy but takes 3 at
// a time. c's queue holds 2 windows and a snapshot.
class RouterPacedResendTest : public RouterTest {
 protected:
  static constexpr uint64_t kTotal = 20;
  static constexpr uint64_t kWindow = 5;
  RouterPacedResendTest()
      : RouterTest(QueuePolicy{.max_messages = 2 * kWindow + 1,
                               .max_bytes = 1 << 20,
                               .overload = OverloadPolicy::kShedOldest},
                   /*settle_ms=*/500) {}

  // Runs until both outboxes are acked; returns what c delivered, per origin.
  std::map<uint64_t, std::vector<uint64_t>> Run(uint64_t window) {
    router_.OnTick(now_us_);  // the broker starts
    Hello("a", 1, {"room:1"});
    Hello("b", 2, {"room:1"});
    Hello("c", 3, {"room:1"}, /*window=*/3);
    std::map<std::string, uint64_t> next = {{"a", 1}, {"b", 1}}, acked = {{"a", 0}, {"b", 0}};
    std::map<uint64_t, std::vector<uint64_t>> at_c;
    for (int turn = 0; turn < 1000 && (acked["a"] < kTotal || acked["b"] < kTotal); ++turn) {
      for (const std::string o : {"a", "b"}) {
        while (next[o] <= kTotal && next[o] - 1 - acked[o] < window)
          Publish(o, next[o]++, "room:1");
      }
      Flush();
      // Everything sent this turn is consumed and credited before the next.
      uint32_t consumed = 0;
      for (const SentMessage& d : rec_.Take("c", mesh::Type::kDeliver)) {
        at_c[d.origin].push_back(d.seq);
        ++consumed;
      }
      consumed += rec_.Take("c", mesh::Type::kSnapshot).size();
      consumed += rec_.Take("c", mesh::Type::kDiff).size();
      std::map<std::string, uint32_t> credit = {{"c", consumed}};
      for (const std::string o : {"a", "b"}) {
        for (const SentMessage& ack : rec_.Take(o, mesh::Type::kAck)) acked[o] = ack.seq;
        // a and b subscribe too: each consumes the other's deliveries.
        credit[o] = rec_.Take(o, mesh::Type::kDeliver).size() +
                    rec_.Take(o, mesh::Type::kSnapshot).size() +
                    rec_.Take(o, mesh::Type::kDiff).size();
      }
      rec_.log.sent.clear();
      for (const auto& [to, n] : credit) {
        if (n > 0) Credit(to, n);
      }
      now_us_ += 50'000;
    }
    EXPECT_EQ(acked["a"], kTotal);
    EXPECT_EQ(acked["b"], kTotal);
    return at_c;
  }
};

TEST_F(RouterPacedResendTest, AResendPacedByAcksNeverOverflowsAHealthyShardsQueue) {
  std::map<uint64_t, std::vector<uint64_t>> at_c = Run(kWindow);
  EXPECT_EQ(router_.counters().dropped[static_cast<size_t>(DropReason::kShed)], 0u);
  std::vector<uint64_t> all;
  for (uint64_t i = 1; i <= kTotal; ++i) all.push_back(i);
  EXPECT_EQ(at_c[1], all);
  EXPECT_EQ(at_c[2], all);
}

TEST_F(RouterPacedResendTest, AnUnpacedResendOfTheSameBacklogIsShed) {
  // What a shard did before it paced: the whole outbox at once.
  std::map<uint64_t, std::vector<uint64_t>> at_c = Run(kTotal);
  EXPECT_GT(router_.counters().dropped[static_cast<size_t>(DropReason::kShed)], 0u);
  EXPECT_LT(at_c[1].size() + at_c[2].size(), 2 * kTotal);
}

TEST_F(RouterSettleTest, ANewBrokerRebuildsHistoryFromTheRestatesAndSequencesOnceSettled) {
  const std::vector<std::string> abc = {"a", "b", "c"};
  router_.OnTick(now_us_);
  mesh::Hello ha = ListingHello("a", 1, abc);
  ha.history = {{"room:1", 900, 5}};
  ha.restate = 2;
  SayHello("a", ha);
  Restate("a", "room:1", 900, 4, 1, 10, "four");
  Restate("a", "room:1", 900, 5, 1, 11, "five");
  SayHello("b", ListingHello("b", 2, abc));
  SequencedPublish("b", 1, "room:1", "b1");  // held: c may hold more of room:1
  Fetch("b", 7, "room:1", 0, 10);            // held too
  mesh::Hello hc = ListingHello("c", 3, abc);
  hc.history = {{"room:1", 900, 7}};
  hc.restate = 1;
  SayHello("c", hc);
  Flush();
  EXPECT_EQ(router_.settle_end(), SettleEnd::kNotYet) << "c's restate has not come";
  EXPECT_TRUE(rec_.Packed("b", mesh::Type::kDeliver).empty());
  EXPECT_TRUE(rec_.Packed("b", mesh::Type::kHistory).empty());
  Restate("c", "room:1", 900, 7, 2, 99, "seven");
  EXPECT_EQ(router_.settle_end(), SettleEnd::kAllHello);
  Flush();
  auto to_b = rec_.Packed("b", mesh::Type::kDeliver);
  ASSERT_EQ(to_b.size(), 1u);
  EXPECT_EQ(to_b[0].offset, 8u) << "after the highest top any shard held";
  EXPECT_EQ(to_b[0].stream, 900u) << "the stream goes on";
  auto h = rec_.Packed("b", mesh::Type::kHistory);
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h[0].id, 7u);
  EXPECT_EQ(h[0].stream, 900u);
  EXPECT_EQ(h[0].top, 8u);
  EXPECT_EQ(h[0].first, 4u);
  auto in = MessagesIn(h[0]);
  ASSERT_EQ(OffsetsOf(in), (std::vector<uint64_t>{4, 5, 7, 8}));
  EXPECT_EQ(in[2].body, "seven");
  // a re-sends the publish the last broker sequenced as 5 and never acked.
  SequencedPublish("a", 11, "room:1", "five");
  Flush();
  auto to_a = rec_.Packed("a", mesh::Type::kDeliver);
  ASSERT_EQ(to_a.size(), 2u);  // b's, then its own again
  EXPECT_EQ(to_a[1].offset, 5u);
  EXPECT_EQ(to_a[1].origin, 1u);
  EXPECT_EQ(to_a[1].seq, 11u);
  EXPECT_EQ(router_.history().counters().resequenced, 1u);
  EXPECT_EQ(router_.history().counters().restated, 3u);
  EXPECT_EQ(router_.history().messages(), 4u);
}

}  // namespace
}  // namespace sb::broker

namespace sb::broker {
namespace {

// --- Peer nodes --------------------------------------------------------------

// Records what the router sends to other nodes: each kPeerData's message
// (decoded) and seq, and the acks.
class PeerRecorder : public PeerSender {
 public:
  bool SendPeerData(const std::string& peer, uint64_t seq, std::string_view packed) override {
    if (full.contains(peer)) return false;
    seqs[peer].push_back(seq);
    log.RecordPacked(packed, peer);
    packed_.emplace_back(peer, std::string(packed));
    return true;
  }
  // Recorded as its kPeerData one by one, and the batch's size apart.
  bool SendPeerBatch(const std::string& peer, std::string_view batch) override {
    if (full.contains(peer)) return false;
    std::vector<std::string_view> frames;
    mesh::Message m;
    EXPECT_TRUE(mesh::Unpack(batch, &frames).ok() && mesh::Decode(frames, &m).ok() &&
                m.type == mesh::Type::kBatch);
    size_t n = 0;
    EXPECT_TRUE(mesh::ForEachInBatch(m.body, [&](std::span<const std::string_view> inner) {
                  mesh::Message d;
                  ASSERT_TRUE(mesh::Decode(inner, &d).ok());
                  ASSERT_EQ(d.type, mesh::Type::kPeerData);
                  ++n;
                  SendPeerData(peer, d.seq, d.body);
                }).ok());
    batches[peer].push_back(n);
    return true;
  }
  void SendPeerAck(const std::string& peer, uint64_t seq) override { acks[peer].push_back(seq); }
  std::vector<SentMessage> Take(const std::string& peer, mesh::Type type) const {
    return log.Of(type, peer);
  }
  mesh_testing::SentLog log;
  std::map<std::string, std::vector<uint64_t>> seqs, acks;
  std::map<std::string, std::vector<size_t>> batches;  // kPeerData per kBatch sent
  std::set<std::string> full;  // peers whose uplink takes nothing (its high-water mark)
  // Every field of what `peer` was sent of `type`, oldest first.
  std::vector<mesh::Message> Packed(const std::string& peer, mesh::Type type) const {
    std::vector<mesh::Message> out;
    for (const auto& [to, packed] : packed_) {
      std::vector<std::string_view> frames;
      mesh::Message m;
      if (to == peer && mesh::Unpack(packed, &frames).ok() && mesh::Decode(frames, &m).ok() &&
          m.type == type) {
        out.push_back(m);
      }
    }
    return out;
  }
  void Clear() {
    log.sent.clear();
    packed_.clear();
  }

 private:
  std::deque<std::pair<std::string, std::string>> packed_;
};

class RouterPeerTest : public RouterTest {
 protected:
  explicit RouterPeerTest(int64_t settle_ms = 0, PeerOutboxOptions peer_outbox = {},
                          std::string node = "")
      : RouterTest(QueuePolicy{}, settle_ms, peer_outbox, std::move(node)) {
    router_.SetPeerSender(&peers_);
    for (const char* p : {"n2", "n3"}) {
      router_.AddPeer(p);
      (void)router_.OnPeerHello(p, 1000, now_us_);
      router_.OnPeerUp(p, 0);
    }
  }
  // A message from `peer`'s stream with the next seq it would send.
  void FromPeer(const std::string& peer, const mesh::Message& m) {
    FromPeer(peer, ++next_seq_[peer], m);
  }
  void FromPeer(const std::string& peer, uint64_t seq, const mesh::Message& m) {
    router_.OnPeerData(peer, seq, mesh::Pack(m), now_us_);
  }
  void PeerWants(const std::string& peer, const std::vector<std::string>& topics) {
    const std::string body = mesh::EncodePeerInterest(topics);
    FromPeer(peer, {.type = mesh::Type::kPeerInterest, .body = body});
  }
  void PeerTracks(const std::string& peer, const std::string& topic,
                  const std::vector<std::pair<std::string, std::string>>& metas) {
    mesh::PresenceChange c;
    for (const auto& [key, ref] : metas)
      c.joins.push_back({key, ref, R"({"phx_ref":")" + ref + "\"}"});
    const std::string body = mesh::EncodePresenceChange(c);
    FromPeer(peer, {.type = mesh::Type::kPeerPresence, .topic = topic, .body = body});
  }
  void PeerDelivers(const std::string& peer, uint64_t origin, uint64_t seq,
                    const std::string& topic, const std::string& body) {
    FromPeer(
        peer,
        {.type = mesh::Type::kDeliver, .seq = seq, .origin = origin, .topic = topic, .body = body});
  }
  std::vector<std::string> Topics(const std::vector<SentMessage>& msgs) {
    std::vector<std::string> out;
    for (const SentMessage& m : msgs) out.push_back(m.topic);
    return out;
  }
  void ClearLogs() {
    rec_.log.sent.clear();
    peers_.Clear();
  }

  PeerRecorder peers_;
  std::map<std::string, uint64_t> next_seq_;
};

TEST_F(RouterPeerTest, InterestGoesAsASnapshotWhenTheLinkComesUpThenAsChanges) {
  Hello("a", 1, {"room:1", "room:2"});
  Flush();
  // Each first local subscriber is a +topic; the snapshot the link's coming
  // up asked for goes at the end of the turn, with what is local by then.
  EXPECT_EQ(Topics(peers_.Take("n2", mesh::Type::kSubscribe)),
            (std::vector<std::string>{"room:1", "room:2"}));
  auto interest = peers_.Take("n2", mesh::Type::kPeerInterest);
  ASSERT_EQ(interest.size(), 1u);
  EXPECT_EQ(interest[0].body, R"({"topics":["room:1","room:2"]})");
  EXPECT_EQ(peers_.seqs["n2"], (std::vector<uint64_t>{1, 2, 3}));
  ClearLogs();
  // A second local subscriber changes nothing the peers see; the last one
  // leaving is a -topic.
  Hello("b", 2, {"room:1"});
  Feed("a", {.type = mesh::Type::kUnsubscribe, .topic = "room:1"});
  Feed("a", {.type = mesh::Type::kUnsubscribe, .topic = "room:2"});
  Flush();
  EXPECT_TRUE(peers_.Take("n2", mesh::Type::kSubscribe).empty());
  EXPECT_EQ(Topics(peers_.Take("n2", mesh::Type::kUnsubscribe)),
            (std::vector<std::string>{"room:2"}));
  ClearLogs();
  // The link comes up again: the whole local interest, after what was unacked.
  router_.OnPeerDown("n2");
  router_.OnPeerUp("n2", 4);
  Flush();
  interest = peers_.Take("n2", mesh::Type::kPeerInterest);
  ASSERT_EQ(interest.size(), 1u);
  EXPECT_EQ(interest[0].body, R"({"topics":["room:1"]})");
  EXPECT_EQ(peers_.seqs["n2"], (std::vector<uint64_t>{1, 2, 3, 4, 4, 5}))
      << "the peer took 1..3: 4 (the -topic) is sent again, then the snapshot";
}

TEST_F(RouterPeerTest, AMemberAddedAgainIsSentANewStreamThatItTakesFromItsFirstSeq) {
  // n2's broker, as the receiver of this router's stream to it.
  PeerInbox n2;
  bool fresh = false;
  ASSERT_EQ(router_.PeerStream("n2"), router_.epoch()) << "a first addition: the epoch";
  (void)n2.OnHello(router_.PeerStream("n2"), &fresh);
  Hello("a", 1, {"room:1"});
  Flush();
  for (uint64_t seq : peers_.seqs["n2"]) EXPECT_EQ(n2.OnData(seq), PeerInbox::Verdict::kTake);
  ASSERT_EQ(n2.expected(), 3u) << "took the +room:1 and the snapshot";
  ClearLogs();
  peers_.seqs.clear();
  // n2 leaves the membership and comes back (its etcd record expired and
  // was written anew): a new outbox, numbered from 1, under a new id.
  router_.RemovePeer("n2", now_us_);
  router_.AddPeer("n2");
  EXPECT_NE(router_.PeerStream("n2"), router_.epoch());
  const uint64_t expected = n2.OnHello(router_.PeerStream("n2"), &fresh);
  EXPECT_TRUE(fresh);
  EXPECT_EQ(expected, 0u);
  (void)router_.OnPeerHello("n2", 1000, now_us_);
  router_.OnPeerUp("n2", expected);
  Flush();
  auto interest = peers_.Take("n2", mesh::Type::kPeerInterest);
  ASSERT_EQ(interest.size(), 1u) << "the snapshot goes to the member added again";
  EXPECT_EQ(interest[0].body, R"({"topics":["room:1"]})");
  ASSERT_EQ(peers_.seqs["n2"], (std::vector<uint64_t>{1}));
  EXPECT_EQ(n2.OnData(1), PeerInbox::Verdict::kTake) << "not a duplicate of the old stream's 1";
  EXPECT_EQ(n2.duplicates(), 0u);
}

TEST_F(RouterPeerTest, ALocalBroadcastReachesLocalShardsAndEachInterestedPeerOnce) {
  Hello("a", 1, {"room:1"});
  Hello("b", 2, {"room:1"});
  PeerWants("n2", {"room:1", "room:9"});
  PeerWants("n3", {"room:2"});
  Flush();
  ClearLogs();
  Publish("a", 1, "room:1", "payload");
  Flush();
  EXPECT_EQ(rec_.Take("b", mesh::Type::kDeliver).size(), 1u);
  auto to_n2 = peers_.Take("n2", mesh::Type::kDeliver);
  ASSERT_EQ(to_n2.size(), 1u);
  EXPECT_EQ(to_n2[0].origin, 1u);
  EXPECT_EQ(to_n2[0].seq, 1u);
  EXPECT_EQ(to_n2[0].body, "payload");
  EXPECT_TRUE(peers_.Take("n3", mesh::Type::kDeliver).empty());
  // The ack waits for b, not for the other node: n2 has it in its outbox.
  Credit("b", 10);
  Flush();
  auto acks = rec_.Take("a", mesh::Type::kAck);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0].seq, 1u);
  // Until n2 acks, its outbox keeps it.
  size_t kept = 0;
  router_.ForEachPeer([&](const Router::PeerView& v) {
    if (v.name == "n2") kept = v.out.messages();
  });
  EXPECT_GE(kept, 1u);
  router_.OnPeerAck("n2", peers_.seqs["n2"].back());
  router_.ForEachPeer([&](const Router::PeerView& v) {
    if (v.name == "n2") kept = v.out.messages();
  });
  EXPECT_EQ(kept, 0u);
}

TEST_F(RouterPeerTest, KeyedRepeatsAndHistoryTopicsAreNotForwarded) {
  Hello("a", 1, {"room:1"});
  PeerWants("n2", {"room:1", "other"});
  Flush();
  ClearLogs();
  KeyedPublish("a", 1, "other", "k1");
  KeyedPublish("a", 2, "other", "k1");
  SequencedPublish("a", 3, "room:1");
  Flush();
  auto to_n2 = peers_.Take("n2", mesh::Type::kDeliver);
  ASSERT_EQ(to_n2.size(), 1u) << "the first claim only, and no sequenced publish";
  EXPECT_EQ(to_n2[0].seq, 1u);
  EXPECT_EQ(to_n2[0].flags & mesh::kFlagKeyed, 0);
}

TEST_F(RouterPeerTest, WhatComesFromAPeerGoesToLocalShardsOnlyOnceInOrder) {
  Hello("a", 1, {"room:1"});
  Hello("b", 2, {"room:1"});
  PeerWants("n3", {"room:1"});
  Flush();
  ClearLogs();
  PeerDelivers("n2", 99, 1, "room:1", "m1");
  PeerDelivers("n2", 99, 2, "room:1", "m2");
  FromPeer("n2", 3,
           {.type = mesh::Type::kDeliver,
            .seq = 2,
            .origin = 99,
            .topic = "room:1",
            .body = "m2"});  // seq 3 already taken: a resend
  next_seq_["n2"] = 2;
  PeerDelivers("n2", 99, 2, "room:1", "m2");  // stream seq 3 again: a duplicate
  Flush();
  for (const char* shard : {"a", "b"}) {
    auto got = rec_.Take(shard, mesh::Type::kDeliver);
    ASSERT_EQ(got.size(), 3u) << shard;
    EXPECT_EQ(got[0].body, "m1");
    EXPECT_EQ(got[1].body, "m2");
  }
  EXPECT_TRUE(peers_.Take("n3", mesh::Type::kDeliver).empty()) << "one hop: never to a peer";
  // Acked to n2 once every local recipient consumed them, not when taken:
  // a broker that died first would leave them for n2 to send again.
  EXPECT_TRUE(peers_.acks["n2"].empty()) << "taken, not consumed yet";
  Credit("a", 10);
  Flush();
  EXPECT_TRUE(peers_.acks["n2"].empty()) << "b has not consumed them yet";
  Credit("b", 10);
  Flush();
  ASSERT_FALSE(peers_.acks["n2"].empty());
  EXPECT_EQ(peers_.acks["n2"].back(), 3u);
  router_.ForEachPeer([&](const Router::PeerView& v) {
    if (v.name == "n2") {
      EXPECT_EQ(v.in.duplicates(), 1u);
    }
  });
}

TEST_F(RouterPeerTest, PeerPresenceIsDiffedToLocalShardsAndLeavesWhenItsLinkGoesDown) {
  Hello("a", 1, {"room:1", "room:2"});
  Flush();
  ClearLogs();
  PeerTracks("n2", "room:1", {{"alice", "r1"}, {"bob", "r2"}});
  PeerTracks("n2", "room:2", {{"carol", "r3"}});
  Flush();
  auto diffs = rec_.Take("a", mesh::Type::kDiff);
  ASSERT_EQ(diffs.size(), 2u);
  EXPECT_NE(diffs[0].body.find("alice"), std::string::npos);
  // A new local subscriber's snapshot holds the peer's metas.
  Hello("c", 3, {"room:1"});
  Flush();
  auto snap = rec_.Take("c", mesh::Type::kSnapshot);
  ASSERT_EQ(snap.size(), 1u);
  EXPECT_NE(snap[0].body.find("bob"), std::string::npos);
  ClearLogs();
  // The same snapshot again (a new broker there, or an answer to ours): no
  // diff, nobody joins twice.
  PeerTracks("n2", "room:1", {{"alice", "r1"}, {"bob", "r2"}});
  Flush();
  EXPECT_TRUE(rec_.Take("a", mesh::Type::kDiff).empty());
  // Its link in goes silent: every meta leaves, one diff per topic.
  router_.OnPeerInboundDown("n2", now_us_);
  Flush();
  diffs = rec_.Take("a", mesh::Type::kDiff);
  ASSERT_EQ(diffs.size(), 2u);
  for (const SentMessage& d : diffs) EXPECT_NE(d.body.find("\"leaves\":{\""), std::string::npos);
  EXPECT_EQ(router_.presence().metas(), 0u);
  ClearLogs();
  // It says hello again: it is asked for its presence (our interest
  // snapshot), and its answer brings each meta back once.
  (void)router_.OnPeerHello("n2", 1000, now_us_);
  Flush();
  EXPECT_EQ(peers_.Take("n2", mesh::Type::kPeerInterest).size(), 1u);
  PeerTracks("n2", "room:1", {{"alice", "r1"}, {"bob", "r2"}});
  PeerTracks("n2", "room:1", {{"alice", "r1"}, {"bob", "r2"}});
  Flush();
  diffs = rec_.Take("a", mesh::Type::kDiff);
  ASSERT_EQ(diffs.size(), 1u);
  EXPECT_NE(diffs[0].body.find("alice"), std::string::npos);
  EXPECT_EQ(router_.presence().metas(), 2u);
}

TEST_F(RouterPeerTest, LocalPresenceGoesToThePeersThatWantTheTopic) {
  Hello("a", 1, {"room:1"});
  Track("a", "room:1", "alice", "r1");
  Flush();
  ClearLogs();
  // n2 subscribes room:1: it is sent this node's metas on it, whole.
  FromPeer("n2", {.type = mesh::Type::kSubscribe, .topic = "room:1"});
  Flush();
  auto snap = peers_.Take("n2", mesh::Type::kPeerPresence);
  ASSERT_EQ(snap.size(), 1u);
  EXPECT_EQ(snap[0].topic, "room:1");
  EXPECT_NE(snap[0].body.find("alice"), std::string::npos);
  ClearLogs();
  // Then each local change, as the shard reported it; n3 wants nothing.
  Track("a", "room:1", "bob", "r2");
  Flush();
  auto changes = peers_.Take("n2", mesh::Type::kPresence);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_NE(changes[0].body.find("bob"), std::string::npos);
  EXPECT_TRUE(peers_.Take("n3", mesh::Type::kPresence).empty());
  // A peer's metas are never sent on to another peer.
  ClearLogs();
  PeerTracks("n3", "room:1", {{"zed", "z1"}});
  Flush();
  EXPECT_TRUE(peers_.Take("n2", mesh::Type::kPresence).empty());
  EXPECT_TRUE(peers_.Take("n2", mesh::Type::kPeerPresence).empty());
  // The shard goes: the peer gets this node's metas on the topic anew (none).
  ClearLogs();
  Advance(400'000, {});
  Flush();
  snap = peers_.Take("n2", mesh::Type::kPeerPresence);
  ASSERT_EQ(snap.size(), 1u);
  EXPECT_EQ(snap[0].body, R"({"joins":[],"leaves":[]})");
}

TEST_F(RouterPeerTest, AFullUplinkKeepsWhatItCouldNotTakeAndSendsItLater) {
  Hello("a", 1, {"room:1"});
  PeerWants("n2", {"room:1"});
  Flush();
  ClearLogs();
  peers_.full.insert("n2");
  Publish("a", 1, "room:1");
  Flush();
  EXPECT_TRUE(router_.PeerBacklog());
  peers_.full.clear();
  Flush();
  EXPECT_FALSE(router_.PeerBacklog());
  EXPECT_EQ(peers_.Take("n2", mesh::Type::kDeliver).size(), 1u);
}

TEST_F(RouterPeerTest, APeerThatReadsBatchesGetsABurstInFewMessagesWholeAndInOrder) {
  // n2's welcome said its peer socket reads batches; n3's (an older
  // broker's) did not.
  router_.OnPeerDown("n2");
  router_.OnPeerUp("n2", 0, /*batches=*/true);
  Hello("a", 1, {});
  PeerWants("n2", {"room:1"});
  PeerWants("n3", {"room:1"});
  Flush();
  ClearLogs();
  peers_.seqs.clear();
  peers_.batches.clear();
  // A burst while n2's uplink takes nothing: it all waits, none marked sent.
  peers_.full.insert("n2");
  constexpr int kBurst = 2000;
  const std::string body(100, 'x');
  for (int i = 1; i <= kBurst; ++i) Publish("a", i, "room:1", body);
  Flush();
  EXPECT_TRUE(peers_.seqs["n2"].empty());
  EXPECT_TRUE(router_.PeerBacklog());
  peers_.full.clear();
  Flush();
  EXPECT_FALSE(router_.PeerBacklog());
  for (const std::string peer : {"n2", "n3"}) {
    const std::vector<mesh::Message> got = peers_.Packed(peer, mesh::Type::kDeliver);
    ASSERT_EQ(got.size(), size_t{kBurst}) << peer;
    for (int i = 0; i < kBurst; ++i) ASSERT_EQ(got[i].seq, uint64_t(i + 1)) << peer;
    // The stream's seqs follow each other with nothing repeated.
    const std::vector<uint64_t>& seqs = peers_.seqs[peer];
    for (size_t i = 1; i < seqs.size(); ++i) ASSERT_EQ(seqs[i], seqs[i - 1] + 1) << peer;
  }
  // n2: batches of about mesh::kBatchBytes (a delivery packs to some 130
  // bytes here: 2000 of them fill 4 or 5); n3: one kPeerData each.
  const std::vector<size_t>& n2 = peers_.batches["n2"];
  EXPECT_GE(n2.size(), 2u);
  EXPECT_LE(n2.size(), 6u);
  EXPECT_EQ(std::accumulate(n2.begin(), n2.end(), size_t{0}), size_t{kBurst});
  EXPECT_TRUE(peers_.batches["n3"].empty());
  // Acked as before: up to the last seq of the stream, the outbox is empty.
  router_.OnPeerAck("n2", peers_.seqs["n2"].back());
  size_t kept = 1;
  router_.ForEachPeer([&](const Router::PeerView& v) {
    if (v.name == "n2") kept = v.out.messages();
  });
  EXPECT_EQ(kept, 0u);
}

TEST_F(RouterPeerTest, ARemovedPeerTakesItsInterestAndPresenceWithIt) {
  Hello("a", 1, {"room:1"});
  PeerWants("n2", {"room:1"});
  PeerTracks("n2", "room:1", {{"alice", "r1"}});
  Flush();
  ClearLogs();
  router_.RemovePeer("n2", now_us_);
  Flush();
  EXPECT_EQ(rec_.Take("a", mesh::Type::kDiff).size(), 1u);
  EXPECT_EQ(router_.PeerId("n2"), kNoLink);
  Publish("a", 1, "room:1");
  Flush();
  EXPECT_EQ(router_.interests().subscriptions(), 1u);
}

TEST_F(RouterPeerTest, AGapIsTakenAndCountedAndANewStreamStartsAnew) {
  Hello("a", 1, {"room:1"});
  Flush();
  PeerDelivers("n2", 99, 1, "room:1", "m1");
  // n2's outbox dropped its seqs 2..4 (a long partition): 5 is taken.
  FromPeer("n2", 5,
           {.type = mesh::Type::kDeliver, .seq = 2, .origin = 99, .topic = "room:1", .body = "m5"});
  Flush();
  EXPECT_EQ(rec_.Take("a", mesh::Type::kDeliver).size(), 2u);
  router_.ForEachPeer([&](const Router::PeerView& v) {
    if (v.name == "n2") {
      EXPECT_EQ(v.in.gaps(), 3u);
      EXPECT_EQ(v.routed_in, 2u);
    }
  });
  ClearLogs();
  // n2's broker restarted: a new stream, from 1 again, and it is sent this
  // node's interest to answer with its presence.
  EXPECT_EQ(router_.OnPeerHello("n2", 2000, now_us_), 0u);
  Flush();
  EXPECT_EQ(peers_.Take("n2", mesh::Type::kPeerInterest).size(), 1u);
  FromPeer("n2", 1,
           {.type = mesh::Type::kDeliver, .seq = 3, .origin = 99, .topic = "room:1", .body = "m6"});
  Flush();
  EXPECT_EQ(rec_.Take("a", mesh::Type::kDeliver).size(), 1u) << "seq 1 of the new stream";
  // The same stream again (a reconnect): the first seq not done — 1, which
  // a has not consumed yet: n2 keeps it until it is.
  EXPECT_EQ(router_.OnPeerHello("n2", 2000, now_us_), 1u);
  Credit("a", 10);
  Flush();
  EXPECT_EQ(router_.OnPeerHello("n2", 2000, now_us_), 2u);
}

class RouterSmallOutboxTest : public RouterPeerTest {
 protected:
  RouterSmallOutboxTest() : RouterPeerTest(0, PeerOutboxOptions{.max_messages = 8}) {}
};

TEST_F(RouterSmallOutboxTest, AFullOutboxDropsTheOldestAndSendsInterestAndPresenceWholeAgain) {
  Hello("a", 1, {"room:1"});
  Track("a", "room:1", "alice", "r1");
  PeerWants("n2", {"room:1"});
  Flush();
  router_.OnPeerAck("n2", peers_.seqs["n2"].back());
  // n2 is unreachable: its uplink is down, broadcasts pile up past the bound.
  router_.OnPeerDown("n2");
  for (uint64_t seq = 1; seq <= 20; ++seq) Publish("a", seq, "room:1");
  Flush();
  uint64_t dropped = 0;
  router_.ForEachPeer([&](const Router::PeerView& v) {
    if (v.name == "n2") {
      dropped = v.out.dropped();
      EXPECT_EQ(v.out.messages(), 8u);
    }
  });
  EXPECT_EQ(dropped, 12u);
  ClearLogs();
  peers_.seqs.clear();
  // Back: what the outbox kept, then the interest snapshot the link's
  // coming up owes (itself within the bound: it takes the oldest's place).
  router_.OnPeerUp("n2", 0);
  Flush();
  EXPECT_EQ(peers_.Take("n2", mesh::Type::kDeliver).size(), 7u);
  EXPECT_EQ(peers_.Take("n2", mesh::Type::kPeerInterest).size(), 1u);
  ClearLogs();
  // Once n2 has taken them and the outbox has room, this node's interest
  // and presence go whole again: what was dropped may have held changes.
  router_.OnPeerAck("n2", peers_.seqs["n2"].back());
  Flush();
  EXPECT_EQ(peers_.Take("n2", mesh::Type::kPeerInterest).size(), 1u);
  auto presence = peers_.Take("n2", mesh::Type::kPeerPresence);
  ASSERT_EQ(presence.size(), 1u);
  EXPECT_NE(presence[0].body.find("alice"), std::string::npos);
  Flush();
  EXPECT_EQ(peers_.Take("n2", mesh::Type::kPeerInterest).size(), 1u) << "once, not every turn";
}

class RouterSettlingPeerTest : public RouterPeerTest {
 protected:
  RouterSettlingPeerTest() : RouterPeerTest(/*settle_ms=*/500) {}
};

TEST_F(RouterSettlingPeerTest, ANewBrokerHoldsWhatPeersSendAndItsSnapshotsUntilSettled) {
  Hello("a", 1, {"room:1"});
  Flush();
  PeerWants("n2", {"room:1"});
  PeerDelivers("n2", 99, 1, "room:1", "m1");
  Flush();
  EXPECT_TRUE(rec_.Take("a", mesh::Type::kDeliver).empty()) << "held while settling";
  EXPECT_TRUE(peers_.Take("n2", mesh::Type::kPeerInterest).empty())
      << "this node's interest is not whole yet";
  EXPECT_TRUE(peers_.acks["n2"].empty()) << "not acked before it is handled";
  Advance(600'000, {"a"});
  Flush();
  EXPECT_EQ(rec_.Take("a", mesh::Type::kDeliver).size(), 1u);
  auto interest = peers_.Take("n2", mesh::Type::kPeerInterest);
  ASSERT_EQ(interest.size(), 1u);
  EXPECT_EQ(interest[0].body, R"({"topics":["room:1"]})");
  EXPECT_EQ(peers_.Take("n2", mesh::Type::kPeerPresence).size(), 1u)
      << "its snapshot answered with this node's metas on room:1";
  ASSERT_FALSE(peers_.acks["n2"].empty());
  EXPECT_EQ(peers_.acks["n2"].back(), 1u) << "the interest is done; the broadcast waits for a";
  Credit("a", 10);
  Flush();
  EXPECT_EQ(peers_.acks["n2"].back(), 2u);
}

TEST_F(RouterSettlingPeerTest, WhatAPeerSentBeforeItRestartedIsNotTakenIntoItsNewStream) {
  Hello("a", 1, {"room:1"});
  Flush();
  PeerDelivers("n2", 99, 1, "room:1", "old");  // stream 1000's seq 1, held
  EXPECT_EQ(router_.OnPeerHello("n2", 2000, now_us_), 0u);
  FromPeer(
      "n2", 1,
      {.type = mesh::Type::kDeliver, .seq = 1, .origin = 77, .topic = "room:1", .body = "new"});
  Advance(600'000, {"a"});
  Flush();
  auto got = rec_.Take("a", mesh::Type::kDeliver);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].body, "new");
}

TEST_F(RouterTest, AFirstPeerAddedLaterIsToldTheInterestAlreadyThere) {
  // A node alone tracks no local interest; its first member gets it whole.
  PeerRecorder peers;
  router_.SetPeerSender(&peers);
  Hello("a", 1, {"room:1", "room:2"});
  Feed("a", {.type = mesh::Type::kUnsubscribe, .topic = "room:2"});
  Flush();
  router_.AddPeer("n2");
  router_.OnPeerUp("n2", 0);
  Flush();
  auto interest = peers.Take("n2", mesh::Type::kPeerInterest);
  ASSERT_EQ(interest.size(), 1u);
  EXPECT_EQ(interest[0].body, R"({"topics":["room:1"]})");
  Feed("a", {.type = mesh::Type::kUnsubscribe, .topic = "room:1"});
  Flush();
  EXPECT_EQ(peers.Take("n2", mesh::Type::kUnsubscribe).size(), 1u);
}

// --- History across nodes ----------------------------------------------------

// This broker is node n1 of n1, n2, n3 (all up).
class RouterOwnerTest : public RouterPeerTest {
 protected:
  RouterOwnerTest() : RouterPeerTest(0, {}, "n1") {}
  // A topic `owner` owns among `nodes` and, if `then` is given, `then`
  // owns among `after`.
  static std::string TopicOwnedBy(const std::string& owner,
                                  std::vector<std::string> nodes = {"n1", "n2", "n3"},
                                  const std::string& then = "",
                                  std::vector<std::string> after = {}) {
    for (int i = 0;; ++i) {
      const std::string t = "room:" + std::to_string(i);
      if (TopicOwner(nodes, t) != owner) continue;
      if (!then.empty() && TopicOwner(after, t) != then) continue;
      return t;
    }
  }
  // The owner's sequenced delivery of (origin, seq) at `offset` of `stream`.
  void OwnerDelivers(const std::string& peer, uint64_t origin, uint64_t seq,
                     const std::string& topic, uint64_t offset, uint64_t stream,
                     const std::string& body = "m") {
    FromPeer(peer, {.type = mesh::Type::kDeliver,
                    .seq = seq,
                    .origin = origin,
                    .flags = mesh::kFlagSequenced,
                    .topic = topic,
                    .body = body,
                    .offset = offset,
                    .stream = stream});
  }
};

TEST_F(RouterOwnerTest, ASequencedPublishOnARemoteTopicGoesToItsOwnerNotSequencedHere) {
  const std::string topic = TopicOwnedBy("n2");
  EXPECT_EQ(router_.OwnerOf(topic), "n2");
  Hello("a", 1, {topic});
  Hello("b", 2, {topic});
  Flush();
  ClearLogs();
  SequencedPublish("a", 1, topic, "one");
  Flush();
  auto to_owner = peers_.Packed("n2", mesh::Type::kPeerSequence);
  ASSERT_EQ(to_owner.size(), 1u);
  EXPECT_EQ(to_owner[0].origin, 1u);
  EXPECT_EQ(to_owner[0].seq, 1u);
  EXPECT_EQ(to_owner[0].flags & mesh::kFlagSequenced, mesh::kFlagSequenced);
  EXPECT_EQ(to_owner[0].topic, topic);
  EXPECT_EQ(to_owner[0].body, "one");
  EXPECT_TRUE(peers_.Packed("n3", mesh::Type::kPeerSequence).empty());
  EXPECT_TRUE(peers_.Packed("n3", mesh::Type::kDeliver).empty());
  EXPECT_TRUE(rec_.Packed("a", mesh::Type::kDeliver).empty());
  EXPECT_TRUE(rec_.Packed("b", mesh::Type::kDeliver).empty());
  EXPECT_FALSE(router_.history().Find(topic).has_value()) << "not sequenced here";
  EXPECT_EQ(router_.counters().sequence_forwarded, 1u);
  EXPECT_TRUE(rec_.Take("a", mesh::Type::kAck).empty());
}

TEST_F(RouterOwnerTest, TheOriginIsAckedOnceTheOwnersDeliveryCameBackAndWasConsumed) {
  const std::string topic = TopicOwnedBy("n2");
  Hello("a", 1, {});  // the origin: none of its clients is subscribed
  Hello("b", 2, {topic});
  Flush();
  SequencedPublish("a", 1, topic, "one");
  Flush();
  ClearLogs();
  const uint64_t stream = 0x1234000000000007ULL;
  OwnerDelivers("n2", 1, 1, topic, 41, stream, "one");
  Flush();
  for (const std::string to : {"a", "b"}) {
    auto d = rec_.Packed(to, mesh::Type::kDeliver);
    ASSERT_EQ(d.size(), 1u) << to;
    EXPECT_EQ(d[0].offset, 41u);
    EXPECT_EQ(d[0].stream, stream);
    EXPECT_EQ(d[0].origin, 1u);
    EXPECT_EQ(d[0].seq, 1u);
  }
  // Kept as a copy of the owner's stream: this node's fetches see it.
  auto copy = router_.history().Find(topic);
  ASSERT_TRUE(copy.has_value());
  EXPECT_EQ(copy->stream, stream);
  EXPECT_EQ(copy->top, 41u);
  EXPECT_EQ(copy->messages, 1u);
  Credit("a", 5);
  Flush();
  EXPECT_TRUE(rec_.Take("a", mesh::Type::kAck).empty()) << "b has not consumed it yet";
  EXPECT_TRUE(peers_.acks["n2"].empty());
  Credit("b", 5);  // its presence snapshot, then the delivery
  Flush();
  auto acks = rec_.Take("a", mesh::Type::kAck);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0].seq, 1u);
  ASSERT_FALSE(peers_.acks["n2"].empty());
  EXPECT_EQ(peers_.acks["n2"].back(), next_seq_["n2"]);
}

TEST_F(RouterOwnerTest, TheOwnerSequencesForAPeerDeliversToTheAskerAndTheInterestedOnce) {
  const std::string topic = TopicOwnedBy("n1");
  Hello("b", 2, {topic});
  PeerWants("n3", {topic});
  Flush();
  ClearLogs();
  auto ask = [&](uint64_t seq) {
    FromPeer("n2", {.type = mesh::Type::kPeerSequence,
                    .seq = seq,
                    .origin = 9,
                    .flags = mesh::kFlagSequenced,
                    .topic = topic,
                    .body = "x" + std::to_string(seq)});
  };
  ask(4);
  Flush();
  auto local = rec_.Packed("b", mesh::Type::kDeliver);
  ASSERT_EQ(local.size(), 1u);
  EXPECT_EQ(local[0].offset, 1u);
  const uint64_t stream = local[0].stream;
  EXPECT_EQ(stream >> 32, NodeStreamTag("n1")) << "tagged with this node";
  for (const std::string peer : {"n2", "n3"}) {
    auto d = peers_.Packed(peer, mesh::Type::kDeliver);
    ASSERT_EQ(d.size(), 1u) << peer << ": the asker although not interested, and n3";
    EXPECT_EQ(d[0].offset, 1u);
    EXPECT_EQ(d[0].stream, stream);
    EXPECT_EQ(d[0].origin, 9u);
    EXPECT_EQ(d[0].seq, 4u);
  }
  // A resend (n2's broker restarted and its shard sent the publish again)
  // keeps its offset; the next publish gets the next one.
  ask(4);
  ask(5);
  Flush();
  auto again = peers_.Packed("n2", mesh::Type::kDeliver);
  ASSERT_EQ(again.size(), 3u);
  EXPECT_EQ(again[1].offset, 1u);
  EXPECT_EQ(again[2].offset, 2u);
  EXPECT_EQ(router_.history().counters().sequenced, 2u);
  EXPECT_EQ(router_.history().counters().resequenced, 1u);
  EXPECT_EQ(router_.counters().sequenced_for_peers, 3u);
}

TEST_F(RouterOwnerTest, ALocalPublishOnAnOwnedTopicReachesInterestedPeersWithItsOffset) {
  const std::string topic = TopicOwnedBy("n1");
  Hello("a", 1, {topic});
  PeerWants("n2", {topic});
  Flush();
  ClearLogs();
  SequencedPublish("a", 1, topic);
  Flush();
  auto d = peers_.Packed("n2", mesh::Type::kDeliver);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].offset, 1u);
  EXPECT_EQ(d[0].flags & mesh::kFlagSequenced, mesh::kFlagSequenced);
  EXPECT_TRUE(peers_.Packed("n3", mesh::Type::kDeliver).empty()) << "not interested";
  EXPECT_TRUE(peers_.Packed("n2", mesh::Type::kPeerSequence).empty());
}

TEST_F(RouterOwnerTest, AnOwnershipMoveStartsANewEpoch) {
  // n2 owns it while up; without n2, n1 does.
  const std::string topic = TopicOwnedBy("n2", {"n1", "n2", "n3"}, "n1", {"n1", "n3"});
  Hello("a", 1, {topic});
  Flush();
  const uint64_t theirs = (uint64_t{NodeStreamTag("n2")} << 32) | 5;
  OwnerDelivers("n2", 77, 1, topic, 10, theirs);
  Flush();
  Credit("a", 10);
  ASSERT_EQ(router_.history().Find(topic)->stream, theirs);
  // n2's link in goes silent: it is not counted, and n1 owns the topic. It
  // cannot know n2's last offset: a new stream of its own, from 1.
  router_.OnPeerInboundDown("n2", now_us_);
  EXPECT_EQ(router_.owner_nodes(), (std::vector<std::string>{"n1", "n3"}));
  EXPECT_EQ(router_.OwnerOf(topic), "n1");
  Flush();
  rec_.log.sent.clear();
  SequencedPublish("a", 1, topic);
  Flush();
  auto d = rec_.Packed("a", mesh::Type::kDeliver);
  ASSERT_EQ(d.size(), 2u) << "n2's, then its own";
  EXPECT_NE(d[1].stream, theirs);
  EXPECT_EQ(d[1].stream >> 32, NodeStreamTag("n1"));
  EXPECT_EQ(d[1].offset, 1u);
  EXPECT_EQ(router_.history().counters().taken_over, 1u);
  // n2 back: it owns the topic again; what n1 sequenced meanwhile is its
  // epoch, and n2's next delivery (a new epoch of n2's) replaces the copy.
  (void)router_.OnPeerHello("n2", 1001, now_us_);
  EXPECT_EQ(router_.OwnerOf(topic), "n2");
  SequencedPublish("a", 2, topic);
  Flush();
  EXPECT_EQ(peers_.Packed("n2", mesh::Type::kPeerSequence).size(), 1u);
}

TEST_F(RouterOwnerTest, ASequencedDeliveryFromANodeThatIsNotTheOwnerIsDropped) {
  // n2 owns it; n3 sends a delivery of its own stream (what it sequenced
  // on its side of a partition, sent as the partition healed).
  const std::string topic = TopicOwnedBy("n2");
  Hello("a", 1, {topic});
  Flush();
  ClearLogs();
  const uint64_t n3s = (uint64_t{NodeStreamTag("n3")} << 32) | 4;
  OwnerDelivers("n3", 50, 1, topic, 7, n3s);
  Flush();
  EXPECT_TRUE(rec_.Packed("a", mesh::Type::kDeliver).empty());
  EXPECT_FALSE(router_.history().Find(topic).has_value()) << "not taken as the topic's stream";
  EXPECT_EQ(router_.counters().sequenced_not_owner, 1u);
  ASSERT_FALSE(peers_.acks["n3"].empty()) << "done at once: n3 does not send it again";
  // The owner's is taken.
  const uint64_t n2s = (uint64_t{NodeStreamTag("n2")} << 32) | 4;
  OwnerDelivers("n2", 60, 1, topic, 3, n2s);
  Flush();
  EXPECT_EQ(rec_.Packed("a", mesh::Type::kDeliver).size(), 1u);
  EXPECT_EQ(router_.history().Find(topic)->stream, n2s);
}

TEST_F(RouterOwnerTest, APublishWaitingOnAnOwnerThatWentIsSequencedByTheNewOne) {
  const std::string mine = TopicOwnedBy("n2", {"n1", "n2", "n3"}, "n1", {"n1", "n3"});
  const std::string n3s = TopicOwnedBy("n2", {"n1", "n2", "n3"}, "n3", {"n1", "n3"});
  Hello("a", 1, {mine});
  Flush();
  SequencedPublish("a", 1, mine, "one");
  SequencedPublish("a", 2, n3s, "two");
  Flush();
  ASSERT_EQ(peers_.Packed("n2", mesh::Type::kPeerSequence).size(), 2u);
  ClearLogs();
  router_.OnPeerInboundDown("n2", now_us_);
  Flush();
  // Now n1's: sequenced here and delivered; n3's: sent to n3.
  auto d = rec_.Packed("a", mesh::Type::kDeliver);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].body, "one");
  EXPECT_EQ(d[0].offset, 1u);
  auto to_n3 = peers_.Packed("n3", mesh::Type::kPeerSequence);
  ASSERT_EQ(to_n3.size(), 1u);
  EXPECT_EQ(to_n3[0].seq, 2u);
  EXPECT_EQ(router_.counters().sequence_forwarded, 3u);
  // Acked up to 1 once consumed (behind its presence snapshot); 2 waits for n3.
  Credit("a", 2);
  Flush();
  auto acks = rec_.Take("a", mesh::Type::kAck);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0].seq, 1u);
}

TEST_F(RouterOwnerTest, AFetchOnARemoteTopicIsAnsweredAfterTheOwnersAnswerIsMerged) {
  const std::string topic = TopicOwnedBy("n3");
  Hello("b", 2, {topic});
  Flush();
  ClearLogs();
  Fetch("b", 42, topic, 1, 10);
  Flush();
  EXPECT_TRUE(rec_.Packed("b", mesh::Type::kHistory).empty()) << "waits for the owner";
  auto asked = peers_.Packed("n3", mesh::Type::kFetch);
  ASSERT_EQ(asked.size(), 1u);
  EXPECT_EQ(asked[0].offset, 1u);
  EXPECT_EQ(asked[0].n, 10u);
  // n3 answers with its position and messages 2..3 (as its router would).
  const uint64_t stream = (uint64_t{NodeStreamTag("n3")} << 32) | 9;
  std::string body;
  for (uint64_t off : {2, 3}) {
    // The message holds views: its body must outlive it.
    const std::string text = "m" + std::to_string(off);
    mesh::Message d{.type = mesh::Type::kDeliver,
                    .seq = off,
                    .origin = 5,
                    .flags = mesh::kFlagSequenced,
                    .topic = topic,
                    .body = text,
                    .offset = off,
                    .stream = stream};
    const std::string packed = mesh::Pack(d);
    const uint32_t n = static_cast<uint32_t>(packed.size());
    for (int i = 0; i < 4; ++i) body.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
    body += packed;
  }
  FromPeer("n3", {.type = mesh::Type::kHistory,
                  .topic = topic,
                  .body = body,
                  .stream = stream,
                  .id = asked[0].id,
                  .top = 3,
                  .first = 1});
  Flush();
  auto h = rec_.Packed("b", mesh::Type::kHistory);
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h[0].id, 42u);
  EXPECT_EQ(h[0].stream, stream);
  EXPECT_EQ(h[0].top, 3u);
  EXPECT_EQ(router_.history().Find(topic)->messages, 2u);
  EXPECT_EQ(router_.counters().fetches_forwarded, 1u);
}

TEST_F(RouterOwnerTest, TheOwnerAnswersAPeersFetchOverThePeerStream) {
  const std::string topic = TopicOwnedBy("n1");
  Hello("a", 1, {topic});
  Flush();
  SequencedPublish("a", 1, topic);
  Flush();
  ClearLogs();
  FromPeer("n2", {.type = mesh::Type::kFetch, .n = 10, .topic = topic, .offset = 0, .id = 7});
  Flush();
  auto h = peers_.Packed("n2", mesh::Type::kHistory);
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h[0].id, 7u);
  EXPECT_EQ(h[0].top, 1u);
  EXPECT_FALSE(h[0].body.empty());
}

TEST_F(RouterOwnerTest, AMemberNeverHeardFromStopsCountingAfterTheLivenessBound) {
  router_.AddPeer("n4");
  EXPECT_EQ(router_.owner_nodes(), (std::vector<std::string>{"n1", "n2", "n3", "n4"}))
      << "presumed up: a broker that just started has heard nobody yet";
  for (int i = 0; i < 8; ++i) {
    now_us_ += 50'000;
    router_.OnTick(now_us_);
  }
  EXPECT_EQ(router_.owner_nodes(), (std::vector<std::string>{"n1", "n2", "n3"}));
  (void)router_.OnPeerHello("n4", 5, now_us_);
  EXPECT_EQ(router_.owner_nodes().size(), 4u);
  router_.RemovePeer("n4", now_us_);
  EXPECT_EQ(router_.owner_nodes().size(), 3u);
}

}  // namespace
}  // namespace sb::broker
