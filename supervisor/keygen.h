// Keygen: `switchboard keygen --secret-file PATH [--force]`, the node's
// CURVE keypair for its broker's peer links (docs/SECURITY.md).
//
// Owns: the command — a new keypair, the secret key written to PATH
// (created 0600, never through a symbolic link, an existing file replaced
// only with --force), the public key printed on stdout, one line, for the
// other nodes' configuration — and its exit code (0 written; 1 refused or
// failed, the reason on stderr). Does not: generate or store keys itself
// (common/curve). Blocking; runs on the calling thread.
#pragma once

#include <ostream>
#include <string>

namespace sb::supervisor {

int RunKeygen(const std::string& secret_file, bool force, std::ostream& out, std::ostream& err);

}  // namespace sb::supervisor
