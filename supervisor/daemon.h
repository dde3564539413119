// Daemon: `switchboard run` — the thin effects layer around TreeEngine.
//
// Owns: the event loop and every OS resource of a running node: the
// listening sockets from YAML, the NOTIFY_SOCKET server, one pidfd and two
// output pipes per live child, the signalfd (SIGTERM/SIGINT stop the tree),
// timers, and the event log. It performs the engine's Actions (fork/exec,
// signal a process group, arm a timer, write an event) and feeds what
// happens back into the engine. All decisions are the engine's. One thread;
// nothing here blocks except the brief fork/exec handshake.
#pragma once

#include <sys/types.h>

#include <deque>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>

#include "common/event_loop.h"
#include "common/status.h"
#include "common/unique_fd.h"
#include "supervisor/event_log.h"
#include "supervisor/line_splitter.h"
#include "supervisor/listen_sockets.h"
#include "supervisor/notify_server.h"
#include "supervisor/tree_engine.h"
#include "supervisor/tree_spec.h"

namespace sb::supervisor {

class Daemon {
 public:
  static Result<std::unique_ptr<Daemon>> Create(TreeSpec spec);
  ~Daemon();

  // Starts the tree and runs until the root is gone. Returns the exit code:
  // 0 after a requested stop, 1 if the root gave up or failed to start.
  int Run();

 private:
  explicit Daemon(TreeSpec spec);
  Status Init();

  struct Proc {
    std::string id;
    pid_t pid = -1;
    UniqueFd pidfd;
    UniqueFd out, err;
    LineSplitter out_lines, err_lines;
  };

  void Drive();                   // performs the engine's actions until none are left
  void Perform(const Action& a);  // one action
  void DoSpawn(const action::Spawn& s);
  void OnProcExit(Token token);
  void OnOutput(Token token, bool is_err);
  void CloseOutput(Proc& p, bool is_err);
  void OnNotify();
  void OnSignal();
  void Emit(const TreeEvent& ev);
  static Time Now();

  TreeSpec spec_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<TreeEngine> engine_;
  std::unique_ptr<NotifyServer> notify_;
  std::unique_ptr<EventLog> events_;
  ListenSockets sockets_;
  UniqueFd signal_fd_;
  UniqueFd lock_fd_;  // flock held for the daemon's life: one daemon per node
  std::string child_path_;  // PATH for children: our own bin dir first
  std::deque<Action> pending_;
  std::unordered_map<Token, Proc> procs_;    // live incarnations
  std::unordered_map<pid_t, Token> by_pid_;  // for READY=1 datagrams
  std::unordered_map<TimerToken, EventLoop::TimerId> timers_;
  int exit_code_ = 0;
};

}  // namespace sb::supervisor
