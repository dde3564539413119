#include "supervisor/listen_sockets.h"

#include <spdlog/spdlog.h>

#include <utility>

#include "common/tcp_listen.h"
#include "supervisor/control_server.h"

namespace sb::supervisor {

Result<ListenSockets> ListenSockets::Bind(const std::vector<SocketSpec>& specs,
                                          const std::map<std::string, int>& members, bool use_bpf) {
  ListenSockets out;
  out.use_bpf_ = use_bpf;
  for (const SocketSpec& s : specs) {
    auto n = members.find(s.name);
    Status st = out.Add(s, n == members.end() ? 1 : n->second);
    if (!st.ok()) return st;
  }
  return out;
}

Status ListenSockets::Add(const SocketSpec& spec, int members) {
  Socket s;
  s.spec = spec;
  if (spec.balance == Balance::kShared) {
    Result<UniqueFd> fd = ListenTcp(spec.host, spec.port, spec.backlog);
    if (!fd.ok()) return Status::IoError("socket '" + spec.name + "': " + fd.status().message());
    s.members.push_back(std::move(fd.value()));
    s.owners.emplace_back();
    sockets_[spec.name] = std::move(s);
    return Status::Ok();
  }
  if (use_bpf_) {
    // Room for the largest set `scale` can ask for: the array's size is
    // fixed when it is created.
    auto group = ReuseportGroup::Create(static_cast<uint32_t>(kMaxScaleCount));
    if (group.ok()) {
      s.group = std::move(group.value());
    } else {
      spdlog::warn(
          "socket '{}': balance round_robin falls back to the kernel's hash of each "
          "connection's addresses, not an exact turn: {}",
          spec.name, group.status().message());
    }
  } else {
    spdlog::warn(
        "socket '{}': balance round_robin falls back to the kernel's hash of each connection's "
        "addresses, not an exact turn: SWITCHBOARD_REUSEPORT_BPF=off",
        spec.name);
  }
  for (int i = 0; i < std::max(members, 1); ++i) {
    Status st = BindMember(s, static_cast<size_t>(i));
    if (!st.ok()) return st;
  }
  if (Status st = Resize(s); !st.ok()) {
    // Loaded but not attached: the group has no program, so say hash.
    spdlog::warn(
        "socket '{}': balance round_robin falls back to the kernel's hash of each "
        "connection's addresses, not an exact turn: {}",
        spec.name, st.message());
    s.group.reset();
  }
  sockets_[spec.name] = std::move(s);
  return Status::Ok();
}

Status ListenSockets::BindMember(Socket& s, size_t index) {
  // Member 0 binds the address as written (port 0 = any); the others join
  // the port it got.
  int port =
      s.members.empty() || !s.members[0].valid() ? s.spec.port : BoundPort(s.members[0].get());
  Result<UniqueFd> fd = ListenTcp(s.spec.host, port, s.spec.backlog, /*reuseport=*/true);
  if (!fd.ok()) {
    return Status::IoError("socket '" + s.spec.name + "' member " + std::to_string(index) + ": " +
                           fd.status().message());
  }
  if (s.group) {
    Status st = s.group->SetMember(static_cast<uint32_t>(index), fd->get());
    if (!st.ok()) {
      // The program cannot reach this member; the kernel's hash still can
      // (a selection of an empty slot falls back to it).
      spdlog::warn("socket '{}' member {}: {}", s.spec.name, index, st.message());
    }
  }
  if (s.members.size() <= index) {
    s.members.resize(index + 1);
    s.owners.resize(index + 1);
  }
  s.members[index] = std::move(fd.value());
  return Status::Ok();
}

Status ListenSockets::Resize(Socket& s) {
  while (s.members.size() > 1 && !s.members.back().valid()) {
    s.members.pop_back();
    s.owners.pop_back();
  }
  if (!s.group) return Status::Ok();
  Status st = s.group->Attach(static_cast<uint32_t>(s.members.size()), s.members[0].get());
  if (!st.ok()) {
    // The old program (if any) stays attached: it still selects members,
    // only with the old count.
    spdlog::warn("socket '{}': unable to load the round_robin program for {} members: {}",
                 s.spec.name, s.members.size(), st.message());
  }
  return st;
}

Result<int> ListenSockets::FdFor(const std::string& name, int replica,
                                 const std::string& child_id) {
  auto it = sockets_.find(name);
  if (it == sockets_.end()) return Status::NotFound("socket '" + name + "' is not bound");
  Socket& s = it->second;
  if (s.spec.balance == Balance::kShared) return s.members[0].get();
  const size_t index = static_cast<size_t>(replica);
  if (index >= s.members.size() || !s.members[index].valid()) {
    Status st = BindMember(s, index);
    if (!st.ok()) return st;
    (void)Resize(s);  // on failure the old program keeps dealing (logged)
  }
  s.owners[index] = child_id;
  return s.members[index].get();
}

void ListenSockets::ReleaseMembers(const std::set<std::string>& keep) {
  for (auto& [name, s] : sockets_) {
    if (s.spec.balance == Balance::kShared) continue;
    bool closed = false;
    for (size_t i = 1; i < s.members.size(); ++i) {
      if (!s.members[i].valid() || s.owners[i].empty() || keep.contains(s.owners[i])) continue;
      spdlog::info("socket '{}': member {} closed ({} was removed)", name, i, s.owners[i]);
      s.members[i].Reset();
      s.owners[i].clear();
      closed = true;
    }
    if (closed) (void)Resize(s);  // on failure the old program keeps dealing (logged)
  }
}

int ListenSockets::fd(const std::string& name) const {
  auto it = sockets_.find(name);
  return it == sockets_.end() ? -1 : it->second.members[0].get();
}

int ListenSockets::port(const std::string& name) const {
  int f = fd(name);
  return f < 0 ? -1 : BoundPort(f);
}

int ListenSockets::members(const std::string& name) const {
  auto it = sockets_.find(name);
  if (it == sockets_.end()) return 0;
  int n = 0;
  for (const UniqueFd& m : it->second.members) n += m.valid() ? 1 : 0;
  return n;
}

std::map<std::string, std::string> ListenSockets::Modes() const {
  std::map<std::string, std::string> out;
  for (const auto& [name, s] : sockets_) {
    out[name] = s.spec.balance == Balance::kShared ? kModeShared
                : s.group                          ? kModeRoundRobin
                                                   : kModeHash;
  }
  return out;
}

}  // namespace sb::supervisor
