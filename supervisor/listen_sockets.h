// ListenSockets: the listening sockets declared under `sockets:` in YAML.
//
// Owns: the bound, listening TCP sockets, created by the daemon and kept
// open while it runs, so a child that crashes never closes the port: clients
// wait in the backlog until the next incarnation accepts them. A `shared`
// socket is one fd every child naming it accepts from. A `round_robin`
// socket is a SO_REUSEPORT group with one member per replica (replica i gets
// member i), spread in turn by supervisor/reuseport_group's program or, when
// the kernel refuses it, by the kernel's hash of each connection's addresses.
// The fds are CLOEXEC in the daemon; the launcher hands them to the children
// that name them. Runs on the daemon's loop thread. Does not: accept
// connections.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/unique_fd.h"
#include "supervisor/reuseport_group.h"
#include "supervisor/tree_spec.h"

namespace sb::supervisor {

class ListenSockets {
 public:
  // What spreads a socket's connections, as switchboard_socket_balance_info
  // names it: one shared socket; the program, in turn; the kernel's hash
  // (round_robin asked for, the program refused).
  static constexpr const char* kModeShared = "shared";
  static constexpr const char* kModeRoundRobin = "round_robin";
  static constexpr const char* kModeHash = "reuseport_hash";

  // Binds every socket of `specs`; a round_robin socket gets `members[name]`
  // members (RoundRobinMembers), at least one. `use_bpf` false skips the
  // program (round_robin sockets use the kernel's hash).
  static Result<ListenSockets> Bind(const std::vector<SocketSpec>& specs,
                                    const std::map<std::string, int>& members, bool use_bpf);
  // Binds one more (a reload declared it). On error nothing changes.
  Status Add(const SocketSpec& spec, int members);
  // Closes one, every member (a reload removed it; no child uses it any more).
  void Close(const std::string& name) { sockets_.erase(name); }

  // The fd child `child_id` is handed for socket `name`: the socket when
  // shared; member `replica` when round_robin, bound now if it is not (the
  // set was scaled up). -1 with an error if `name` is unknown or the bind
  // fails (the spawn fails and is retried like any failed start).
  Result<int> FdFor(const std::string& name, int replica, const std::string& child_id);

  // Closes every round_robin member whose child is not in `keep` (the
  // daemon passes every worker id still running or still to be started).
  // Clients still queued in a closed member's backlog are reset. Member 0
  // stays, so the port stays held.
  void ReleaseMembers(const std::set<std::string>& keep);

  // Member 0's (or the shared socket's) daemon-side fd, or -1.
  int fd(const std::string& name) const;
  // The port actually bound (useful with port 0).
  int port(const std::string& name) const;
  // Open members of a round_robin socket (1 when shared), 0 if unknown.
  int members(const std::string& name) const;
  // The mode of each socket (kMode*), by name.
  std::map<std::string, std::string> Modes() const;

 private:
  struct Socket {
    SocketSpec spec;
    std::vector<UniqueFd> members;          // index = replica; an invalid fd = closed
    std::vector<std::string> owners;        // child id each member was handed to
    std::unique_ptr<ReuseportGroup> group;  // null: shared, or the hash fallback
  };

  Status BindMember(Socket& s, size_t index);
  // Trims closed trailing members and loads the program for the count left.
  Status Resize(Socket& s);

  std::map<std::string, Socket> sockets_;
  bool use_bpf_ = true;
};

}  // namespace sb::supervisor
