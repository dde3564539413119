#include "supervisor/reuseport_group.h"

#include <linux/bpf.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "supervisor/reuseport_program.h"

namespace sb::supervisor {
namespace {

long Bpf(int cmd, bpf_attr* attr) { return ::syscall(__NR_bpf, cmd, attr, sizeof(*attr)); }

std::string Why(const char* what) { return std::string("bpf(") + what + "): " + strerror(errno); }

Result<UniqueFd> CreateMap(bpf_map_type type, uint32_t value_size, uint32_t entries) {
  bpf_attr a{};
  a.map_type = type;
  a.key_size = sizeof(uint32_t);
  a.value_size = value_size;
  a.max_entries = entries;
  UniqueFd fd(static_cast<int>(Bpf(BPF_MAP_CREATE, &a)));
  if (!fd.valid()) return Status::IoError(Why("BPF_MAP_CREATE"));
  return fd;
}

}  // namespace

Result<std::unique_ptr<ReuseportGroup>> ReuseportGroup::Create(uint32_t max_members) {
  auto counter = CreateMap(BPF_MAP_TYPE_ARRAY, sizeof(uint64_t), 1);
  if (!counter.ok()) return counter.status();
  // A u64 value: the kernel reads the socket's fd from it (u32 works too).
  auto members = CreateMap(BPF_MAP_TYPE_REUSEPORT_SOCKARRAY, sizeof(uint64_t), max_members);
  if (!members.ok()) return members.status();
  std::unique_ptr<ReuseportGroup> g(
      new ReuseportGroup(std::move(counter.value()), std::move(members.value()), max_members));
  // Load once now, so an unloadable program is found at Create, where the
  // caller can still fall back, not at the first Attach.
  std::vector<bpf_insn> prog = RoundRobinProgram(g->counter_.get(), g->members_.get(), 1);
  bpf_attr a{};
  char log[4096] = {};
  a.prog_type = BPF_PROG_TYPE_SK_REUSEPORT;
  a.insns = reinterpret_cast<uint64_t>(prog.data());
  a.insn_cnt = static_cast<uint32_t>(prog.size());
  a.license = reinterpret_cast<uint64_t>("GPL");
  a.log_buf = reinterpret_cast<uint64_t>(log);
  a.log_size = sizeof log;
  a.log_level = 1;
  UniqueFd fd(static_cast<int>(Bpf(BPF_PROG_LOAD, &a)));
  if (!fd.valid()) {
    std::string why = Why("BPF_PROG_LOAD");
    if (log[0] != '\0') why += " (verifier: " + std::string(log, strnlen(log, 200)) + ")";
    return Status::IoError(why);
  }
  return g;
}

Status ReuseportGroup::SetMember(uint32_t index, int fd) {
  if (index >= max_members_) {
    return Status::Internal("member " + std::to_string(index) + " is past the " +
                            std::to_string(max_members_) + " the group has room for");
  }
  uint64_t value = static_cast<uint64_t>(fd);
  bpf_attr a{};
  a.map_fd = static_cast<uint32_t>(members_.get());
  a.key = reinterpret_cast<uint64_t>(&index);
  a.value = reinterpret_cast<uint64_t>(&value);
  a.flags = BPF_ANY;
  if (Bpf(BPF_MAP_UPDATE_ELEM, &a) < 0) return Status::IoError(Why("BPF_MAP_UPDATE_ELEM"));
  return Status::Ok();
}

Status ReuseportGroup::Attach(uint32_t members, int member_fd) {
  if (members == 0) return Status::Internal("a group of 0 members");
  std::vector<bpf_insn> prog = RoundRobinProgram(counter_.get(), members_.get(), members);
  bpf_attr a{};
  a.prog_type = BPF_PROG_TYPE_SK_REUSEPORT;
  a.insns = reinterpret_cast<uint64_t>(prog.data());
  a.insn_cnt = static_cast<uint32_t>(prog.size());
  a.license = reinterpret_cast<uint64_t>("GPL");
  UniqueFd fd(static_cast<int>(Bpf(BPF_PROG_LOAD, &a)));
  if (!fd.valid()) return Status::IoError(Why("BPF_PROG_LOAD"));
  int prog_fd = fd.get();
  if (::setsockopt(member_fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &prog_fd, sizeof prog_fd) < 0) {
    return Status::IoError(std::string("setsockopt(SO_ATTACH_REUSEPORT_EBPF): ") + strerror(errno));
  }
  // The group holds its own reference; ours keeps the program visible to
  // bpftool as the one in use.
  program_ = std::move(fd);
  return Status::Ok();
}

}  // namespace sb::supervisor
