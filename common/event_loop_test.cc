// EventLoop: timers (order, cancel, added from a callback, Cron, lag), the
// BeforeSleep hook, and fd registration, on a real epoll instance.

#include "common/event_loop.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "common/testing/run_loop.h"

namespace sb {
namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;

// Every wait below is on a condition, bounded by this; a correct loop meets
// the condition in a few milliseconds.

class EventLoopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto loop = EventLoop::Create();
    ASSERT_TRUE(loop.ok()) << loop.status().message();
    loop_ = std::move(loop).value();
  }

  bool RunUntil(const std::function<bool()>& cond) { return testing::RunLoopUntil(*loop_, cond); }

  std::unique_ptr<EventLoop> loop_;
};

// A connected pair of stream sockets, closed at the end of the test.
struct SocketPair {
  SocketPair() {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    a.Reset(sv[0]);
    b.Reset(sv[1]);
  }
  UniqueFd a, b;
};

void WriteByte(int fd) { ASSERT_EQ(::write(fd, "x", 1), 1); }

// --- Timers

TEST_F(EventLoopTest, TimersRunInDeadlineOrderAndEqualDeadlinesInAddOrder) {
  std::vector<std::string> ran;
  loop_->AddTimer(milliseconds(3), [&] { ran.push_back("3ms"); });
  loop_->AddTimer(milliseconds(1), [&] { ran.push_back("1ms"); });
  // Two timers added back to back with no delay: the clock may read the same
  // for both, and then the one added first runs first.
  loop_->AddTimer(nanoseconds(0), [&] { ran.push_back("0a"); });
  loop_->AddTimer(nanoseconds(0), [&] { ran.push_back("0b"); });
  loop_->AddTimer(milliseconds(2), [&] { ran.push_back("2ms"); });
  ASSERT_TRUE(RunUntil([&] { return ran.size() == 5; }));
  EXPECT_EQ(ran, (std::vector<std::string>{"0a", "0b", "1ms", "2ms", "3ms"}));
}

TEST_F(EventLoopTest, ATimerRunsNoEarlierThanItsDelay) {
  const MonoTime added = MonoNow();
  MonoTime ran{};
  loop_->AddTimer(milliseconds(20), [&] { ran = MonoNow(); });
  ASSERT_TRUE(RunUntil([&] { return ran != MonoTime{}; }));
  EXPECT_GE(ran - added, milliseconds(20));
}

TEST_F(EventLoopTest, ACancelledTimerNeverRuns) {
  int cancelled = 0, kept = 0;
  EventLoop::TimerId id = loop_->AddTimer(nanoseconds(0), [&] { ++cancelled; });
  loop_->AddTimer(milliseconds(1), [&] { ++kept; });
  loop_->Cancel(id);
  ASSERT_TRUE(RunUntil([&] { return kept == 1; }));
  EXPECT_EQ(cancelled, 0);
  // Cancelling again, or an id that already ran, changes nothing.
  loop_->Cancel(id);
  loop_->Cancel(12345);
}

TEST_F(EventLoopTest, ATimerCanCancelAnotherDueInTheSameTurn) {
  int second = 0;
  EventLoop::TimerId later = 0;
  loop_->AddTimer(nanoseconds(0), [&] { loop_->Cancel(later); });
  later = loop_->AddTimer(nanoseconds(0), [&] { ++second; });
  bool after = false;
  loop_->AddTimer(milliseconds(1), [&] { after = true; });
  ASSERT_TRUE(RunUntil([&] { return after; }));
  EXPECT_EQ(second, 0);
}

TEST_F(EventLoopTest, ATimerAddedFromACallbackRunsOnALaterTurn) {
  int turns = 0;
  loop_->SetBeforeSleep([&] { ++turns; });
  int outer_turn = 0, inner_turn = 0;
  loop_->AddTimer(nanoseconds(0), [&] {
    outer_turn = turns;
    loop_->AddTimer(milliseconds(1), [&] { inner_turn = turns; });
  });
  ASSERT_TRUE(RunUntil([&] { return inner_turn != 0; }));
  EXPECT_GT(inner_turn, outer_turn);
}

TEST_F(EventLoopTest, CronRunsEveryIntervalAndNotSooner) {
  std::vector<MonoTime> ticks;
  const MonoTime start = MonoNow();
  loop_->SetCron(milliseconds(10), [&] { ticks.push_back(MonoNow()); });
  ASSERT_TRUE(RunUntil([&] { return ticks.size() == 4; }));
  EXPECT_GE(ticks[0] - start, milliseconds(10));
  for (size_t i = 1; i < ticks.size(); ++i) {
    EXPECT_GE(ticks[i] - ticks[i - 1], milliseconds(10)) << "tick " << i;
  }
}

TEST_F(EventLoopTest, BeforeSleepRunsOncePerIterationBeforeTheWait) {
  SocketPair p;
  int before_sleep = 0, readable = 0;
  // The hook writes; the wait that follows in the same iteration sees it.
  loop_->SetBeforeSleep([&] {
    ++before_sleep;
    if (before_sleep == 2) WriteByte(p.b.get());
  });
  ASSERT_TRUE(loop_
                  ->Add(p.a.get(), EPOLLIN,
                        [&](uint32_t) {
                          char c;
                          ASSERT_EQ(::read(p.a.get(), &c, 1), 1);
                          ++readable;
                        })
                  .ok());
  loop_->RunOnce(milliseconds(0));
  EXPECT_EQ(before_sleep, 1);
  EXPECT_EQ(readable, 0);
  loop_->RunOnce(milliseconds(5000));
  EXPECT_EQ(before_sleep, 2);
  EXPECT_EQ(readable, 1);
  for (int i = 0; i < 5; ++i) loop_->RunOnce(milliseconds(0));
  EXPECT_EQ(before_sleep, 7);
  EXPECT_EQ(readable, 1);
}

TEST_F(EventLoopTest, LastTimerLagIsHowLateTheLastDueTimerRan) {
  EXPECT_EQ(loop_->last_timer_lag(), nanoseconds(0));
  bool ran = false;
  loop_->AddTimer(nanoseconds(0), [&] { ran = true; });
  // The loop is busy elsewhere for 20 ms after the deadline: the lag shows it.
  const MonoTime busy_until = MonoNow() + milliseconds(20);
  while (MonoNow() < busy_until) {
  }
  loop_->RunOnce(milliseconds(0));
  ASSERT_TRUE(ran);
  EXPECT_GE(loop_->last_timer_lag(), milliseconds(20));
  // A timer run promptly replaces the figure (the lag is the last one's).
  const nanoseconds first = loop_->last_timer_lag();
  bool again = false;
  loop_->AddTimer(milliseconds(1), [&] { again = true; });
  ASSERT_TRUE(RunUntil([&] { return again; }));
  EXPECT_LT(loop_->last_timer_lag(), first);
}

TEST_F(EventLoopTest, RunReturnsTheCodeGivenToStop) {
  loop_->AddTimer(milliseconds(1), [&] { loop_->Stop(7); });
  EXPECT_EQ(loop_->Run(), 7);
}

// --- File descriptors

TEST_F(EventLoopTest, AnAddedFdCallsBackWithItsEvents) {
  SocketPair p;
  uint32_t got = 0;
  ASSERT_TRUE(loop_->Add(p.a.get(), EPOLLIN, [&](uint32_t ev) { got = ev; }).ok());
  loop_->RunOnce(milliseconds(0));
  EXPECT_EQ(got, 0u);
  WriteByte(p.b.get());
  ASSERT_TRUE(RunUntil([&] { return got != 0; }));
  EXPECT_TRUE(got & EPOLLIN);
}

TEST_F(EventLoopTest, ModifyChangesTheEventsWatched) {
  SocketPair p;
  uint32_t got = 0;
  ASSERT_TRUE(loop_->Add(p.a.get(), EPOLLIN, [&](uint32_t ev) { got |= ev; }).ok());
  loop_->RunOnce(milliseconds(0));
  EXPECT_EQ(got, 0u);  // nothing to read
  ASSERT_TRUE(loop_->Modify(p.a.get(), EPOLLOUT).ok());
  ASSERT_TRUE(RunUntil([&] { return got != 0; }));
  EXPECT_EQ(got, static_cast<uint32_t>(EPOLLOUT));  // an empty socket is writable
}

TEST_F(EventLoopTest, ModifyOfAnUnknownFdIsAnError) {
  SocketPair p;
  Status s = loop_->Modify(p.a.get(), EPOLLIN);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Status::Code::kIoError);
}

TEST_F(EventLoopTest, ARemovedFdIsNotCalledAgain) {
  SocketPair p;
  int calls = 0;
  ASSERT_TRUE(loop_->Add(p.a.get(), EPOLLIN, [&](uint32_t) { ++calls; }).ok());
  loop_->Remove(p.a.get());
  WriteByte(p.b.get());
  bool done = false;
  loop_->AddTimer(milliseconds(1), [&] { done = true; });
  ASSERT_TRUE(RunUntil([&] { return done; }));
  EXPECT_EQ(calls, 0);
  loop_->Remove(p.a.get());  // twice, or never added: nothing happens
  // The fd can be added again once removed.
  ASSERT_TRUE(loop_->Add(p.a.get(), EPOLLIN, [&](uint32_t) { ++calls; }).ok());
  ASSERT_TRUE(RunUntil([&] { return calls == 1; }));
}

TEST_F(EventLoopTest, ACallbackCanRemoveItself) {
  SocketPair p;
  WriteByte(p.b.get());
  int calls = 0;
  // The captured string lives in the callback being removed; it must stay
  // valid until the callback returns.
  std::string seen;
  ASSERT_TRUE(loop_
                  ->Add(p.a.get(), EPOLLIN,
                        [&, tag = std::string(64, 'k')](uint32_t) {
                          ++calls;
                          loop_->Remove(p.a.get());
                          seen = tag;
                        })
                  .ok());
  ASSERT_TRUE(RunUntil([&] { return calls == 1; }));
  EXPECT_EQ(seen, std::string(64, 'k'));
  // Still readable (nothing read it), but no longer watched.
  for (int i = 0; i < 3; ++i) loop_->RunOnce(milliseconds(0));
  EXPECT_EQ(calls, 1);
}

TEST_F(EventLoopTest, AnFdRemovedByAnEarlierCallbackOfTheTurnIsNotCalled) {
  SocketPair p, q;
  WriteByte(p.b.get());
  WriteByte(q.b.get());
  int calls = 0;
  // Both are readable in the same turn; whichever runs first removes the other.
  ASSERT_TRUE(loop_
                  ->Add(p.a.get(), EPOLLIN,
                        [&](uint32_t) {
                          ++calls;
                          loop_->Remove(q.a.get());
                        })
                  .ok());
  ASSERT_TRUE(loop_
                  ->Add(q.a.get(), EPOLLIN,
                        [&](uint32_t) {
                          ++calls;
                          loop_->Remove(p.a.get());
                        })
                  .ok());
  loop_->RunOnce(milliseconds(5000));
  EXPECT_EQ(calls, 1);
}

TEST_F(EventLoopTest, ASecondAddOfTheSameFdIsRefusedAndTheFirstStays) {
  SocketPair p;
  int first = 0, second = 0;
  ASSERT_TRUE(loop_->Add(p.a.get(), EPOLLIN, [&](uint32_t) { ++first; }).ok());
  Status s = loop_->Add(p.a.get(), EPOLLIN, [&](uint32_t) { ++second; });
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Status::Code::kIoError);
  EXPECT_NE(s.message().find("epoll_ctl add"), std::string::npos) << s.message();
  WriteByte(p.b.get());
  ASSERT_TRUE(RunUntil([&] { return first == 1; }));
  EXPECT_EQ(second, 0);
}

TEST_F(EventLoopTest, AddOfAnInvalidFdIsAnError) {
  EXPECT_FALSE(loop_->Add(-1, EPOLLIN, [](uint32_t) {}).ok());
  // A regular file cannot be watched by epoll.
  char path[] = "/tmp/sb-event-loop-XXXXXX";
  UniqueFd file(::mkstemp(path));
  ASSERT_TRUE(file.valid());
  ::unlink(path);
  EXPECT_FALSE(loop_->Add(file.get(), EPOLLIN, [](uint32_t) {}).ok());
}

}  // namespace
}  // namespace sb
