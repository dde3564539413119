// MetricsEndpoint: a process's Prometheus HTTP endpoint (prometheus-cpp's
// Exposer, which runs civetweb).
//
// Owns: the listener and its threads (civetweb's listener plus
// `num_threads` workers, started by Create and joined by the destructor),
// error messages that name the real reason a bind failed, and a prompt stop.
// The threads only read registered collectables to answer scrapes; the
// caller's loop thread updates metrics (prometheus-cpp metrics are atomic).
// Does not: define any metric (callers register their own registries or
// collectables; names live in common/metric_names.h).
#pragma once

#include <memory>
#include <string>

#include "common/status.h"

namespace prometheus {
class Collectable;
}

namespace sb {

class MetricsEndpoint {
 public:
  // Listens on `listen` ("host:port" or "[v6]:port"; port 0 = any free
  // port). Call after blocking the signals the program reads through a
  // signalfd: the new threads inherit the caller's signal mask. Every fd it
  // opens is close-on-exec. Fails with "unable to listen for metrics on
  // host:port: <why>" (Debian 12's civetweb is built without IPv6, so
  // "[::1]:p" fails too, saying so).
  static Result<std::unique_ptr<MetricsEndpoint>> Create(const std::string& listen,
                                                         int num_threads = 2);
  // Stops and joins the HTTP threads. It briefly runs one more thread that
  // connects to the listener, so civetweb notices the stop at once instead of
  // after its 2 s poll timeout.
  ~MetricsEndpoint();

  // Serves `c` on /metrics for as long as it lives.
  void Register(const std::weak_ptr<prometheus::Collectable>& c);

  int port() const;  // the bound port (useful with port 0)
  // "host:port" as bound: the listen address's host and port(), for logs.
  std::string address() const;

 private:
  struct Impl;
  explicit MetricsEndpoint(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sb
