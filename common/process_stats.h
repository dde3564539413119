// Process stats: what a Switchboard program reports about its own process
// (open file descriptors, resident memory), read from /proc/self.
//
// Owns: reading and parsing /proc/self/fd and /proc/self/statm. Does not:
// cache, sample on a schedule or export anything; callers (the daemon's and
// the shard's housekeeping hooks) decide when to read and where the figure
// goes. Plain functions, any thread; each call opens and closes what it reads.
#pragma once

#include <cstdint>
#include <optional>

namespace sb {

// File descriptors open in this process, not counting the one used to list
// them. nullopt if /proc/self/fd cannot be read.
std::optional<int> OpenFds();

// Resident set size of this process in bytes (/proc/self/statm's second
// field times the page size). nullopt if it cannot be read.
std::optional<int64_t> ResidentBytes();

}  // namespace sb
