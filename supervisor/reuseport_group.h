// ReuseportGroup: the kernel objects that make one SO_REUSEPORT group
// round-robin: a REUSEPORT_SOCKARRAY of its members, a one-entry counter
// map and the SK_REUSEPORT program of supervisor/reuseport_program.
//
// Owns: the two map fds and the program fd, through the raw bpf(2) syscall
// (no libbpf: three commands and one struct). Does not: bind sockets (the
// daemon's ListenSockets owns them and tells it each member) or decide when
// to fall back to the kernel's hash (the caller does, on an error value).
// Runs on the daemon's loop thread; the kernel runs the program per SYN.
#pragma once

#include <cstdint>
#include <memory>

#include "common/status.h"
#include "common/unique_fd.h"

namespace sb::supervisor {

class ReuseportGroup {
 public:
  // Room for `max_members` members (fixed when the array is created). Fails
  // with the kernel's reason, e.g. "bpf(BPF_MAP_CREATE): Operation not
  // permitted" without CAP_BPF, or a refused program load with the
  // verifier's first lines.
  static Result<std::unique_ptr<ReuseportGroup>> Create(uint32_t max_members);

  // Puts the listening socket `fd` (bound with SO_REUSEPORT) at `index`. A
  // closed socket leaves its slot by itself.
  Status SetMember(uint32_t index, int fd);

  // Loads the program for `members` members and attaches it to the group
  // that `member_fd` belongs to, replacing the previous one; the counter
  // carries on. Load it once the group exists (after bind).
  Status Attach(uint32_t members, int member_fd);

 private:
  ReuseportGroup(UniqueFd counter, UniqueFd members, uint32_t max_members)
      : counter_(std::move(counter)), members_(std::move(members)), max_members_(max_members) {}

  UniqueFd counter_;
  UniqueFd members_;
  UniqueFd program_;
  uint32_t max_members_;
};

}  // namespace sb::supervisor
