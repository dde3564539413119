// ReuseportProgram: the eBPF program that spreads the connections of one
// SO_REUSEPORT group round-robin over its members.
//
// Owns: the instructions, as plain data (struct bpf_insn from <linux/bpf.h>),
// built for given map fds and member count; no syscall, so it is unit-tested
// by running it in a small interpreter. The effects (creating the maps,
// loading and attaching the program) are in supervisor/reuseport_group.
// Program type BPF_PROG_TYPE_SK_REUSEPORT: the kernel runs it when a SYN
// reaches the group, and the member it selects queues the connection.
#pragma once

#include <linux/bpf.h>

#include <cstdint>
#include <vector>

namespace sb::supervisor {

// The program, in order:
//   counter = map_lookup(counter_map, 0)        a one-entry ARRAY of u64
//   if counter == NULL: return SK_PASS
//   i = atomic_fetch_add(*counter, 1) % members (BPF_ATOMIC | BPF_FETCH)
//   sk_select_reuseport(ctx, member_map, &i, 0) a REUSEPORT_SOCKARRAY
//   return SK_PASS
// SK_PASS without a selection (an empty slot: a member being rebound) makes
// the kernel fall back to its hash, so a connection is never dropped here.
// `counter_map_fd` and `member_map_fd` go into BPF_LD_IMM64 pseudo map-fd
// loads. `members` must be >= 1.
std::vector<bpf_insn> RoundRobinProgram(int counter_map_fd, int member_map_fd, uint32_t members);

}  // namespace sb::supervisor
