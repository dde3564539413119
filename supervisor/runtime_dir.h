// Runtime directories: where the daemon puts what no other local user may
// touch (the control socket, the lock, the notify socket, the events file),
// and the check that nobody else can.
//
// Owns: creating a missing runtime directory (mode 0700) and the decision
// whether an existing one is trusted: a directory owned by this user or by
// root that neither its group nor others can write (and, if the path is a
// symbolic link, a link that this user or root made). In a directory another
// user owns or can write, that user could plant a symlink the daemon would
// write through, a fake socket it would talk to, or a file it would append
// to; /tmp/switchboard, created first by someone else after a reboot, is the
// case in point. Does not: check the directory's parents (a parent writable
// by others but sticky, like /tmp, cannot take our directory away from us),
// or keep any state. Plain functions, called at start-up and on reload.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <string>

#include "common/status.h"

namespace sb::supervisor {

// Why a directory with these stat() results is not trusted by a process whose
// effective uid is `euid`, or "" if it is. `link` holds the lstat() results
// when the path is a symbolic link, else null. The decision alone, no I/O.
std::string DistrustReason(const struct stat& st, const struct stat* link, uid_t euid);

// Checks an existing directory. Fails with InvalidConfig naming it as `what`
// ("runtime directory /tmp/switchboard is owned by uid 65534; only this user
// (uid 1000) or root may own it"), or with the stat() error.
Status CheckTrustedDir(const std::string& dir, const std::string& what);

// Creates `dir` (and missing parents) with mode 0700 if it does not exist,
// then checks it as CheckTrustedDir does: a directory someone else created
// first, even a moment before us, is refused like any other.
Status EnsureRuntimeDir(const std::string& dir);

}  // namespace sb::supervisor
