#include "supervisor/supervisor_metrics.h"

#include <algorithm>
#include <cstdint>
#include <exception>
#include <map>
#include <optional>
#include <utility>

#include "common/build_info.h"
#include "common/metric_names.h"
#include "common/metrics_endpoint.h"
#include "common/process_stats.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace sb::supervisor {

namespace {

namespace m = ::sb::metrics;
using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;
using prometheus::Labels;

std::string S(std::string_view v) { return std::string(v); }

// A family named from metric_names.h, labelled node=<node> on every series.
template <typename T>
Family<T>& Register(prometheus::detail::Builder<T> builder, std::string_view name, const char* help,
                    const std::string& node, prometheus::Registry& registry) {
  return builder.Name(S(name)).Help(help).Labels({{S(m::kLabelNode), node}}).Register(registry);
}

}  // namespace

struct SupervisorMetrics::Impl {
  struct ChildSeries {
    std::string supervisor_path;
    std::vector<int> success_exit_codes;
    Gauge* up = nullptr;
    Counter* restarts = nullptr;
    Histogram* start_duration = nullptr;
    Gauge* last_exit_status = nullptr;
    Counter* exits_normal = nullptr;
    Counter* exits_abnormal = nullptr;
    Counter* upgrades_ok = nullptr;
    Counter* upgrades_failed = nullptr;
    std::optional<double> started_ts;  // the start being timed, until ready or exit
    bool stopping = false;             // its supervisor asked it to stop
  };
  struct SupervisorSeries {
    std::string path;
    Gauge* restarts_in_window = nullptr;
    Gauge* intensity = nullptr;
    Counter* gave_up = nullptr;
  };

  explicit Impl(const std::string& node)
      : registry(std::make_shared<prometheus::Registry>()),
        child_up(Register(prometheus::BuildGauge(), m::kChildUp,
                          "1 while the child is ready, else 0", node, *registry)),
        child_restarts(Register(prometheus::BuildCounter(), m::kChildRestartsTotal,
                                "Restarts its supervisor decided for the child", node, *registry)),
        child_start_duration(Register(prometheus::BuildHistogram(), m::kChildStartDurationSeconds,
                                      "Seconds from exec (started) to readiness (ready)", node,
                                      *registry)),
        child_last_exit_status(Register(prometheus::BuildGauge(), m::kChildLastExitStatus,
                                        "Exit status of the last process, 128+signal if killed, "
                                        "-1 before the first exit",
                                        node, *registry)),
        child_exits(Register(prometheus::BuildCounter(), m::kChildExitsTotal,
                             "Processes of the child that ended, by OTP exit reason", node,
                             *registry)),
        child_upgrades(Register(prometheus::BuildCounter(), m::kChildUpgradesTotal,
                                "Hand-offs of the child to a new process, by result", node,
                                *registry)),
        supervisor_restarts_in_window(Register(
            prometheus::BuildGauge(), m::kSupervisorRestartsInWindow,
            "Restarts counted in the supervisor's current intensity window", node, *registry)),
        supervisor_intensity(Register(prometheus::BuildGauge(), m::kSupervisorIntensity,
                                      "Restarts allowed per period before the supervisor gives up",
                                      node, *registry)),
        supervisor_gave_up(Register(prometheus::BuildCounter(), m::kSupervisorGaveUpTotal,
                                    "Times the supervisor exceeded its restart intensity", node,
                                    *registry)),
        open_fds(Register(prometheus::BuildGauge(), m::kDaemonOpenFds,
                          "File descriptors open in the switchboard daemon", node, *registry)
                     .Add({})),
        resident_memory(Register(prometheus::BuildGauge(), m::kDaemonResidentMemoryBytes,
                                 "Resident memory of the switchboard daemon in bytes", node,
                                 *registry)
                            .Add({})),
        loop_lag(Register(prometheus::BuildGauge(), m::kEventLoopLagSeconds,
                          "How late the daemon's event loop ran its last due timer, in seconds",
                          node, *registry)
                     .Add({})),
        events_write_failures(Register(prometheus::BuildCounter(), m::kEventsWriteFailuresTotal,
                                       "Events missing from the events file: it could not take "
                                       "the whole line",
                                       node, *registry)
                                  .Add({})),
        socket_balance(Register(prometheus::BuildGauge(), m::kSocketBalanceInfo,
                                "1 per socket, labelled with what spreads its connections", node,
                                *registry)) {
    Register(prometheus::BuildGauge(), m::kBuildInfo, S(m::kBuildInfoHelp).c_str(), node, *registry)
        .Add({{S(m::kLabelVersion), S(BuildVersion())}, {S(m::kLabelCommit), S(BuildCommit())}})
        .Set(1);
  }

  static Labels ChildLabels(const std::string& id, const std::string& path) {
    return {{S(m::kLabelChild), id}, {S(m::kLabelSupervisor), path}};
  }

  void RemoveChildSeries(ChildSeries& c) {
    child_up.Remove(c.up);
    child_restarts.Remove(c.restarts);
    child_start_duration.Remove(c.start_duration);
    child_last_exit_status.Remove(c.last_exit_status);
    child_exits.Remove(c.exits_normal);
    child_exits.Remove(c.exits_abnormal);
    child_upgrades.Remove(c.upgrades_ok);
    child_upgrades.Remove(c.upgrades_failed);
  }

  void RemoveSupervisorSeries(SupervisorSeries& s) {
    supervisor_restarts_in_window.Remove(s.restarts_in_window);
    supervisor_intensity.Remove(s.intensity);
    supervisor_gave_up.Remove(s.gave_up);
  }

  void OnExited(ChildSeries& c, const TreeEvent& ev) {
    c.up->Set(0);
    c.started_ts.reset();
    bool normal;
    if (ev.signal) {
      c.last_exit_status->Set(128 + *ev.signal);
      normal = false;
    } else if (ev.status) {
      c.last_exit_status->Set(*ev.status);
      normal = *ev.status == 0 ||
               std::find(c.success_exit_codes.begin(), c.success_exit_codes.end(), *ev.status) !=
                   c.success_exit_codes.end();
    } else {
      normal = true;  // a sub-supervisor that gave up: reason `shutdown`, no status
    }
    if (c.stopping) normal = true;  // asked to stop: `shutdown`, however it ended
    c.stopping = false;
    (normal ? c.exits_normal : c.exits_abnormal)->Increment();
  }

  // Declared first so they are destroyed last: the exposer's threads read them.
  std::shared_ptr<prometheus::Registry> registry;
  Family<Gauge>& child_up;
  Family<Counter>& child_restarts;
  Family<Histogram>& child_start_duration;
  Family<Gauge>& child_last_exit_status;
  Family<Counter>& child_exits;
  Family<Counter>& child_upgrades;
  Family<Gauge>& supervisor_restarts_in_window;
  Family<Gauge>& supervisor_intensity;
  Family<Counter>& supervisor_gave_up;
  Gauge& open_fds;
  Gauge& resident_memory;
  Gauge& loop_lag;
  Counter& events_write_failures;
  Family<Gauge>& socket_balance;
  std::map<std::string, std::pair<std::string, Gauge*>> sockets;  // name -> mode, series
  std::map<std::string, ChildSeries> children;
  std::map<std::string, SupervisorSeries> supervisors;
  std::unique_ptr<MetricsEndpoint> endpoint;  // last: stopped before anything above goes
};

SupervisorMetrics::SupervisorMetrics(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

SupervisorMetrics::~SupervisorMetrics() = default;

Result<std::unique_ptr<SupervisorMetrics>> SupervisorMetrics::Create(const std::string& listen,
                                                                     const std::string& node) {
  std::unique_ptr<Impl> impl;
  try {
    impl = std::make_unique<Impl>(node);
  } catch (const std::exception& e) {
    return Status::Internal("unable to create the metrics registry: " + std::string(e.what()));
  }
  auto endpoint = MetricsEndpoint::Create(listen);
  if (!endpoint.ok()) return endpoint.status();
  impl->endpoint = std::move(endpoint.value());
  impl->endpoint->Register(impl->registry);
  return std::unique_ptr<SupervisorMetrics>(new SupervisorMetrics(std::move(impl)));
}

int SupervisorMetrics::port() const { return impl_->endpoint->port(); }

// Family::Add/Remove throw only for invalid label names (ours are constants
// from metric_names.h) or on allocation failure, which ends the daemon
// anyway; they are therefore called without a try.
void SupervisorMetrics::DeclareChild(const std::string& id, const std::string& supervisor_path,
                                     std::vector<int> success_exit_codes) {
  auto it = impl_->children.find(id);
  if (it != impl_->children.end()) {
    if (it->second.supervisor_path == supervisor_path) {
      it->second.success_exit_codes = std::move(success_exit_codes);
      return;
    }
    ForgetChild(id);
  }
  Impl::ChildSeries c;
  c.supervisor_path = supervisor_path;
  c.success_exit_codes = std::move(success_exit_codes);
  const Labels labels = Impl::ChildLabels(id, supervisor_path);
  c.up = &impl_->child_up.Add(labels);
  c.up->Set(0);
  c.restarts = &impl_->child_restarts.Add(labels);
  c.start_duration = &impl_->child_start_duration.Add(
      labels, Histogram::BucketBoundaries(m::kChildStartDurationBuckets.begin(),
                                          m::kChildStartDurationBuckets.end()));
  c.last_exit_status = &impl_->child_last_exit_status.Add(labels);
  c.last_exit_status->Set(-1);
  // The child's series of `family` with one more label.
  auto split = [&](Family<Counter>& family, std::string_view key, std::string_view value) {
    Labels more = labels;
    more.emplace(S(key), S(value));
    return &family.Add(more);
  };
  c.exits_normal = split(impl_->child_exits, m::kLabelReason, m::kReasonNormal);
  c.exits_abnormal = split(impl_->child_exits, m::kLabelReason, m::kReasonAbnormal);
  c.upgrades_ok = split(impl_->child_upgrades, m::kLabelResult, m::kResultOk);
  c.upgrades_failed = split(impl_->child_upgrades, m::kLabelResult, m::kResultFailed);
  impl_->children.emplace(id, std::move(c));
}

void SupervisorMetrics::ForgetChild(const std::string& id) {
  auto it = impl_->children.find(id);
  if (it == impl_->children.end()) return;
  impl_->RemoveChildSeries(it->second);
  impl_->children.erase(it);
}

void SupervisorMetrics::DeclareSupervisor(const std::string& id, int intensity,
                                          const std::string& path) {
  const std::string& own_path = path.empty() ? id : path;
  auto it = impl_->supervisors.find(id);
  if (it != impl_->supervisors.end() && it->second.path != own_path) {
    ForgetSupervisor(id);
    it = impl_->supervisors.end();
  }
  if (it == impl_->supervisors.end()) {
    Impl::SupervisorSeries s;
    s.path = own_path;
    const Labels labels = {{S(m::kLabelSupervisor), own_path}};
    s.restarts_in_window = &impl_->supervisor_restarts_in_window.Add(labels);
    s.restarts_in_window->Set(0);
    s.intensity = &impl_->supervisor_intensity.Add(labels);
    s.gave_up = &impl_->supervisor_gave_up.Add(labels);
    it = impl_->supervisors.emplace(id, std::move(s)).first;
  }
  it->second.intensity->Set(intensity);
}

void SupervisorMetrics::ForgetSupervisor(const std::string& id) {
  auto it = impl_->supervisors.find(id);
  if (it == impl_->supervisors.end()) return;
  impl_->RemoveSupervisorSeries(it->second);
  impl_->supervisors.erase(it);
}

void SupervisorMetrics::OnEvent(const TreeEvent& ev, double ts) {
  if (ev.kind == EventKind::kGaveUp) {
    auto s = impl_->supervisors.find(ev.id);
    if (s != impl_->supervisors.end()) s->second.gave_up->Increment();
    return;
  }
  auto it = impl_->children.find(ev.id);
  if (it == impl_->children.end()) return;
  Impl::ChildSeries& c = it->second;
  switch (ev.kind) {
    case EventKind::kStarted:
      c.started_ts = ts;
      c.stopping = false;
      return;
    case EventKind::kReady:
      c.up->Set(1);
      if (c.started_ts) c.start_duration->Observe(std::max(0.0, ts - *c.started_ts));
      c.started_ts.reset();
      return;
    case EventKind::kExited:
      impl_->OnExited(c, ev);
      return;
    case EventKind::kStopping:
      c.stopping = true;
      return;
    case EventKind::kStopped:
      c.up->Set(0);
      c.started_ts.reset();
      c.stopping = false;
      return;
    case EventKind::kRestarting:
      c.restarts->Increment();
      return;
    case EventKind::kUpgraded:
      // The old process's `exited` came first; the child is up in the new one.
      c.up->Set(1);
      c.upgrades_ok->Increment();
      return;
    case EventKind::kUpgradeFailed:
      c.upgrades_failed->Increment();
      return;
    case EventKind::kUpgrading:
    case EventKind::kGaveUp:      // a supervisor's, above
    case EventKind::kDaemonExit:  // nothing per child
      return;
  }
}

void SupervisorMetrics::CountEventsWriteFailure() { impl_->events_write_failures.Increment(); }

void SupervisorMetrics::SetRestartsInWindow(const std::string& supervisor_id, int n) {
  auto it = impl_->supervisors.find(supervisor_id);
  if (it != impl_->supervisors.end()) it->second.restarts_in_window->Set(n);
}

void SupervisorMetrics::SetSocketModes(const std::map<std::string, std::string>& modes) {
  for (auto it = impl_->sockets.begin(); it != impl_->sockets.end();) {
    auto next = modes.find(it->first);
    if (next != modes.end() && next->second == it->second.first) {
      ++it;
      continue;
    }
    impl_->socket_balance.Remove(it->second.second);
    it = impl_->sockets.erase(it);
  }
  for (const auto& [name, mode] : modes) {
    if (impl_->sockets.contains(name)) continue;
    Gauge& g = impl_->socket_balance.Add({{S(m::kLabelSocket), name}, {S(m::kLabelMode), mode}});
    g.Set(1);
    impl_->sockets[name] = {mode, &g};
  }
}

void SupervisorMetrics::UpdateDaemonStats(double loop_lag_seconds) {
  if (std::optional<int> fds = OpenFds()) impl_->open_fds.Set(*fds);
  if (std::optional<int64_t> rss = ResidentBytes()) {
    impl_->resident_memory.Set(static_cast<double>(*rss));
  }
  impl_->loop_lag.Set(loop_lag_seconds);
}

}  // namespace sb::supervisor
