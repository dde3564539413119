// ClusterSession: hello and resync, the outbox until acked, duplicate
// suppression, credit once per turn, the broker's liveness — with a fake
// transport and handler, no sockets or clocks.

#include "worker/cluster_session.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "protocol/mesh_testing.h"

namespace sb::worker {
namespace {

using mesh_testing::SentMessage;

class Fake : public ClusterSession::Transport, public ClusterSession::Handler {
 public:
  // Records what the session sends, whichever way (protocol/mesh_testing).
  bool Send(const mesh::Message& msg) override {
    if (!connected) return false;
    if (msg.type == mesh::Type::kFetch) {
      fetches.push_back(std::to_string(msg.id) + " " + std::string(msg.topic) + " after " +
                        std::to_string(msg.offset) + " limit " + std::to_string(msg.n));
    }
    log.Record(msg);
    return true;
  }
  bool SendPacked(std::string_view packed) override {
    if (!connected || packed_budget == 0) return false;
    if (packed_budget > 0) --packed_budget;
    RecordRestates(packed);
    log.RecordPacked(packed);
    return true;
  }
  // The offsets of the kRestate messages in a packed kBatch (the log keeps
  // no offset).
  void RecordRestates(std::string_view packed) {
    std::vector<std::string_view> frames;
    mesh::Message m;
    if (!mesh::Unpack(packed, &frames).ok() || !mesh::Decode(frames, &m).ok()) return;
    if (m.type != mesh::Type::kBatch) return;
    Status s = mesh::ForEachInBatch(m.body, [&](std::span<const std::string_view> inner) {
      mesh::Message one;
      if (mesh::Decode(inner, &one).ok() && one.type == mesh::Type::kRestate) {
        restated.push_back(std::string(one.topic) + "#" + std::to_string(one.offset));
      }
    });
    EXPECT_TRUE(s.ok());
  }
  void ClusterState(std::vector<std::string>* t, std::vector<mesh::TopicState>* p) override {
    *t = topics;
    *p = presence;
  }
  void Deliver(std::string_view topic, std::string_view message, bool binary,
               uint64_t stamp) override {
    delivered.push_back(std::string(topic) + "|" + std::string(message) + (binary ? "|b" : ""));
    stamps.push_back(stamp);
  }
  void RemotePresence(std::string_view topic, std::string_view json, bool snapshot) override {
    remote.push_back(std::string(snapshot ? "state " : "diff ") + std::string(topic) + " " +
                     std::string(json));
  }
  void DeliverSequenced(std::string_view topic, const mesh::Message& m) override {
    sequenced.push_back(std::string(topic) + "|" + std::string(m.body) + "|" +
                        std::to_string(m.offset) + "/" + std::to_string(m.stream));
  }
  void History(const mesh::Message& m) override {
    histories.push_back(std::string(m.topic) + " " + std::to_string(m.id) + " " +
                        std::to_string(m.stream) + " " + std::to_string(m.top) + " " +
                        std::to_string(m.first) + " " + std::to_string(m.body.size()));
  }
  void Welcomed() override { ++welcomed; }
  void SequencedAcked(uint64_t seq) override { sequenced_acked.push_back(seq); }
  void HistoryState(std::vector<mesh::StreamPosition>* p, std::vector<std::string>* r,
                    size_t max_bytes) override {
    *p = positions;
    *r = restates;
    restate_bound = max_bytes;
  }
  std::vector<SentMessage> Of(mesh::Type type) const { return log.Of(type); }

  std::vector<std::string> fetches;    // kFetch sent: "id topic after N limit N"
  int packed_budget = -1;              // packed sends that succeed (-1: all)
  std::vector<std::string> restated;   // "topic#offset" of each kRestate sent
  std::vector<std::string> sequenced;  // DeliverSequenced: "topic|body|offset/stream"
  std::vector<std::string> histories;  // History: "topic id stream top first body-bytes"
  int welcomed = 0;
  std::vector<uint64_t> sequenced_acked;        // SequencedAcked's seqs
  std::vector<mesh::StreamPosition> positions;  // HistoryState's
  std::vector<std::string> restates;            // ... packed kRestate
  size_t restate_bound = 0;                     // the bound it was given

  std::vector<uint64_t> stamps;  // of each delivery, in order
  bool connected = true;
  mesh_testing::SentLog log;
  std::vector<std::string> topics;
  std::vector<mesh::TopicState> presence;
  std::vector<std::string> delivered;
  std::vector<std::string> remote;
};

class ClusterSessionTest : public ::testing::Test {
 protected:
  ClusterSessionTest() : session_(Options(), &fake_, &fake_) {}
  static ClusterOptions Options() {
    ClusterOptions o;
    o.shard = "s1";
    o.instance = 0xabc;
    o.token = "0123456789abcdef0123456789abcdef";
    o.window = 10;
    o.max_outbox_messages = 3;
    o.max_outbox_bytes = 1000;
    o.heartbeat_ms = 100;
    o.misses = 3;
    return o;
  }
  void Receive(const mesh::Message& m) {
    std::vector<std::string> frames = mesh_testing::EncodeFrames(m);
    std::vector<std::string_view> views(frames.begin(), frames.end());
    session_.OnMessage(views, now_);
  }
  void Welcome(uint64_t epoch) { Receive({.type = mesh::Type::kWelcome, .epoch = epoch}); }
  void DeliverSequenced(uint64_t origin, uint64_t seq, const std::string& body, uint64_t offset) {
    Receive({.type = mesh::Type::kDeliver,
             .seq = seq,
             .origin = origin,
             .flags = mesh::kFlagSequenced,
             .topic = "h",
             .body = body,
             .offset = offset,
             .stream = 77});
  }
  void Deliver(uint64_t origin, uint64_t seq, const std::string& body) {
    Receive(
        {.type = mesh::Type::kDeliver, .seq = seq, .origin = origin, .topic = "t", .body = body});
  }

  Fake fake_;
  ClusterSession session_;
  int64_t now_ = 10'000;
};

TEST_F(ClusterSessionTest, HelloCarriesTheWholeStateAndTheWindow) {
  fake_.topics = {"room:1"};
  fake_.presence = {{"room:1", {{"alice", "r1", "{\"phx_ref\":\"r1\"}"}}}};
  session_.Start(now_);
  auto hellos = fake_.Of(mesh::Type::kHello);
  ASSERT_EQ(hellos.size(), 1u);
  Result<mesh::Hello> h = mesh::DecodeHello(hellos[0].body);
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_EQ(h->shard, "s1");
  EXPECT_EQ(h->instance, 0xabcu);
  EXPECT_EQ(h->window, 10u);
  EXPECT_EQ(h->token, "0123456789abcdef0123456789abcdef");
  EXPECT_EQ(h->outbox, 3u);
  EXPECT_EQ(h->acked, 0u);
  EXPECT_EQ(h->heartbeat_ms, 100u);
  EXPECT_EQ(h->topics, std::vector<std::string>{"room:1"});
  ASSERT_EQ(h->presence.size(), 1u);
  EXPECT_EQ(h->presence[0].metas[0].key, "alice");
  EXPECT_FALSE(session_.up());
  Welcome(42);
  EXPECT_TRUE(session_.up());
  EXPECT_EQ(session_.epoch(), 42u);
}

TEST_F(ClusterSessionTest, PublishesAreNumberedKeptUntilAckedAndBounded) {
  session_.Start(now_);
  Welcome(1);
  EXPECT_TRUE(session_.CanPublish(10));
  session_.Publish("t", "m1", false);
  session_.Publish("t", "m2", true);
  EXPECT_TRUE(fake_.Of(mesh::Type::kPublish).empty()) << "sent at the end of the turn";
  session_.Flush();
  auto pubs = fake_.Of(mesh::Type::kPublish);
  ASSERT_EQ(pubs.size(), 2u);
  EXPECT_EQ(fake_.log.batches, 1) << "a turn's publishes in one batch";
  EXPECT_EQ(pubs[0].seq, 1u);
  EXPECT_EQ(pubs[1].seq, 2u);
  session_.Publish("t", "m3", false);
  EXPECT_FALSE(session_.CanPublish(1)) << "three unacked: the outbox is full";
  EXPECT_FALSE(ClusterSession(Options(), &fake_, &fake_).CanPublish(1001)) << "bytes bound";
  Receive({.type = mesh::Type::kAck, .seq = 2});
  EXPECT_EQ(session_.outbox_messages(), 1u);
  EXPECT_TRUE(session_.CanPublish(1));
  EXPECT_EQ(session_.counters().acked, 2u);
}

TEST_F(ClusterSessionTest, ABroadcastOverTheMeshBoundsIsNeverPublished) {
  ClusterOptions o = Options();
  o.max_outbox_bytes = size_t{1} << 30;
  ClusterSession session(o, &fake_, &fake_);
  session.Start(now_);
  EXPECT_TRUE(session.CanPublish(mesh::kMaxBodyBytes));
  EXPECT_FALSE(session.CanPublish(mesh::kMaxBodyBytes + 1));
  session.Publish("t", std::string(mesh::kMaxBodyBytes + 1, 'x'), false);
  session.Publish(std::string(mesh::kMaxTopicBytes + 1, 't'), "x", false);
  EXPECT_EQ(session.outbox_messages(), 0u);
  EXPECT_EQ(session.counters().too_large, 2u);
  EXPECT_EQ(session.counters().published, 0u);
}

TEST_F(ClusterSessionTest, AResetResendsTheHelloAndOnceWelcomedEveryUnackedPublishInOrder) {
  session_.Start(now_);
  Welcome(1);
  for (const char* m : {"a", "b", "c"}) session_.Publish("t", m, false);
  session_.Flush();
  Receive({.type = mesh::Type::kAck, .seq = 1});
  fake_.log.sent.clear();
  Receive({.type = mesh::Type::kReset});
  session_.Flush();
  ASSERT_EQ(fake_.log.sent.size(), 1u);
  EXPECT_EQ(fake_.log.sent[0].type, mesh::Type::kHello);
  EXPECT_EQ(mesh::DecodeHello(fake_.log.sent[0].body)->acked, 1u) << "1 was acked and forgotten";
  Welcome(2);
  EXPECT_EQ(session_.counters().epoch_changes, 1u);
  session_.Flush();
  ASSERT_EQ(fake_.log.sent.size(), 3u);
  EXPECT_EQ(fake_.log.sent[1].seq, 2u);
  EXPECT_EQ(fake_.log.sent[1].body, "b");
  EXPECT_EQ(fake_.log.sent[2].seq, 3u);
}

TEST_F(ClusterSessionTest, AResetStormGetsOneHelloPerIntervalAndNeverTheOutbox) {
  session_.Start(now_);
  Welcome(1);
  for (const char* m : {"a", "b", "c"}) session_.Publish("t", m, false);
  session_.Flush();
  fake_.log.sent.clear();
  // A broker that never welcomes us (say it refuses our hello), answering
  // everything with a reset, a hundred a second, for two seconds; the
  // interval is 100 ms.
  for (int i = 0; i < 200; ++i) {
    now_ += 10;
    Receive({.type = mesh::Type::kReset});
    session_.OnTick(now_);
    session_.Flush();
  }
  EXPECT_TRUE(fake_.Of(mesh::Type::kPublish).empty()) << "no outbox without a welcome";
  EXPECT_LE(fake_.Of(mesh::Type::kHello).size(), 21u) << "one hello per interval";
  EXPECT_GE(fake_.Of(mesh::Type::kHello).size(), 19u) << "and still one per interval";
  Welcome(1);
  session_.Flush();
  EXPECT_EQ(fake_.Of(mesh::Type::kPublish).size(), 3u);
}

TEST_F(ClusterSessionTest, AResetAfterAWelcomeIsNewsAndHelloGoesAtOnce) {
  session_.Start(now_);
  Welcome(1);
  now_ += 10;  // well within the interval of the first hello
  Receive({.type = mesh::Type::kReset});
  EXPECT_EQ(fake_.Of(mesh::Type::kHello).size(), 2u);
}

TEST_F(ClusterSessionTest, PublishesThatCouldNotBeSentGoLaterInOrderNeverSkipped) {
  session_.Start(now_);
  Welcome(1);
  fake_.connected = false;
  session_.Publish("t", "a", false);
  session_.Publish("t", "b", false);
  session_.Flush();
  EXPECT_TRUE(fake_.Of(mesh::Type::kPublish).empty());
  fake_.connected = true;
  session_.Flush();
  auto pubs = fake_.Of(mesh::Type::kPublish);
  ASSERT_EQ(pubs.size(), 2u);
  EXPECT_EQ(pubs[0].body, "a");
  EXPECT_EQ(pubs[1].body, "b");
}

TEST_F(ClusterSessionTest, AStampTravelsWithItsPublishAndReachesTheHandlerWithItsDelivery) {
  session_.Start(now_);
  Welcome(1);
  session_.Publish("t", "m1", false, 1'800'000'000'000'000'000);
  session_.Publish("t", "m2", true);  // the shard's own (no client read): no stamp
  session_.Flush();
  auto pubs = fake_.Of(mesh::Type::kPublish);
  ASSERT_EQ(pubs.size(), 2u);
  EXPECT_EQ(pubs[0].flags, mesh::kFlagStamped);
  EXPECT_EQ(pubs[0].stamp, 1'800'000'000'000'000'000u);
  EXPECT_EQ(pubs[1].flags, mesh::kFlagBinary);
  EXPECT_EQ(pubs[1].stamp, 0u);
  Receive({.type = mesh::Type::kDeliver,
           .seq = 1,
           .origin = 7,
           .flags = mesh::kFlagStamped,
           .stamp = 5,
           .topic = "t",
           .body = "x"});
  Receive({.type = mesh::Type::kDeliver, .seq = 2, .origin = 7, .topic = "t", .body = "y"});
  EXPECT_EQ(fake_.delivered, (std::vector<std::string>{"t|x", "t|y"}));
  EXPECT_EQ(fake_.stamps, (std::vector<uint64_t>{5, 0}));
}

TEST_F(ClusterSessionTest, AKeyedPublishCarriesItsKeyAndEveryHelloRestatesIt) {
  session_.Start(now_);
  Welcome(1);
  session_.Publish("room:1", "m1", false, 0, "order-17", now_);
  session_.Publish("room:1", "m2", false);
  session_.Flush();
  auto pubs = fake_.Of(mesh::Type::kPublish);
  ASSERT_EQ(pubs.size(), 2u);
  EXPECT_EQ(pubs[0].flags, mesh::kFlagKeyed);
  EXPECT_EQ(pubs[0].key, "order-17");
  EXPECT_EQ(pubs[1].flags, 0);
  EXPECT_TRUE(pubs[1].key.empty());
  EXPECT_EQ(session_.keys(), 1u);
  // Acked or not, the key is in the next hello, with its seq and age, so
  // that a new broker knows it.
  Receive({.type = mesh::Type::kAck, .seq = 2});
  now_ += 1500;
  Receive({.type = mesh::Type::kReset});
  auto hellos = fake_.Of(mesh::Type::kHello);
  Result<mesh::Hello> h = mesh::DecodeHello(hellos.back().body);
  ASSERT_TRUE(h.ok()) << h.status().message();
  ASSERT_EQ(h->idempotency.size(), 1u);
  EXPECT_EQ(h->idempotency[0], (mesh::KeyClaim{"order-17", "room:1", 1, 1500}));
  // Forgotten after kKeyTtlMs.
  now_ += mesh::kKeyTtlMs;
  Receive({.type = mesh::Type::kReset});
  hellos = fake_.Of(mesh::Type::kHello);
  h = mesh::DecodeHello(hellos.back().body);
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_TRUE(h->idempotency.empty());
  EXPECT_EQ(session_.keys(), 0u);
}

TEST(ClusterSessionKeysTest, AHelloRestatesTheNewestKeysWithinItsBound) {
  Fake fake;
  ClusterOptions o;
  o.instance = 1;
  o.max_hello_key_bytes = 17;  // two of "k1" + "room", not three
  ClusterSession session(o, &fake, &fake);
  for (const char* k : {"k0", "k1", "k2"}) session.Publish("room", "m", false, 0, k, 5);
  session.Start(5);
  Result<mesh::Hello> h = mesh::DecodeHello(fake.Of(mesh::Type::kHello).back().body);
  ASSERT_TRUE(h.ok()) << h.status().message();
  ASSERT_EQ(h->idempotency.size(), 2u);
  EXPECT_EQ(h->idempotency[0].key, "k1");
  EXPECT_EQ(h->idempotency[1].key, "k2");
  EXPECT_EQ(session.counters().keys_left_out, 1u);
  EXPECT_EQ(session.keys(), 3u) << "kept for the next hello all the same";
}

TEST_F(ClusterSessionTest, ItsOwnKeyedPublishComesBackAsADeliveryOnce) {
  session_.Start(now_);
  Welcome(1);
  session_.Publish("t", "m1", false, 0, "k", now_);
  session_.Flush();
  // The broker routes a keyed publish to its origin too; a re-send after a
  // broker change comes back again and is dropped by origin and seq.
  Deliver(0xabc, 1, "m1");
  Deliver(0xabc, 1, "m1");
  EXPECT_EQ(fake_.delivered, std::vector<std::string>{"t|m1"});
  EXPECT_EQ(session_.counters().duplicates, 1u);
}

TEST_F(ClusterSessionTest, DeliveriesAreDedupedPerOriginAndCreditedOncePerTurn) {
  session_.Start(now_);
  Welcome(1);
  Deliver(7, 1, "x");
  Deliver(7, 2, "y");
  Deliver(7, 2, "y");  // re-sent after a resync
  Deliver(8, 1, "z");  // another origin has its own numbers
  EXPECT_EQ(fake_.delivered, (std::vector<std::string>{"t|x", "t|y", "t|z"}));
  EXPECT_EQ(session_.counters().duplicates, 1u);
  Receive({.type = mesh::Type::kDiff, .topic = "t", .body = "{\"joins\":{},\"leaves\":{}}"});
  EXPECT_TRUE(fake_.Of(mesh::Type::kCredit).empty());
  session_.Flush();
  auto credits = fake_.Of(mesh::Type::kCredit);
  ASSERT_EQ(credits.size(), 1u);
  EXPECT_EQ(credits[0].n, 5u) << "every data message consumed, duplicates included";
  session_.Flush();
  EXPECT_EQ(fake_.Of(mesh::Type::kCredit).size(), 1u);
  EXPECT_EQ(fake_.remote.size(), 1u);
}

TEST_F(ClusterSessionTest, AtMostMaxUnackedPublishesAreSentAndTheRestGoAsAcksComeBack) {
  ClusterOptions o = Options();
  o.max_outbox_messages = 100;
  o.max_unacked = 3;
  ClusterSession s(o, &fake_, &fake_);
  s.Start(now_);
  std::vector<std::string> frames;
  std::vector<std::string_view> views;
  auto receive = [&](const mesh::Message& m) {
    frames = mesh_testing::EncodeFrames(m);
    views.assign(frames.begin(), frames.end());
    s.OnMessage(views, now_);
  };
  receive({.type = mesh::Type::kWelcome, .epoch = 1});
  for (int i = 0; i < 7; ++i) s.Publish("t", "m", false);
  auto seqs = [&] {
    std::vector<uint64_t> out;
    for (const SentMessage& m : fake_.Of(mesh::Type::kPublish)) out.push_back(m.seq);
    fake_.log.sent.clear();
    return out;
  };
  s.Flush();
  EXPECT_EQ(seqs(), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(s.unacked_sent(), 3u);
  s.Flush();
  EXPECT_TRUE(seqs().empty()) << "nothing more until an ack";
  receive({.type = mesh::Type::kAck, .seq = 2});
  s.Flush();
  EXPECT_EQ(seqs(), (std::vector<uint64_t>{4, 5}));
  // A new broker: the outbox goes again from its oldest, in the same windows.
  receive({.type = mesh::Type::kReset});
  receive({.type = mesh::Type::kWelcome, .epoch = 2});
  s.Flush();
  EXPECT_EQ(seqs(), (std::vector<uint64_t>{3, 4, 5}));
  receive({.type = mesh::Type::kAck, .seq = 7});
  s.Flush();
  EXPECT_TRUE(seqs().empty());
  EXPECT_EQ(s.outbox_messages(), 0u);
  EXPECT_EQ(s.unacked_sent(), 0u);
}

TEST_F(ClusterSessionTest, UnackedPublishesAreBoundedInBytesTooButALargeOneStillGoesAlone) {
  ClusterOptions o = Options();
  o.max_outbox_messages = 100;
  o.max_outbox_bytes = 10000;
  o.max_unacked_bytes = 10;  // topic "t" + 4 bytes: two publishes
  ClusterSession s(o, &fake_, &fake_);
  std::vector<std::string> frames;
  std::vector<std::string_view> views;
  auto receive = [&](const mesh::Message& m) {
    frames = mesh_testing::EncodeFrames(m);
    views.assign(frames.begin(), frames.end());
    s.OnMessage(views, now_);
  };
  auto seqs = [&] {
    std::vector<uint64_t> out;
    for (const SentMessage& m : fake_.Of(mesh::Type::kPublish)) out.push_back(m.seq);
    fake_.log.sent.clear();
    return out;
  };
  s.Start(now_);
  receive({.type = mesh::Type::kWelcome, .epoch = 1});
  for (int i = 0; i < 3; ++i) s.Publish("t", "mmmm", false);
  s.Publish("t", std::string(50, 'x'), false);
  s.Publish("t", "mmmm", false);
  s.Flush();
  EXPECT_EQ(seqs(), (std::vector<uint64_t>{1, 2}));
  receive({.type = mesh::Type::kAck, .seq = 2});
  s.Flush();
  EXPECT_EQ(seqs(), (std::vector<uint64_t>{3}));
  receive({.type = mesh::Type::kAck, .seq = 3});
  s.Flush();
  EXPECT_EQ(seqs(), (std::vector<uint64_t>{4})) << "over the bound alone: goes alone";
  receive({.type = mesh::Type::kAck, .seq = 4});
  s.Flush();
  EXPECT_EQ(seqs(), (std::vector<uint64_t>{5}));
}

TEST_F(ClusterSessionTest, TheDedupeTableForgetsTheOriginThatDeliveredLeastRecently) {
  ClusterOptions o = Options();
  o.max_origins = 2;
  ClusterSession s(o, &fake_, &fake_);
  s.Start(now_);
  std::vector<std::string> frames;
  std::vector<std::string_view> views;
  auto deliver = [&](uint64_t origin, uint64_t seq, int64_t at_ms) {
    frames = mesh_testing::EncodeFrames(
        {.type = mesh::Type::kDeliver, .seq = seq, .origin = origin, .topic = "t", .body = "b"});
    views.assign(frames.begin(), frames.end());
    s.OnMessage(views, at_ms);
  };
  deliver(7, 1, 10);
  deliver(8, 1, 20);
  deliver(7, 2, 30);  // 7 delivered more recently than 8 now
  deliver(9, 1, 40);
  EXPECT_EQ(s.origins(), 2u);
  EXPECT_EQ(s.counters().origins_forgotten, 1u);
  deliver(7, 2, 50);
  EXPECT_EQ(s.counters().duplicates, 1u) << "7 is remembered";
  deliver(9, 1, 60);
  EXPECT_EQ(s.counters().duplicates, 2u) << "9 is remembered";
  for (uint64_t origin = 100; origin < 200; ++origin) deliver(origin, 1, 100 + origin);
  EXPECT_EQ(s.origins(), 2u) << "bounded however many origins come and go";
  EXPECT_EQ(s.counters().origins_forgotten, 101u);
}

TEST_F(ClusterSessionTest, ASilentBrokerIsLostAndHelloIsSaidAfterTwoIntervalsThenFour) {
  session_.Start(now_);
  Welcome(1);
  now_ += 301;
  session_.OnTick(now_);
  EXPECT_FALSE(session_.up());
  EXPECT_EQ(session_.counters().broker_lost, 1u);
  EXPECT_EQ(fake_.Of(mesh::Type::kHello).size(), 1u) << "not at once: it may be slow";
  for (int i = 0; i < 7; ++i) session_.OnTick(now_ += 25);
  EXPECT_EQ(fake_.Of(mesh::Type::kHello).size(), 1u);
  session_.OnTick(now_ += 25);  // 2 intervals
  EXPECT_EQ(fake_.Of(mesh::Type::kHello).size(), 2u);
  for (int i = 0; i < 15; ++i) session_.OnTick(now_ += 25);
  EXPECT_EQ(fake_.Of(mesh::Type::kHello).size(), 2u);
  session_.OnTick(now_ += 25);  // 4 more
  EXPECT_EQ(fake_.Of(mesh::Type::kHello).size(), 3u);
}

TEST_F(ClusterSessionTest, ASilentBrokerThatSpeaksAgainAsItselfIsUpWithoutAHello) {
  session_.Start(now_);
  Welcome(1);
  session_.Publish("t", "a", false);
  session_.Flush();
  fake_.log.sent.clear();
  while (session_.up()) session_.OnTick(now_ += 25);
  session_.Publish("t", "b", false);
  session_.Flush();
  EXPECT_TRUE(fake_.Of(mesh::Type::kPublish).empty()) << "held while the broker is silent";
  // Its heartbeat, with the epoch of our welcome: it still has our session.
  Receive({.type = mesh::Type::kHeartbeat, .epoch = 1});
  EXPECT_TRUE(session_.up());
  EXPECT_EQ(session_.counters().broker_back, 1u);
  session_.Flush();
  ASSERT_EQ(fake_.Of(mesh::Type::kPublish).size(), 1u);
  EXPECT_EQ(fake_.Of(mesh::Type::kPublish)[0].body, "b");
  EXPECT_TRUE(fake_.Of(mesh::Type::kHello).empty());
  // Another broker's heartbeat does not bring it back.
  while (session_.up()) session_.OnTick(now_ += 25);
  Receive({.type = mesh::Type::kHeartbeat, .epoch = 2});
  EXPECT_FALSE(session_.up());
  EXPECT_EQ(session_.counters().broker_back, 1u);
}

TEST_F(ClusterSessionTest, AShardAwaitingItsWelcomeSaysHelloAgainAtDoublingIntervals) {
  // A busy broker: its heartbeats (and what it queued before our hello)
  // keep coming, the welcome is behind them. Each hello would make it
  // restate the shard again, so they go at 1, 2, 4 … intervals, not each.
  session_.Start(now_);
  const int64_t start = now_;
  for (int i = 0; i < 160; ++i) {
    now_ += 10;
    Receive({.type = mesh::Type::kHeartbeat, .epoch = 1});
    session_.OnTick(now_);
  }
  // At 0, 100, 300, 700 and 1500 ms (the interval is 100 ms).
  EXPECT_EQ(fake_.Of(mesh::Type::kHello).size(), 5u) << "over " << now_ - start << " ms";
  Welcome(1);
  EXPECT_TRUE(session_.up());
  // Welcomed, the count starts over (ASilentBrokerIsLost… shows the
  // schedule after a loss).
}

TEST_F(ClusterSessionTest, ALateTickIsTheShardsOwnStallNotTheBrokersSilence) {
  session_.Start(now_);
  Welcome(1);
  session_.OnTick(now_);
  // The shard did not run for 2 s (ticks come every 25 ms): what the
  // broker sent meanwhile waits unread.
  now_ += 2000;
  session_.OnTick(now_);
  EXPECT_TRUE(session_.up());
  EXPECT_EQ(session_.counters().broker_lost, 0u);
  // Silence after it counts: 3 intervals of 100 ms less the one the late
  // tick was allowed.
  for (int i = 0; i < 8; ++i) session_.OnTick(now_ += 25);
  EXPECT_TRUE(session_.up());
  session_.OnTick(now_ += 25);
  EXPECT_FALSE(session_.up());
  EXPECT_EQ(session_.counters().broker_lost, 1u);
}

TEST_F(ClusterSessionTest, AHelloThatCouldNotBeSentIsRetriedAtTheNextTick) {
  fake_.connected = false;
  session_.Start(now_);
  EXPECT_TRUE(fake_.Of(mesh::Type::kHello).empty());
  fake_.connected = true;
  session_.OnTick(now_ + 25);
  EXPECT_EQ(fake_.Of(mesh::Type::kHello).size(), 1u);
}

TEST_F(ClusterSessionTest, AHeartbeatFromAnotherEpochMeansANewBroker) {
  session_.Start(now_);
  Welcome(1);
  Receive({.type = mesh::Type::kHeartbeat, .epoch = 1});
  EXPECT_EQ(fake_.Of(mesh::Type::kHello).size(), 1u);
  Receive({.type = mesh::Type::kHeartbeat, .epoch = 9});
  EXPECT_EQ(fake_.Of(mesh::Type::kHello).size(), 2u);
}

TEST_F(ClusterSessionTest, ANewConnectionIsHelloAtOnceAndTheCrossingResetCostsNoOther) {
  session_.Start(now_);
  Welcome(1);
  for (const char* m : {"a", "b"}) session_.Publish("t", m, false);
  session_.Flush();
  fake_.log.sent.clear();
  // The broker is killed and a new one is up: the transport reconnects,
  // well within a heartbeat interval.
  now_ += 7;
  session_.OnConnected(now_);
  EXPECT_EQ(session_.counters().connects, 1u);
  EXPECT_FALSE(session_.up());
  ASSERT_EQ(fake_.Of(mesh::Type::kHello).size(), 1u);
  // A heartbeat the shard sent before it read the news is answered with a
  // reset, which crosses the hello: no second hello for it.
  now_ += 1;
  Receive({.type = mesh::Type::kReset});
  session_.OnTick(now_);
  session_.Flush();
  EXPECT_EQ(fake_.Of(mesh::Type::kHello).size(), 1u);
  EXPECT_TRUE(fake_.Of(mesh::Type::kPublish).empty()) << "not before the new broker's welcome";
  Welcome(2);
  session_.Flush();
  EXPECT_EQ(fake_.Of(mesh::Type::kPublish).size(), 2u) << "the unacked outbox, once welcomed";
}

TEST_F(ClusterSessionTest, TheLastMemberListIsKeptAndSentInEveryHello) {
  session_.Start(now_);
  EXPECT_TRUE(mesh::DecodeHello(fake_.Of(mesh::Type::kHello)[0].body)->members.empty())
      << "a fresh shard knows nobody";
  Welcome(1);
  std::string body = mesh::EncodeMembers({"s0", "s1", "s2"});
  Receive({.type = mesh::Type::kMembers, .body = body});
  EXPECT_EQ(session_.members(), (std::vector<std::string>{"s0", "s1", "s2"}));
  // A list that does not decode changes nothing.
  std::string bad = R"({"members":[1]})";
  Receive({.type = mesh::Type::kMembers, .body = bad});
  EXPECT_EQ(session_.counters().bad_frames, 1u);
  EXPECT_EQ(session_.members().size(), 3u);
  session_.OnConnected(now_);
  auto hellos = fake_.Of(mesh::Type::kHello);
  ASSERT_EQ(hellos.size(), 2u);
  EXPECT_EQ(mesh::DecodeHello(hellos[1].body)->members,
            (std::vector<std::string>{"s0", "s1", "s2"}));
}

TEST_F(ClusterSessionTest, GarbageFromTheBrokerIsCountedAndIgnored) {
  session_.Start(now_);
  std::vector<std::string_view> frames = {"nope"};
  session_.OnMessage(frames, now_);
  Receive({.type = mesh::Type::kPublish, .seq = 1, .topic = "t", .body = "x"});
  EXPECT_EQ(session_.counters().bad_frames, 2u);
  EXPECT_TRUE(fake_.delivered.empty());
}

TEST_F(ClusterSessionTest, ABatchFromTheBrokerIsHandledMessageByMessage) {
  session_.Start(now_);
  mesh::BatchWriter w;
  w.Add(mesh::Pack({.type = mesh::Type::kWelcome, .epoch = 5}));
  w.Add(
      mesh::Pack({.type = mesh::Type::kDeliver, .seq = 1, .origin = 3, .topic = "t", .body = "x"}));
  w.Add(
      mesh::Pack({.type = mesh::Type::kDeliver, .seq = 2, .origin = 3, .topic = "t", .body = "y"}));
  std::string packed(w.Finish());
  std::vector<std::string_view> frames;
  ASSERT_TRUE(mesh::Unpack(packed, &frames).ok());
  session_.OnMessage(frames, now_);
  EXPECT_TRUE(session_.up());
  EXPECT_EQ(fake_.delivered, (std::vector<std::string>{"t|x", "t|y"}));
  session_.Flush();
  ASSERT_EQ(fake_.Of(mesh::Type::kCredit).size(), 1u);
  EXPECT_EQ(fake_.Of(mesh::Type::kCredit)[0].n, 2u);
}

}  // namespace
}  // namespace sb::worker

namespace sb::worker {
namespace {

std::string Restate(uint64_t offset, size_t bytes = 2) {
  return mesh::Pack({.type = mesh::Type::kRestate,
                     .seq = offset,
                     .origin = 5,
                     .flags = mesh::kFlagSequenced,
                     .topic = "h",
                     .body = std::string(bytes, 'x'),
                     .offset = offset,
                     .stream = 77});
}

TEST_F(ClusterSessionTest, APublishOnAHistoryTopicIsSequenced) {
  session_.Start(now_);
  Welcome(1);
  session_.Publish("h", "m1", false, 0, {}, now_, /*sequenced=*/true);
  session_.Publish("t", "m2", false);
  session_.Flush();
  auto pubs = fake_.Of(mesh::Type::kPublish);
  ASSERT_EQ(pubs.size(), 2u);
  EXPECT_EQ(pubs[0].flags, mesh::kFlagSequenced);
  EXPECT_EQ(pubs[1].flags, 0u);
}

TEST_F(ClusterSessionTest, TheAckOfASequencedPublishIsReportedByItsSeq) {
  session_.Start(now_);
  Welcome(1);
  const uint64_t first = session_.Publish("h", "m1", false, 0, {}, now_, /*sequenced=*/true);
  const uint64_t second = session_.Publish("t", "m2", false);
  const uint64_t third = session_.Publish("h", "m3", false, 0, {}, now_, /*sequenced=*/true);
  EXPECT_EQ(first, 1u);
  EXPECT_EQ(second, 2u);
  EXPECT_EQ(third, 3u);
  EXPECT_EQ(session_.Publish(std::string(mesh::kMaxTopicBytes + 1, 't'), "x", false), 0u)
      << "not published: no seq";
  session_.Flush();
  Receive({.type = mesh::Type::kAck, .seq = 2});
  EXPECT_EQ(fake_.sequenced_acked, std::vector<uint64_t>{1});
  Receive({.type = mesh::Type::kAck, .seq = 3});
  EXPECT_EQ(fake_.sequenced_acked, (std::vector<uint64_t>{1, 3}));
}

TEST_F(ClusterSessionTest, SequencedDeliveriesGoToTheStreamsRepeatsAndOwnIncluded) {
  session_.Start(now_);
  Welcome(1);
  session_.Publish("h", "mine", false, 0, {}, now_, true);
  session_.Flush();
  // Its own comes back (the origin answers its client's push with the offset);
  // a re-send after a broker restart comes again with the same offset: the
  // stream, not the origin table, drops it.
  DeliverSequenced(0xabc, 1, "mine", 4);
  DeliverSequenced(0xabc, 1, "mine", 4);
  DeliverSequenced(7, 9, "x", 5);
  EXPECT_EQ(fake_.sequenced, (std::vector<std::string>{"h|mine|4/77", "h|mine|4/77", "h|x|5/77"}));
  EXPECT_TRUE(fake_.delivered.empty());
  EXPECT_EQ(session_.counters().sequenced, 3u);
  EXPECT_EQ(session_.counters().duplicates, 0u);
  // The origin table is left alone: origin 7's plain deliveries are judged by
  // its plain seqs.
  EXPECT_EQ(session_.origins(), 0u);
  Deliver(7, 3, "y");
  EXPECT_EQ(fake_.delivered, std::vector<std::string>{"t|y"});
  session_.Flush();
  auto credits = fake_.Of(mesh::Type::kCredit);
  ASSERT_EQ(credits.size(), 1u);
  EXPECT_EQ(credits[0].n, 4u) << "sequenced deliveries are data messages";
}

TEST_F(ClusterSessionTest, AHistoryAnswerGoesToTheHandlerAndIsCreditedLikeADelivery) {
  session_.Start(now_);
  Welcome(1);
  Receive(
      {.type = mesh::Type::kHistory, .topic = "h", .stream = 77, .id = 3, .top = 9, .first = 2});
  Receive({.type = mesh::Type::kHistory,
           .topic = "h",
           .body = "abcd",
           .stream = 77,
           .id = 4,
           .top = 9,
           .first = 2});
  EXPECT_EQ(fake_.histories, (std::vector<std::string>{"h 3 77 9 2 0", "h 4 77 9 2 4"}));
  EXPECT_EQ(session_.counters().histories, 2u);
  session_.Flush();
  // The broker queues a kHistory under the shard's credit.
  auto credits = fake_.Of(mesh::Type::kCredit);
  ASSERT_EQ(credits.size(), 1u);
  EXPECT_EQ(credits[0].n, 2u);
}

TEST_F(ClusterSessionTest, AFetchGoesOnlyToABrokerThatWelcomedUsAndAWelcomeIsReported) {
  session_.Start(now_);
  EXPECT_FALSE(session_.Fetch(1, "h", 0, 0)) << "not welcomed";
  EXPECT_EQ(fake_.welcomed, 0);
  Welcome(1);
  EXPECT_EQ(fake_.welcomed, 1);
  EXPECT_TRUE(session_.Fetch(1, "h", 3, 5));
  EXPECT_EQ(fake_.fetches, std::vector<std::string>{"1 h after 3 limit 5"});
  fake_.connected = false;
  EXPECT_FALSE(session_.Fetch(2, "h", 0, 0)) << "no connection";
  EXPECT_EQ(session_.counters().fetches, 1u);
  fake_.connected = true;
  Receive({.type = mesh::Type::kReset});
  Welcome(2);
  EXPECT_EQ(fake_.welcomed, 2) << "every welcome: the shard re-sends what is unanswered";
}

TEST_F(ClusterSessionTest, TheHelloNamesTheStreamsAndTheRestatesFollowItInBatches) {
  fake_.positions = {{"h", 77, 3}};
  // Three of 40 KiB: two batches (one is cut at mesh::kBatchBytes).
  fake_.restates = {Restate(3, 40 << 10), Restate(2, 40 << 10), Restate(1, 40 << 10)};
  session_.Start(now_);
  EXPECT_EQ(fake_.restate_bound, size_t{16} << 20) << "the default bound";
  auto hellos = fake_.Of(mesh::Type::kHello);
  ASSERT_EQ(hellos.size(), 1u);
  Result<mesh::Hello> h = mesh::DecodeHello(hellos[0].body);
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_EQ(h->history, fake_.positions);
  EXPECT_EQ(h->restate, 3u);
  EXPECT_EQ(fake_.restated, (std::vector<std::string>{"h#3", "h#2", "h#1"}));
  EXPECT_EQ(fake_.log.batches, 2);
  ASSERT_EQ(fake_.log.sent.size(), 4u);
  EXPECT_EQ(fake_.log.sent[0].type, mesh::Type::kHello) << "the hello first";
  EXPECT_EQ(session_.counters().restated, 3u);
}

TEST_F(ClusterSessionTest, RestatesThatCouldNotAllBeSentMakeTheNextTickSayHelloAgain) {
  fake_.positions = {{"h", 77, 3}};
  fake_.restates = {Restate(3, 40 << 10), Restate(2, 40 << 10), Restate(1, 40 << 10)};
  fake_.packed_budget = 1;  // the connection goes after the first batch
  session_.Start(now_);
  EXPECT_EQ(fake_.restated.size(), 2u);
  EXPECT_EQ(session_.counters().restated, 0u);
  fake_.packed_budget = -1;
  now_ += 100;
  session_.OnTick(now_);
  ASSERT_EQ(fake_.Of(mesh::Type::kHello).size(), 2u);
  EXPECT_EQ(fake_.restated.size(), 5u) << "all of them again after the second hello";
  EXPECT_EQ(session_.counters().restated, 3u);
}

TEST_F(ClusterSessionTest, AHelloThatCouldNotBeSentSendsNoRestate) {
  fake_.positions = {{"h", 77, 1}};
  fake_.restates = {Restate(1)};
  fake_.connected = false;
  session_.Start(now_);
  EXPECT_TRUE(fake_.restated.empty());
  fake_.connected = true;
  now_ += 100;
  session_.OnTick(now_);
  EXPECT_EQ(fake_.restated, std::vector<std::string>{"h#1"});
}

TEST(ClusterSessionRestateTest, TheBoundIsTheOptions) {
  Fake fake;
  ClusterOptions o;
  o.instance = 1;
  o.max_restate_bytes = 1234;
  ClusterSession session(o, &fake, &fake);
  session.Start(0);
  EXPECT_EQ(fake.restate_bound, 1234u);
}

// A hand-off (docs/UPGRADE.md): the old session's state, through its
// encoding, makes a new session that says hello as the old one did, re-sends
// the same outbox and drops what the old one delivered.
TEST_F(ClusterSessionTest, AnImportedSessionGoesOnWhereTheOldOneWas) {
  session_.Start(now_);
  Welcome(9);
  std::string members = mesh::EncodeMembers({"s0", "s1"});
  Receive({.type = mesh::Type::kMembers, .body = members});
  session_.Publish("t", "m1", false, 111);
  session_.Publish("u", "m2", true, 0, "key-1", now_);
  session_.Flush();
  Receive({.type = mesh::Type::kAck, .seq = 1});
  session_.Publish("t", "m3", false);
  Deliver(7, 5, "d5");
  ASSERT_EQ(fake_.delivered.size(), 1u);

  handoff::Session state;
  session_.Export(&state);
  EXPECT_EQ(state.instance, 0xabcu);
  EXPECT_EQ(state.next_seq, 4u);
  ASSERT_EQ(state.outbox.size(), 2u);
  Result<std::string> record = handoff::EncodeSession(state);
  ASSERT_TRUE(record.ok()) << record.status().message();
  Result<handoff::Session> decoded = handoff::DecodeSession(record.value());
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();

  Fake fake;
  ClusterOptions options = Options();
  options.shard = decoded->shard;
  options.instance = decoded->instance;
  options.token = decoded->token;
  ClusterSession next(options, &fake, &fake);
  ASSERT_TRUE(next.Import(decoded.value()).ok());
  handoff::Session again;
  next.Export(&again);
  EXPECT_EQ(again, state);
  EXPECT_EQ(next.outbox_messages(), 2u);
  EXPECT_EQ(next.outbox_bytes(), session_.outbox_bytes());
  EXPECT_EQ(next.keys(), 1u);

  next.Start(now_);
  auto hellos = fake.Of(mesh::Type::kHello);
  ASSERT_EQ(hellos.size(), 1u);
  Result<mesh::Hello> h = mesh::DecodeHello(hellos[0].body);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->instance, 0xabcu);
  EXPECT_EQ(h->token, Options().token);
  EXPECT_EQ(h->acked, 1u);
  EXPECT_EQ(h->members, (std::vector<std::string>{"s0", "s1"}));
  ASSERT_EQ(h->idempotency.size(), 1u);
  EXPECT_EQ(h->idempotency[0].key, "key-1");
  EXPECT_EQ(h->idempotency[0].seq, 2u);

  std::vector<std::string> frames =
      mesh_testing::EncodeFrames({.type = mesh::Type::kWelcome, .epoch = 9});
  std::vector<std::string_view> views(frames.begin(), frames.end());
  next.OnMessage(views, now_);
  next.Flush();
  auto pubs = fake.Of(mesh::Type::kPublish);
  ASSERT_EQ(pubs.size(), 2u);
  EXPECT_EQ(pubs[0].seq, 2u);
  EXPECT_EQ(pubs[0].topic, "u");
  EXPECT_EQ(pubs[0].body, "m2");
  EXPECT_EQ(pubs[0].key, "key-1");
  EXPECT_EQ(pubs[0].flags, mesh::kFlagBinary | mesh::kFlagKeyed);
  EXPECT_EQ(pubs[1].seq, 3u);
  EXPECT_EQ(pubs[1].body, "m3");
  EXPECT_EQ(next.Publish("t", "m4", false), 4u);

  // The delivery the old process handed over is a duplicate here.
  for (uint64_t seq : {5, 6}) {
    frames = mesh_testing::EncodeFrames(
        {.type = mesh::Type::kDeliver, .seq = seq, .origin = 7, .topic = "t", .body = "d"});
    views.assign(frames.begin(), frames.end());
    next.OnMessage(views, now_);
  }
  EXPECT_EQ(fake.delivered.size(), 1u);
  EXPECT_EQ(next.counters().duplicates, 1u);
}

TEST_F(ClusterSessionTest, AnImportThatDoesNotFitChangesNothing) {
  handoff::Session state;
  state.shard = "s1";
  state.instance = 0xabc;
  state.token = Options().token;
  state.next_seq = 3;
  state.outbox.push_back({.seq = 3, .topic = "t", .message = "m"});
  EXPECT_FALSE(session_.Import(state).ok()) << "a seq not below the next";
  state.outbox[0].seq = 2;
  state.instance = 0xabd;
  EXPECT_FALSE(session_.Import(state).ok()) << "another identity";
  EXPECT_EQ(session_.outbox_messages(), 0u);
  state.instance = 0xabc;
  session_.Start(now_);
  EXPECT_FALSE(session_.Import(state).ok()) << "after Start";
  EXPECT_EQ(session_.outbox_messages(), 0u);
}

}  // namespace
}  // namespace sb::worker
