// LinkTable: routing ids to link ids, never reused.

#include "broker/link_table.h"

#include <gtest/gtest.h>

namespace sb::broker {
namespace {

TEST(LinkTableTest, AttachGivesNonzeroIdsAndFindsThemBack) {
  LinkTable t;
  auto a = t.Attach("shard.0");
  auto b = t.Attach("node-b");
  EXPECT_TRUE(a.added);
  EXPECT_TRUE(b.added);
  EXPECT_NE(a.id, kNoLink);
  EXPECT_NE(b.id, kNoLink);
  EXPECT_NE(a.id, b.id);
  EXPECT_EQ(t.Find("shard.0"), a.id);
  EXPECT_EQ(t.Find("node-b"), b.id);
  EXPECT_EQ(t.Find("nobody"), kNoLink);
  EXPECT_EQ(*t.RoutingId(a.id), "shard.0");
  EXPECT_EQ(t.size(), 2u);
}

TEST(LinkTableTest, AttachingAnAttachedRoutingIdKeepsItsId) {
  LinkTable t;
  auto a = t.Attach("shard.0");
  auto again = t.Attach("shard.0");
  EXPECT_FALSE(again.added);
  EXPECT_EQ(again.id, a.id);
  EXPECT_EQ(t.size(), 1u);
}

TEST(LinkTableTest, RoutingIdsAreBytesNotCStrings) {
  LinkTable t;
  std::string zmq_id("\0\x80\x00\x41", 4);  // libzmq's generated ids start with a zero byte
  auto a = t.Attach(zmq_id);
  auto b = t.Attach(std::string("\0", 1));
  EXPECT_NE(a.id, b.id);
  EXPECT_EQ(t.Find(zmq_id), a.id);
  EXPECT_EQ(*t.RoutingId(a.id), zmq_id);
}

TEST(LinkTableTest, DetachForgetsAndIdsAreNeverReused) {
  LinkTable t;
  auto a = t.Attach("shard.0");
  EXPECT_TRUE(t.Detach(a.id));
  EXPECT_FALSE(t.Detach(a.id));
  EXPECT_EQ(t.Find("shard.0"), kNoLink);
  EXPECT_EQ(t.RoutingId(a.id), nullptr);
  // The same shard coming back is a new link: state kept anywhere under the
  // old id cannot be mistaken for the new one's.
  auto back = t.Attach("shard.0");
  EXPECT_TRUE(back.added);
  EXPECT_NE(back.id, a.id);
  EXPECT_EQ(t.size(), 1u);
}

TEST(LinkTableTest, RebindKeepsTheIdUnderANewRoutingId) {
  LinkTable t;
  LinkId a = t.Attach("old").id;
  LinkId b = t.Attach("other").id;
  EXPECT_TRUE(t.Rebind(a, "new"));
  EXPECT_EQ(t.Find("new"), a);
  EXPECT_EQ(t.Find("old"), kNoLink);
  EXPECT_EQ(*t.RoutingId(a), "new");
  EXPECT_TRUE(t.Rebind(a, "new"));     // already its own
  EXPECT_FALSE(t.Rebind(a, "other"));  // another link's
  EXPECT_EQ(t.Find("other"), b);
  EXPECT_FALSE(t.Rebind(999, "x"));
  EXPECT_EQ(t.size(), 2u);
}

}  // namespace
}  // namespace sb::broker
