// RateLimiter: a token bucket for one socket's inbound messages.
//
// Owns: the bucket's fill level and when it was last refilled. Pure: the
// caller passes monotonic milliseconds in, so tests drive time directly. Does
// not: decide what happens to a refused message (worker/hub answers it).
// One exists per socket, so it stays four words; the hub owns it inside the
// socket's state and runs on the shard's loop thread.
#pragma once

#include <cstdint>

namespace sb::worker {

class RateLimiter {
 public:
  // `rate_per_second` <= 0 disables limiting. `burst` is the bucket size
  // (at least 1 message); the bucket starts full.
  RateLimiter(double rate_per_second, double burst);

  // Takes one token if there is one. Time that goes backwards refills
  // nothing (and is not remembered), so a clock step cannot mint tokens.
  bool Allow(int64_t now_ms);

  // The bucket as it is, for a hand-off to a new process (docs/UPGRADE.md);
  // Restore puts it back. The rate and burst stay this limiter's own (the new
  // process's options); tokens beyond its burst are capped, negative or
  // non-finite ones read as an empty bucket.
  struct State {
    double tokens = 0;
    int64_t last_ms = 0;
  };
  State state() const { return {tokens_, last_ms_}; }
  void Restore(State state);

 private:
  double rate_per_ms_;
  double burst_;
  double tokens_;
  int64_t last_ms_ = 0;
};

static_assert(sizeof(RateLimiter) <= 32, "RateLimiter lives in every socket's state");

}  // namespace sb::worker
