#include "supervisor/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string_view>

#include "common/exit_codes.h"
#include "common/mono_time.h"
#include "common/sd_notify.h"
#include "common/signal_fd.h"
#include "supervisor/api_client.h"
#include "supervisor/process_launcher.h"
#include "supervisor/runtime_dir.h"

namespace sb::supervisor {

namespace {

// Reads per wake-up and stream: a flooding child gets this much per loop turn
// and then waits in its pipe (back-pressure), so it cannot starve the loop.
constexpr size_t kOutputChunk = 64 * 1024;

std::string SelfDir() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : exe.parent_path().string();
}

std::string DefaultControl(const NodeSpec& node) {
  return node.control.empty() ? "/tmp/switchboard/" + node.name + ".sock" : node.control;
}

}  // namespace

Time Daemon::Now() { return MonoNow().time_since_epoch(); }

Daemon::Daemon(TreeSpec spec, std::string config_path)
    : spec_(std::move(spec)), config_path_(std::move(config_path)) {}

Daemon::~Daemon() {
  // Normally every child is gone by now; if not (fatal start-up error after
  // some were spawned), do not leave any behind.
  for (auto& [token, p] : procs_) {
    ::kill(-p.pid, SIGKILL);
    ::kill(p.pid, SIGKILL);
    int st;
    ::waitpid(p.pid, &st, 0);
  }
}

Result<std::unique_ptr<Daemon>> Daemon::Create(TreeSpec spec, std::string config_path) {
  std::unique_ptr<Daemon> d(new Daemon(std::move(spec), std::move(config_path)));
  Status s = d->Init();
  if (!s.ok()) return s;
  return d;
}

Status Daemon::Init() {
  auto loop = EventLoop::Create();
  if (!loop.ok()) return loop.status();
  loop_ = std::move(loop.value());

  // An operator's (and the tests') way to see the hash fallback without
  // dropping CAP_BPF: SWITCHBOARD_REUSEPORT_BPF=off.
  const char* bpf = ::getenv("SWITCHBOARD_REUSEPORT_BPF");
  const bool use_bpf = bpf == nullptr || std::string_view(bpf) != "off";
  auto sockets = ListenSockets::Bind(spec_.sockets, RoundRobinMembers(spec_), use_bpf);
  if (!sockets.ok()) return sockets.status();
  sockets_ = std::move(sockets.value());
  for (const auto& [name, mode] : sockets_.Modes()) {
    spdlog::info("socket '{}': port {}, {} ({} member{})", name, sockets_.port(name), mode,
                 sockets_.members(name), sockets_.members(name) == 1 ? "" : "s");
  }

  std::filesystem::path control = DefaultControl(spec_.node);
  std::filesystem::path run_dir = control.parent_path();
  if (run_dir.empty()) run_dir = ".";
  // Everything below is created in it: refuse one another user could write.
  Status s = EnsureRuntimeDir(run_dir.string());
  if (!s.ok()) return s;
  // One daemon per node: a second one would take over the first one's
  // notify socket. The lock dies with the process, so a crash never leaves
  // a stale lock behind.
  std::string lock_path = (run_dir / (spec_.node.name + ".lock")).string();
  lock_fd_.Reset(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!lock_fd_.valid()) return Status::IoError("open " + lock_path + ": " + strerror(errno));
  if (::flock(lock_fd_.get(), LOCK_EX | LOCK_NB) < 0) {
    return Status::Refused("node '" + spec_.node.name + "' is already running (lock " + lock_path +
                           " is held)");
  }
  // Before any shard starts: the shards read the key file at start.
  if (!spec_.node.api.key_file.empty()) {
    s = EnsureApiKeyFile(spec_.node.api.key_file);
    if (!s.ok()) return s;
  }
  // Hand-off sockets of children with upgrade: handoff: only their owner
  // may connect to a process taking connections over.
  handoff_dir_ = (run_dir / "handoff").string();
  s = EnsureRuntimeDir(handoff_dir_);
  if (!s.ok()) return s;
  auto notify = NotifyServer::Create((run_dir / (spec_.node.name + ".notify")).string());
  if (!notify.ok()) return notify.status();
  notify_ = std::move(notify.value());

  auto events = EventLog::Open(spec_.node.events);
  if (!events.ok()) return events.status();
  events_ = std::move(events.value());

  // Signals arrive as reads on a signalfd, handled on the loop like any fd.
  auto sfd = BlockSignalsToFd({SIGTERM, SIGINT, SIGHUP});
  if (!sfd.ok()) return sfd.status();
  signal_fd_ = std::move(sfd.value());
  // A closed peer or a file size limit (RLIMIT_FSIZE) is an error value from
  // write(), not a reason for the supervisor to die.
  ::signal(SIGPIPE, SIG_IGN);
  ::signal(SIGXFSZ, SIG_IGN);

  s = loop_->Add(signal_fd_.get(), EPOLLIN, [this](uint32_t) { OnSignal(); });
  if (!s.ok()) return s;
  s = loop_->Add(notify_->fd(), EPOLLIN, [this](uint32_t) { OnNotify(); });
  if (!s.ok()) return s;

  auto server =
      ControlServer::Create(*loop_, DefaultControl(spec_.node),
                            [this](const boost::json::object& req, ControlServer::Reply reply) {
                              OnControl(req, std::move(reply));
                            });
  if (!server.ok()) return server.status();
  control_ = std::move(server.value());

  // After the signal mask is set: the exposer's threads inherit it.
  s = StartMetrics();
  if (!s.ok()) return s;
  file_sd_ = std::make_unique<FileSdWriter>(spec_.node.file_sd);
  loop_->SetBeforeSleep([this] {
    if (observers_dirty_) RefreshObservers();
  });
  loop_->SetCron(std::chrono::seconds(1), [this] { RefreshObservers(); });

  const char* path = ::getenv("PATH");
  child_path_ = SelfDir() + ":" + (path ? path : "/usr/local/bin:/usr/bin:/bin");
  engine_ = std::make_unique<TreeEngine>(spec_.root);
  started_at_ = Now();
  return Status::Ok();
}

Status Daemon::StartMetrics() {
  metrics_.reset();
  if (spec_.node.metrics.empty()) return Status::Ok();
  auto m = SupervisorMetrics::Create(spec_.node.metrics, spec_.node.name);
  if (!m.ok()) return m.status();
  metrics_ = std::move(m.value());
  observers_dirty_ = true;
  return Status::Ok();
}

int Daemon::Run() {
  for (const std::string& w : spec_.warnings) spdlog::warn("{}", w);
  spdlog::info("node {} starting (pid {}, notify socket {})", spec_.node.name, ::getpid(),
               notify_->path());
  engine_->Start(Now());
  Drive();
  if (engine_->finished()) return exit_code_;
  return loop_->Run();
}

void Daemon::Drive() {
  for (;;) {
    // Actions an action causes run right after it (depth first), so the
    // event log reads in causal order.
    std::vector<Action> fresh = engine_->TakeActions();
    pending_.insert(pending_.begin(), fresh.begin(), fresh.end());
    if (pending_.empty()) return;
    Action a = std::move(pending_.front());
    pending_.pop_front();
    Perform(a);
  }
}

void Daemon::Perform(const Action& a) {
  if (auto* s = std::get_if<action::Spawn>(&a)) {
    DoSpawn(*s);
  } else if (auto* s = std::get_if<action::Signal>(&a)) {
    auto it = procs_.find(s->token);
    if (it == procs_.end()) return;  // already reaped: never signal a recycled pid
    // The whole process group (helpers it forked), as systemd's
    // KillMode=control-group; the leader directly if it left its group.
    if (::kill(-it->second.pid, s->signal) < 0) {
      ::syscall(SYS_pidfd_send_signal, it->second.pidfd.get(), s->signal, nullptr, 0);
    }
  } else if (auto* s = std::get_if<action::StartTimer>(&a)) {
    TimerToken t = s->timer;
    timers_[t] = loop_->AddTimer(s->after, [this, t] {
      timers_.erase(t);
      engine_->OnTimer(t, Now());
      Drive();
    });
  } else if (auto* s = std::get_if<action::CancelTimer>(&a)) {
    auto it = timers_.find(s->timer);
    if (it != timers_.end()) {
      loop_->Cancel(it->second);
      timers_.erase(it);
    }
  } else if (auto* s = std::get_if<action::Emit>(&a)) {
    Emit(s->event);
  } else if (auto* s = std::get_if<action::Log>(&a)) {
    switch (s->level) {
      case action::Log::Level::kInfo:
        spdlog::info("{}", s->text);
        break;
      case action::Log::Level::kWarn:
        spdlog::warn("{}", s->text);
        break;
      case action::Log::Level::kError:
        spdlog::error("{}", s->text);
        break;
    }
  } else if (auto* s = std::get_if<action::Reply>(&a)) {
    OnReply(*s);
  } else if (auto* s = std::get_if<action::Exit>(&a)) {
    exit_code_ = s->code;
    Emit(TreeEvent{.kind = EventKind::kDaemonExit,
                   .id = spec_.root.id,
                   .status = s->code,
                   .reason = s->reason});
    if (s->code != kExitOk) spdlog::error("exiting with status {}: {}", s->code, s->reason);
    loop_->Stop(s->code);
  }
}

void Daemon::Emit(const TreeEvent& ev) {
  const double now = ToSeconds(MonoNow());
  std::string line = EncodeEventLine(now, ev);
  Status written = events_->WriteLine(line);
  if (!written.ok()) {
    if (metrics_) metrics_->CountEventsWriteFailure();
    // Said once per run of failures, not once per lost event.
    if (events_lost_ == 0) {
      spdlog::error("events: {}; events are lost until it works", written.message());
    }
    ++events_lost_;
  } else if (events_lost_ > 0) {
    spdlog::info("events: writing {} again ({} events lost)", spec_.node.events, events_lost_);
    events_lost_ = 0;
  }
  if (control_) control_->PublishEvent(line);
  if (metrics_) metrics_->OnEvent(ev, now);
  observers_dirty_ = true;
  std::string detail;
  if (ev.pid) detail += " pid=" + std::to_string(*ev.pid);
  if (ev.status) detail += " status=" + std::to_string(*ev.status);
  if (ev.signal) detail += " signal=" + SignalName(*ev.signal);
  if (!ev.reason.empty()) detail += " (" + ev.reason + ")";
  spdlog::info("{} {}{}", EventName(ev.kind), ev.id, detail);
  if (ev.kind == EventKind::kReady && ev.id == spec_.root.id) SdNotify("READY=1");
}

void Daemon::DoSpawn(const action::Spawn& s) {
  LaunchRequest req;
  req.argv = s.spec.command;
  req.env = s.spec.env;
  for (const std::string& name : s.spec.sockets) {
    Result<int> fd = sockets_.FdFor(name, s.spec.replica ? s.spec.replica->index : 0, s.spec.id);
    if (!fd.ok()) {
      engine_->OnSpawnFailed(s.token, fd.status().message(), Now());
      return;
    }
    req.listen_fds.emplace_back(name, fd.value());
  }
  if (s.spec.upgrade == UpgradeMode::kHandoff) {
    // The same path for every incarnation: the old process connects where
    // the new one listens (docs/UPGRADE.md, the daemon ↔ shard contract).
    req.env.emplace_back("SWITCHBOARD_HANDOFF_SOCKET", handoff_dir_ + "/" + s.spec.id + ".sock");
  }
  req.notify_socket = notify_->path();
  req.path = child_path_;
  auto launched = Launch(req);
  if (!launched.ok()) {
    engine_->OnSpawnFailed(s.token, launched.status().message(), Now());
    return;
  }
  LaunchedProcess lp = std::move(launched.value());
  Token token = s.token;
  // A child whose exit the loop cannot see would be supervised by nobody:
  // kill it now and report a failed start, which the engine handles like
  // any other (retried, counted, escalated).
  Status watched =
      loop_->Add(lp.pidfd.get(), EPOLLIN, [this, token](uint32_t) { OnProcExit(token); });
  if (!watched.ok()) {
    KillAndReap(lp.pid, lp.pidfd.get());
    engine_->OnSpawnFailed(token, "unable to watch its exit: " + watched.message(), Now());
    return;
  }
  Proc& p = procs_[token];
  p.id = s.spec.id;
  p.pid = lp.pid;
  p.pidfd = std::move(lp.pidfd);
  p.out = std::move(lp.out);
  p.err = std::move(lp.err);
  by_pid_[p.pid] = token;
  for (bool is_err : {false, true}) {
    UniqueFd& fd = is_err ? p.err : p.out;
    Status st =
        loop_->Add(fd.get(), EPOLLIN, [this, token, is_err](uint32_t) { OnOutput(token, is_err); });
    if (st.ok()) continue;
    // Unread, the pipe would fill and block the child's next write forever.
    // Closed, that write fails at once (SIGPIPE, or EPIPE if the child
    // ignores SIGPIPE): a failure its supervisor sees, not a silent hang.
    spdlog::error("child '{}': unable to watch its {}: {}; closed it, so its writes there fail",
                  p.id, is_err ? "stderr" : "stdout", st.message());
    fd.Reset();
  }
  engine_->OnSpawned(token, p.pid, Now());
}

void Daemon::KillAndReap(pid_t pid, int pidfd) {
  ::kill(-pid, SIGKILL);
  ::kill(pid, SIGKILL);
  siginfo_t info{};
  while (::waitid(P_PIDFD, static_cast<id_t>(pidfd), &info, WEXITED) < 0 && errno == EINTR) {
  }
}

void Daemon::OnProcExit(Token token) {
  auto it = procs_.find(token);
  if (it == procs_.end()) return;
  Proc& p = it->second;
  // The leader is a zombie, so its pid (the group id) cannot be reused yet:
  // kill what it left behind in its group before reaping it.
  ::kill(-p.pid, SIGKILL);
  siginfo_t info{};
  if (::waitid(P_PIDFD, static_cast<id_t>(p.pidfd.get()), &info, WEXITED | WNOHANG) < 0 ||
      info.si_pid == 0) {
    return;  // spurious wake-up
  }
  // Whatever it wrote before dying is still in the pipes: log it first.
  OnOutput(token, false);
  OnOutput(token, true);
  CloseOutput(p, false);
  CloseOutput(p, true);
  ExitInfo exit = info.si_code == CLD_EXITED ? ExitInfo::Code(info.si_status)
                                             : ExitInfo::Signal(info.si_status);
  loop_->Remove(p.pidfd.get());
  by_pid_.erase(p.pid);
  procs_.erase(it);
  engine_->OnExited(token, exit, Now());
  Drive();
}

void Daemon::OnOutput(Token token, bool is_err) {
  auto it = procs_.find(token);
  if (it == procs_.end()) return;
  Proc& p = it->second;
  UniqueFd& fd = is_err ? p.err : p.out;
  if (!fd.valid()) return;
  char buf[kOutputChunk];
  ssize_t n = ::read(fd.get(), buf, sizeof buf);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {
    CloseOutput(p, is_err);
    return;
  }
  LineSplitter& lines = is_err ? p.err_lines : p.out_lines;
  lines.Feed(std::string_view(buf, static_cast<size_t>(n)), [&](std::string_view line, bool cut) {
    spdlog::info("[{}{}] {}{}", p.id, is_err ? ":stderr" : "", line, cut ? " [...]" : "");
  });
}

void Daemon::CloseOutput(Proc& p, bool is_err) {
  UniqueFd& fd = is_err ? p.err : p.out;
  if (!fd.valid()) return;
  LineSplitter& lines = is_err ? p.err_lines : p.out_lines;
  lines.Finish([&](std::string_view line, bool) {
    spdlog::info("[{}{}] {}", p.id, is_err ? ":stderr" : "", line);
  });
  loop_->Remove(fd.get());
  fd.Reset();
}

std::optional<Token> Daemon::TokenOf(pid_t pid) const {
  auto it = by_pid_.find(pid);
  if (it == by_pid_.end()) {
    // A helper in the child's process group may speak for it (a shell
    // script calling systemd-notify, say).
    pid_t pgid = ::getpgid(pid);
    it = pgid > 0 ? by_pid_.find(pgid) : by_pid_.end();
  }
  if (it == by_pid_.end()) return std::nullopt;
  return it->second;
}

void Daemon::OnNotify() {
  notify_->Drain(
      [this](pid_t pid) {
        if (std::optional<Token> token = TokenOf(pid)) engine_->OnReady(*token, Now());
      },
      [this](pid_t pid, std::string_view status) {
        if (std::optional<Token> token = TokenOf(pid)) {
          engine_->OnStatus(*token, std::string(status), Now());
        }
      });
  Drive();
}

void Daemon::OnSignal() {
  while (int sig = ReadSignal(signal_fd_.get())) {
    if (sig == SIGHUP) {
      spdlog::info("SIGHUP: reloading {}", config_path_);
      Reload([](Status st, std::vector<std::string> changes) {
        if (!st.ok()) {
          spdlog::error("reload failed: {}", st.message());
          return;
        }
        for (const std::string& c : changes) spdlog::info("reload: {}", c);
      });
      continue;
    }
    spdlog::info("{}: stopping the tree", SignalName(sig));
    engine_->RequestShutdown(Now());
  }
  Drive();
}

}  // namespace sb::supervisor
