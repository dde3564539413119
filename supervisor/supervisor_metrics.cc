#include "supervisor/supervisor_metrics.h"

#include <dirent.h>
#include <errno.h>
#include <netdb.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <optional>
#include <system_error>
#include <thread>
#include <utility>

#include "common/metric_names.h"
#include "common/unique_fd.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
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

struct HostPort {
  std::string host;  // without the brackets of "[v6]:port"
  std::string port;
  bool v6 = false;
};

std::optional<HostPort> SplitHostPort(const std::string& listen) {
  HostPort hp;
  size_t colon;
  if (!listen.empty() && listen.front() == '[') {
    size_t close = listen.find(']');
    if (close == std::string::npos || close + 1 >= listen.size() || listen[close + 1] != ':') {
      return std::nullopt;
    }
    hp.host = listen.substr(1, close - 1);
    hp.v6 = true;
    colon = close + 1;
  } else {
    colon = listen.rfind(':');
    if (colon == std::string::npos || colon == 0) return std::nullopt;
    hp.host = listen.substr(0, colon);
    if (hp.host.find(':') != std::string::npos) return std::nullopt;  // v6 without brackets
  }
  hp.port = listen.substr(colon + 1);
  if (hp.port.empty() || hp.port.size() > 5 ||
      !std::all_of(hp.port.begin(), hp.port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      std::stoi(hp.port) > 65535) {
    return std::nullopt;
  }
  return hp;
}

// civetweb reports only "null context ... Possible problem binding to port"
// (its log callback would need civetweb linked directly). After it failed,
// bind the same address ourselves to name the errno; the race with another
// process only affects the wording of an error that already happened.
std::string WhyBindFails(const HostPort& hp) {
  addrinfo hints{};
  hints.ai_family = hp.v6 ? AF_INET6 : AF_INET;  // civetweb resolves names to IPv4
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (int rc = ::getaddrinfo(hp.host.c_str(), hp.port.c_str(), &hints, &res); rc != 0) {
    return gai_strerror(rc);
  }
  std::string why;
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd.valid()) {
      why = strerror(errno);
      continue;
    }
    int one = 1;  // as civetweb does, so TIME_WAIT leftovers do not count
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) < 0) {
      why = strerror(errno);
      continue;
    }
    why.clear();
    break;
  }
  ::freeaddrinfo(res);
  return why;
}

// Where a connection reaches the listener: its own address, loopback for a
// wildcard one. Empty if the host does not resolve (the poke is then skipped).
std::optional<sockaddr_storage> WakeAddress(const HostPort& hp, int port) {
  std::string host = hp.host;
  if (host == "0.0.0.0") host = "127.0.0.1";
  if (host == "::") host = "::1";
  addrinfo hints{};
  hints.ai_family = hp.v6 ? AF_INET6 : AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0) {
    return std::nullopt;
  }
  sockaddr_storage out{};
  std::memcpy(&out, res->ai_addr, res->ai_addrlen);
  ::freeaddrinfo(res);
  return out;
}

socklen_t AddressLength(const sockaddr_storage& a) {
  return a.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
}

// Entries of /proc/self/fd, minus the one opendir() itself holds.
std::optional<int> CountOpenFds() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (!dir) return std::nullopt;
  const std::string own = std::to_string(::dirfd(dir));
  int n = 0;
  while (const dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.' || own == e->d_name) continue;
    ++n;
  }
  ::closedir(dir);
  return n;
}

std::optional<double> ResidentBytes() {
  FILE* f = std::fopen("/proc/self/statm", "re");
  if (!f) return std::nullopt;
  unsigned long size = 0, resident = 0;
  int got = std::fscanf(f, "%lu %lu", &size, &resident);
  std::fclose(f);
  if (got != 2) return std::nullopt;
  return static_cast<double>(resident) * static_cast<double>(::sysconf(_SC_PAGESIZE));
}

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
                     .Add({})) {}

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
  Family<Gauge>& supervisor_restarts_in_window;
  Family<Gauge>& supervisor_intensity;
  Family<Counter>& supervisor_gave_up;
  Gauge& open_fds;
  Gauge& resident_memory;
  Gauge& loop_lag;
  std::map<std::string, ChildSeries> children;
  std::map<std::string, SupervisorSeries> supervisors;
  std::optional<sockaddr_storage> wake_address;
  std::unique_ptr<prometheus::Exposer> exposer;  // last: stopped before anything above goes
};

SupervisorMetrics::SupervisorMetrics(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

SupervisorMetrics::~SupervisorMetrics() {
  if (!impl_ || !impl_->exposer) return;
  if (!impl_->wake_address) {
    impl_->exposer.reset();
    return;
  }
  // civetweb 1.15's listener thread sleeps in poll() for up to 2 s between
  // looks at its stop flag, and mg_stop() waits for it: a daemon would hang
  // that long on exit. Connections wake the poll, so keep making them until
  // the stop is done (they are closed at once; a worker sees EOF).
  std::atomic<bool> stopped{false};
  const sockaddr_storage addr = *impl_->wake_address;
  auto poke = [&stopped, addr] {
    while (!stopped.load()) {
      UniqueFd fd(::socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (!fd.valid()) return;
      timeval tv{0, 100000};
      ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      (void)::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), AddressLength(addr));
      fd.Reset();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  };
  std::thread poker;
  try {
    poker = std::thread(poke);
  } catch (const std::system_error&) {
    // No thread: the stop takes up to 2 s longer, nothing worse.
  }
  impl_->exposer.reset();
  stopped.store(true);
  if (poker.joinable()) poker.join();
}

Result<std::unique_ptr<SupervisorMetrics>> SupervisorMetrics::Create(const std::string& listen,
                                                                     const std::string& node) {
  const std::string prefix = "unable to listen for metrics on " + listen + ": ";
  std::optional<HostPort> hp = SplitHostPort(listen);
  if (!hp) return Status::InvalidConfig(prefix + "expected host:port or [ipv6]:port");
  std::unique_ptr<Impl> impl;
  try {
    impl = std::make_unique<Impl>(node);
  } catch (const std::exception& e) {
    return Status::Internal("unable to create the metrics registry: " + std::string(e.what()));
  }
  try {
    // civetweb wants "[v6]:port" with brackets; `listen` already has them.
    impl->exposer = std::make_unique<prometheus::Exposer>(listen, /*num_threads=*/2);
    impl->exposer->RegisterCollectable(impl->registry);
    std::vector<int> ports = impl->exposer->GetListeningPorts();
    if (!ports.empty()) impl->wake_address = WakeAddress(*hp, ports.front());
  } catch (const std::exception& e) {
    std::string why = WhyBindFails(*hp);
    if (why.empty() && hp->v6) {
      why = "IPv6 listen addresses are not supported by the civetweb library in use";
    }
    if (why.empty()) why = e.what();
    return Status::IoError(prefix + why);
  }
  return std::unique_ptr<SupervisorMetrics>(new SupervisorMetrics(std::move(impl)));
}

int SupervisorMetrics::port() const {
  try {
    std::vector<int> ports = impl_->exposer->GetListeningPorts();
    return ports.empty() ? 0 : ports.front();
  } catch (const std::exception&) {
    return 0;
  }
}

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
  Labels normal = labels;
  normal.emplace(S(m::kLabelReason), S(m::kReasonNormal));
  c.exits_normal = &impl_->child_exits.Add(normal);
  Labels abnormal = labels;
  abnormal.emplace(S(m::kLabelReason), S(m::kReasonAbnormal));
  c.exits_abnormal = &impl_->child_exits.Add(abnormal);
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
  if (ev.event == "gave_up") {
    auto s = impl_->supervisors.find(ev.id);
    if (s != impl_->supervisors.end()) s->second.gave_up->Increment();
    return;
  }
  auto it = impl_->children.find(ev.id);
  if (it == impl_->children.end()) return;
  Impl::ChildSeries& c = it->second;
  if (ev.event == "started") {
    c.started_ts = ts;
    c.stopping = false;
  } else if (ev.event == "ready") {
    c.up->Set(1);
    if (c.started_ts) c.start_duration->Observe(std::max(0.0, ts - *c.started_ts));
    c.started_ts.reset();
  } else if (ev.event == "exited") {
    impl_->OnExited(c, ev);
  } else if (ev.event == "stopping") {
    c.stopping = true;
  } else if (ev.event == "stopped") {
    c.up->Set(0);
    c.started_ts.reset();
    c.stopping = false;
  } else if (ev.event == "restarting") {
    c.restarts->Increment();
  }
}

void SupervisorMetrics::SetRestartsInWindow(const std::string& supervisor_id, int n) {
  auto it = impl_->supervisors.find(supervisor_id);
  if (it != impl_->supervisors.end()) it->second.restarts_in_window->Set(n);
}

void SupervisorMetrics::UpdateDaemonStats(double loop_lag_seconds) {
  if (std::optional<int> fds = CountOpenFds()) impl_->open_fds.Set(*fds);
  if (std::optional<double> rss = ResidentBytes()) impl_->resident_memory.Set(*rss);
  impl_->loop_lag.Set(loop_lag_seconds);
}

}  // namespace sb::supervisor
