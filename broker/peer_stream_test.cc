#include "broker/peer_stream.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace sb::broker {
namespace {

// What the outbox hands over until it has nothing left: the seqs.
std::vector<uint64_t> Drain(PeerOutbox& out) {
  std::vector<uint64_t> seqs;
  while (const PeerOutbox::Entry* e = out.Next()) {
    seqs.push_back(e->seq);
    out.Sent();
  }
  return seqs;
}

TEST(PeerOutboxTest, NumbersFromOneAndSendsOnlyWhileUp) {
  PeerOutbox out({});
  out.Push("a");
  out.Push("b");
  EXPECT_EQ(out.Next(), nullptr) << "no connection welcomed yet";
  EXPECT_EQ(out.unsent(), 2u);
  out.Resume(0);
  ASSERT_NE(out.Next(), nullptr);
  EXPECT_EQ(out.Next()->packed, "a");
  EXPECT_EQ(Drain(out), (std::vector<uint64_t>{1, 2}));
  out.Push("c");
  EXPECT_EQ(Drain(out), (std::vector<uint64_t>{3}));
  out.Pause();
  out.Push("d");
  EXPECT_EQ(out.Next(), nullptr);
  EXPECT_EQ(out.messages(), 4u) << "nothing acked: everything kept";
  EXPECT_EQ(out.bytes(), 4u);
}

TEST(PeerOutboxTest, AckForgetsAndResumeResendsFromWhatTheReceiverExpects) {
  PeerOutbox out({});
  out.Resume(0);
  for (const char* m : {"1", "2", "3", "4", "5"}) out.Push(m);
  EXPECT_EQ(Drain(out), (std::vector<uint64_t>{1, 2, 3, 4, 5}));
  out.Ack(2);
  EXPECT_EQ(out.messages(), 3u);
  // The connection broke; 3 arrived but its ack did not.
  out.Pause();
  out.Push("6");
  out.Resume(4);
  EXPECT_EQ(Drain(out), (std::vector<uint64_t>{4, 5, 6}));
  EXPECT_EQ(out.messages(), 3u);
  // A receiver that holds nothing of this stream (it restarted) gets all
  // that is kept.
  out.Pause();
  out.Resume(0);
  EXPECT_EQ(Drain(out), (std::vector<uint64_t>{4, 5, 6}));
  // One that expects more than was ever sent is not of this numbering.
  out.Pause();
  out.Resume(100);
  EXPECT_EQ(Drain(out), (std::vector<uint64_t>{4, 5, 6}));
  out.Ack(6);
  EXPECT_EQ(out.messages(), 0u);
  EXPECT_EQ(out.bytes(), 0u);
  EXPECT_EQ(out.last_seq(), 6u);
}

TEST(PeerOutboxTest, PastTheBoundTheOldestGoAndAreCounted) {
  PeerOutbox out({.max_messages = 3, .max_bytes = 1000});
  for (int i = 0; i < 5; ++i) out.Push("m");
  EXPECT_EQ(out.messages(), 3u);
  EXPECT_EQ(out.dropped(), 2u);
  out.Resume(0);
  EXPECT_EQ(Drain(out), (std::vector<uint64_t>{3, 4, 5}));

  PeerOutbox bytes({.max_messages = 100, .max_bytes = 10});
  bytes.Resume(0);
  EXPECT_EQ(bytes.Push("aaaa"), 0u);
  bytes.Sent();  // seq 1 handed over
  EXPECT_EQ(bytes.Push("bbbb"), 0u);
  EXPECT_EQ(bytes.Push("cccc"), 1u) << "12 bytes > 10: seq 1 goes";
  EXPECT_EQ(bytes.bytes(), 8u);
  ASSERT_NE(bytes.Next(), nullptr);
  EXPECT_EQ(bytes.Next()->seq, 2u) << "the next to send is still the first unsent";
  // One message larger than the bound alone is kept: the newest always stays.
  EXPECT_EQ(bytes.Push(std::string(50, 'x')), 2u);
  EXPECT_EQ(bytes.messages(), 1u);
}

TEST(PeerOutboxTest, CreditIsWhatTheBoundStillTakesAndInFlightWhatWasSentUnacked) {
  PeerOutbox out({.max_messages = 10, .max_bytes = 100});
  EXPECT_EQ(out.credit(), 10u) << "empty: the whole message bound";
  for (int i = 0; i < 4; ++i) out.Push("aaaaaaaaaa");  // 10 bytes each
  EXPECT_EQ(out.credit(), 6u) << "40 of 100 bytes, 4 of 10 messages: the message bound first";
  EXPECT_EQ(out.in_flight(), 0u) << "down: nothing handed over";
  out.Resume(0);
  out.Sent();
  out.Sent();
  EXPECT_EQ(out.in_flight(), 2u);
  EXPECT_EQ(out.unsent(), 2u);
  out.Ack(1);
  EXPECT_EQ(out.in_flight(), 1u) << "acked entries are not in flight";
  out.Push(std::string(50, 'x'));  // 80 bytes in 4 entries: 20 each on average
  EXPECT_EQ(out.credit(), 1u) << "20 bytes left at 20 a message: the byte bound first";
  out.Pause();
  EXPECT_EQ(out.in_flight(), 0u) << "a connection lost: what it had goes again";
  PeerOutbox full({.max_messages = 2, .max_bytes = 100});
  for (int i = 0; i < 3; ++i) full.Push("m");
  EXPECT_EQ(full.credit(), 0u);
}

TEST(PeerOutboxTest, ABatchTakesTheNextUnsentUpToItsBoundsAndAtLeastOne) {
  PeerOutbox out({});
  for (const char* p : {"aaaa", "bbbb", "cccc", "dddddddddddd", "e"}) out.Push(p);
  EXPECT_EQ(out.NextBatch(100, 100), 0u) << "down: nothing goes";
  out.Resume(0);
  EXPECT_EQ(out.NextBatch(8, 100), 2u) << "a and b fill 8 bytes; c would pass them";
  EXPECT_EQ(out.NextBatch(100, 2), 2u) << "at most 2 messages";
  EXPECT_EQ(out.NextBatch(3, 100), 1u) << "one larger than the bound still goes, alone";
  ASSERT_NE(out.Unsent(1), nullptr);
  EXPECT_EQ(out.Unsent(1)->seq, 2u);
  EXPECT_EQ(out.Unsent(5), nullptr);
  out.Sent(3);
  EXPECT_EQ(out.Next()->seq, 4u);
  EXPECT_EQ(out.NextBatch(12, 100), 1u) << "d alone is 12 bytes";
  out.Sent(1);
  EXPECT_EQ(out.NextBatch(12, 100), 1u);
  out.Sent(1);
  EXPECT_EQ(out.NextBatch(12, 100), 0u) << "everything sent";
  // A reconnect resends from what the receiver expects, in batches again.
  out.Pause();
  out.Resume(3);
  EXPECT_EQ(out.Next()->seq, 3u);
  EXPECT_EQ(out.NextBatch(100, 100), 3u);
}

TEST(PeerInboxTest, TakesInOrderDropsDuplicatesAndCountsGaps) {
  PeerInbox in;
  bool fresh = false;
  EXPECT_EQ(in.OnHello(7, &fresh), 0u);
  EXPECT_TRUE(fresh);
  EXPECT_FALSE(in.TakeAck().has_value()) << "nothing taken";
  EXPECT_EQ(in.OnData(1), PeerInbox::Verdict::kTake);
  EXPECT_EQ(in.OnData(2), PeerInbox::Verdict::kTake);
  EXPECT_FALSE(in.TakeAck().has_value()) << "taken, not done: not acked";
  in.Done(7, 2);
  EXPECT_FALSE(in.TakeAck().has_value()) << "1 is not done: 2 waits for it";
  in.Done(7, 1);
  EXPECT_EQ(in.TakeAck(), 2u);
  EXPECT_FALSE(in.TakeAck().has_value()) << "once per change";
  EXPECT_EQ(in.open(), 0u);
  // The same sender on a new connection: it resends from the first not done.
  EXPECT_EQ(in.OnHello(7, &fresh), 3u);
  EXPECT_FALSE(fresh);
  EXPECT_EQ(in.OnData(2), PeerInbox::Verdict::kDuplicate);
  EXPECT_EQ(in.duplicates(), 1u);
  EXPECT_EQ(in.TakeAck(), 2u) << "a duplicate is acked again";
  EXPECT_EQ(in.OnData(3), PeerInbox::Verdict::kTake);
  // The sender's outbox overflowed: 4..6 are gone. Taken, the gap counted.
  EXPECT_EQ(in.OnData(7), PeerInbox::Verdict::kTake);
  EXPECT_EQ(in.gaps(), 3u);
  EXPECT_EQ(in.expected(), 8u);
  EXPECT_EQ(in.taken(), 4u);
  in.Done(7, 3);
  in.Done(7, 7);
  in.Done(9, 8);  // another stream's: ignored
  EXPECT_EQ(in.TakeAck(), 7u);
}

TEST(PeerInboxTest, DoneFindsItsMessageAcrossAGapAndOutOfOrder) {
  PeerInbox in;
  bool fresh = false;
  in.OnHello(3, &fresh);
  for (uint64_t seq : {1, 2, 5, 6, 7}) in.OnData(seq);  // 3 and 4: a gap
  in.Done(3, 6);                                        // past the gap: found by search
  in.Done(3, 4);                                        // never taken: ignored
  EXPECT_FALSE(in.TakeAck().has_value()) << "1 is not done";
  in.Done(3, 2);
  in.Done(3, 1);
  EXPECT_EQ(in.TakeAck(), std::optional<uint64_t>(2));
  in.Done(3, 5);  // now the first open one
  EXPECT_EQ(in.TakeAck(), std::optional<uint64_t>(6));
  in.Done(3, 7);
  EXPECT_EQ(in.TakeAck(), std::optional<uint64_t>(7));
  EXPECT_EQ(in.open(), 0u);
}

TEST(PeerInboxTest, ANewIncarnationStartsTheStreamAnew) {
  PeerInbox in;
  bool fresh = false;
  in.OnHello(7, &fresh);
  for (uint64_t s = 1; s <= 5; ++s) in.OnData(s);
  // The sender restarted: its numbering starts again, from whatever it has.
  EXPECT_EQ(in.OnHello(9, &fresh), 0u);
  EXPECT_TRUE(fresh);
  EXPECT_EQ(in.stream(), 9u);
  EXPECT_EQ(in.OnData(1), PeerInbox::Verdict::kTake) << "not a duplicate of the old stream's 1";
  EXPECT_EQ(in.duplicates(), 0u);
  EXPECT_EQ(in.gaps(), 0u);
  // A receiver that restarted takes a sender's resend from its oldest kept.
  PeerInbox fresh_in;
  fresh_in.OnHello(7, &fresh);
  EXPECT_EQ(fresh_in.OnData(40), PeerInbox::Verdict::kTake);
  EXPECT_EQ(fresh_in.gaps(), 0u) << "the first seq of a stream starts it";
  fresh_in.Done(7, 40);
  EXPECT_EQ(fresh_in.TakeAck(), 40u);
  // What the old stream had taken and not done is forgotten with it.
  in.OnHello(11, &fresh);
  in.OnData(1);
  in.Done(9, 1);
  EXPECT_FALSE(in.TakeAck().has_value()) << "the old stream's done is not the new one's";
}

TEST(PeerInboxTest, AWelcomeAsksAgainForWhatIsTakenButNotDone) {
  PeerInbox in;
  bool fresh = false;
  in.OnHello(7, &fresh);
  in.OnData(1);
  in.OnData(2);
  in.Done(7, 1);
  // 2 is queued for a shard that has not consumed it: the sender keeps it.
  EXPECT_EQ(in.OnHello(7, &fresh), 2u);
  EXPECT_EQ(in.OnData(2), PeerInbox::Verdict::kDuplicate) << "taken already: not twice";
  EXPECT_EQ(in.OnData(3), PeerInbox::Verdict::kTake);
  in.Done(7, 2);
  in.Done(7, 3);
  EXPECT_EQ(in.TakeAck(), 3u);
  EXPECT_EQ(in.OnHello(7, &fresh), 4u);
}

// Sender and receiver end to end, across a reconnect that loses what was
// in flight: everything arrives once, in order.
TEST(PeerStreamTest, ExactlyOnceInOrderAcrossAReconnect) {
  PeerOutbox out({});
  PeerInbox in;
  std::vector<std::string> got;
  bool fresh = false;
  out.Resume(in.OnHello(11, &fresh));
  for (int i = 1; i <= 10; ++i) out.Push(std::to_string(i));
  // 1..6 arrive; 7..10 are sent into a connection that breaks.
  for (int i = 0; i < 10; ++i) {
    const PeerOutbox::Entry* e = out.Next();
    if (i < 6 && in.OnData(e->seq) == PeerInbox::Verdict::kTake) {
      got.push_back(e->packed);
      if (e->seq <= 4) in.Done(11, e->seq);  // 5 and 6 are not delivered yet
    }
    out.Sent();
  }
  // The ack of 1..4 came back; then 5 and 6 were delivered, but their ack
  // was lost with the connection.
  out.Ack(*in.TakeAck());
  in.Done(11, 5);
  in.Done(11, 6);
  (void)in.TakeAck();
  out.Pause();
  out.Push("11");
  out.Resume(in.OnHello(11, &fresh));
  while (const PeerOutbox::Entry* e = out.Next()) {
    if (in.OnData(e->seq) == PeerInbox::Verdict::kTake) {
      got.push_back(e->packed);
      in.Done(11, e->seq);
    }
    out.Sent();
  }
  std::vector<std::string> want;
  for (int i = 1; i <= 11; ++i) want.push_back(std::to_string(i));
  EXPECT_EQ(got, want);
  EXPECT_EQ(in.duplicates(), 0u) << "the welcome said 7: 5 and 6 were not sent again";
  out.Ack(*in.TakeAck());
  EXPECT_EQ(out.messages(), 0u);
}

}  // namespace
}  // namespace sb::broker
