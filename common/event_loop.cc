#include "common/event_loop.h"

#include <errno.h>
#include <string.h>

#include <string>

namespace sb {

Result<std::unique_ptr<EventLoop>> EventLoop::Create() {
  int fd = ::epoll_create1(EPOLL_CLOEXEC);
  if (fd < 0) return Status::IoError(std::string("epoll_create1: ") + strerror(errno));
  std::unique_ptr<EventLoop> loop(new EventLoop());
  loop->epfd_.Reset(fd);
  return loop;
}

Status EventLoop::Add(int fd, uint32_t events, FdCallback cb) {
  if (Status s = Prewatch(fd, events); !s.ok()) return s;
  Attach(fd, std::move(cb));
  return Status::Ok();
}

Status EventLoop::Prewatch(int fd, uint32_t events) const {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (::epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, fd, &ev) < 0) {
    return Status::IoError(std::string("epoll_ctl add: ") + strerror(errno));
  }
  return Status::Ok();
}

void EventLoop::Attach(int fd, FdCallback cb) {
  fds_[fd] = std::make_shared<FdCallback>(std::move(cb));
}

void EventLoop::Unwatch(int fd) const { ::epoll_ctl(epfd_.get(), EPOLL_CTL_DEL, fd, nullptr); }

Status EventLoop::Modify(int fd, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (::epoll_ctl(epfd_.get(), EPOLL_CTL_MOD, fd, &ev) < 0) {
    return Status::IoError(std::string("epoll_ctl mod: ") + strerror(errno));
  }
  return Status::Ok();
}

void EventLoop::Remove(int fd) {
  if (fds_.erase(fd) > 0) ::epoll_ctl(epfd_.get(), EPOLL_CTL_DEL, fd, nullptr);
}

EventLoop::TimerId EventLoop::AddTimer(std::chrono::nanoseconds delay, std::function<void()> cb) {
  TimerId id = next_timer_++;
  timers_.push(Timer{Clock::now() + delay, id});
  timer_cbs_.emplace(id, std::move(cb));
  return id;
}

// Cancelled timers stay in the heap and are skipped when they come due: O(1)
// cancel, and the heap never holds more than the timers armed in one period.
void EventLoop::Cancel(TimerId id) { timer_cbs_.erase(id); }

void EventLoop::SetCron(std::chrono::milliseconds interval, std::function<void()> hook) {
  cron_ = std::move(hook);
  cron_interval_ = interval;
  ScheduleCron();
}

void EventLoop::ScheduleCron() {
  if (!cron_ || cron_interval_.count() <= 0) return;
  AddTimer(cron_interval_, [this] {
    cron_();
    ScheduleCron();
  });
}

void EventLoop::RunDueTimers() {
  auto now = Clock::now();
  while (!timers_.empty() && timers_.top().when <= now) {
    Timer t = timers_.top();
    timers_.pop();
    auto it = timer_cbs_.find(t.id);
    if (it == timer_cbs_.end()) continue;
    auto cb = std::move(it->second);
    timer_cbs_.erase(it);
    last_lag_ = now - t.when;
    cb();
  }
}

void EventLoop::RunOnce(std::chrono::milliseconds max_wait) {
  if (before_sleep_) before_sleep_();
  int timeout_ms = static_cast<int>(max_wait.count());
  // Drop cancelled timers from the top so they do not shorten the wait.
  while (!timers_.empty() && !timer_cbs_.contains(timers_.top().id)) timers_.pop();
  if (!timers_.empty()) {
    auto until = timers_.top().when - Clock::now();
    // Round up: waking a little late is fine, spinning on a 0 ms wait is not.
    auto ms = std::chrono::ceil<std::chrono::milliseconds>(until).count();
    if (ms < 0) ms = 0;
    if (timeout_ms < 0 || ms < timeout_ms) timeout_ms = static_cast<int>(ms);
  }
  epoll_event events[64];
  int n = ::epoll_wait(epfd_.get(), events, 64, timeout_ms);
  for (int i = 0; i < n; ++i) {
    auto it = fds_.find(events[i].data.fd);
    if (it == fds_.end()) continue;  // removed by an earlier callback this turn
    auto cb = it->second;
    (*cb)(events[i].events);
  }
  RunDueTimers();
}

int EventLoop::Run() {
  stop_ = false;
  while (!stop_) RunOnce(std::chrono::milliseconds(-1));
  return stop_code_;
}

}  // namespace sb
