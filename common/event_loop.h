// EventLoop: the one loop of a Switchboard process (epoll, single thread).
//
// Owns: an epoll instance, the callbacks registered for fds, one-shot timers
// (a min-heap; epoll_wait's timeout is the nearest deadline, so there is no
// timerfd per timer and no polling), and two hooks named after Redis's:
// BeforeSleep() runs once per iteration right before blocking (coalesced
// writes go there) and Cron() runs every `cron_interval`. Does not: own the
// fds it watches (callers close them after Remove), or run callbacks on any
// other thread. Callbacks may add/remove fds and timers, including their own.
#pragma once

#include <sys/epoll.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <queue>
#include <unordered_map>
#include <vector>

#include "common/mono_time.h"
#include "common/status.h"
#include "common/unique_fd.h"

namespace sb {

class EventLoop {
 public:
  using Clock = MonoClock;
  using FdCallback = std::function<void(uint32_t epoll_events)>;
  using TimerId = uint64_t;

  static Result<std::unique_ptr<EventLoop>> Create();

  // Watches `fd` for `events` (EPOLLIN, EPOLLOUT, ...). One registration per fd.
  Status Add(int fd, uint32_t events, FdCallback cb);
  Status Modify(int fd, uint32_t events);
  void Remove(int fd);

  // Add in two halves, for a thread that receives fds while this one takes
  // them (a shard's hand-off: registering 10,000 sockets with epoll is the
  // largest single cost of taking them over). Prewatch is the one call any
  // thread may make (it is an epoll_ctl, which the kernel serializes); the
  // loop dispatches nothing for the fd until Attach gives it a callback, so
  // the loop must not run while a prewatched fd waits (level-triggered
  // readiness would be reported on every turn). Unwatch undoes a Prewatch
  // that will not be attached: epoll forgets an fd only when its open file
  // is closed everywhere, and a hand-off's old process still holds it.
  Status Prewatch(int fd, uint32_t events) const;
  void Attach(int fd, FdCallback cb);
  void Unwatch(int fd) const;

  // Runs `cb` once at or after `delay` from now. Returns an id for Cancel.
  TimerId AddTimer(std::chrono::nanoseconds delay, std::function<void()> cb);
  void Cancel(TimerId id);

  void SetBeforeSleep(std::function<void()> hook) { before_sleep_ = std::move(hook); }
  void SetCron(std::chrono::milliseconds interval, std::function<void()> hook);

  // Runs until Stop() is called. Returns the value passed to Stop().
  int Run();
  void Stop(int code) {
    stop_ = true;
    stop_code_ = code;
  }
  // One iteration: wait at most `max_wait` for events, dispatch them and due timers.
  void RunOnce(std::chrono::milliseconds max_wait);

  // The loop's lag: how late the last due timer ran compared with its deadline.
  std::chrono::nanoseconds last_timer_lag() const { return last_lag_; }

 private:
  EventLoop() = default;
  struct Timer {
    Clock::time_point when;
    TimerId id;
    bool operator>(const Timer& o) const { return when > o.when || (when == o.when && id > o.id); }
  };
  void RunDueTimers();
  void ScheduleCron();

  UniqueFd epfd_;
  // Callbacks are held by shared_ptr so one can remove itself while running.
  std::unordered_map<int, std::shared_ptr<FdCallback>> fds_;
  std::priority_queue<Timer, std::vector<Timer>, std::greater<>> timers_;
  std::unordered_map<TimerId, std::function<void()>> timer_cbs_;
  TimerId next_timer_ = 1;
  std::function<void()> before_sleep_;
  std::function<void()> cron_;
  std::chrono::milliseconds cron_interval_{0};
  bool stop_ = false;
  int stop_code_ = 0;
  std::chrono::nanoseconds last_lag_{0};
};

}  // namespace sb
