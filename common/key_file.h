// KeyFile: reading a secret that lives in a file only its owner may open.
//
// Owns: the one rule for the node's key files (the shards' API key, and the
// copy `switchboard publish` reads): the file's first line, without its
// line end, from a file neither its group nor others can access, at least
// `min_bytes` long. Does not: create keys or log them (messages name the
// path, never the contents). A plain function; blocking, any thread.
#pragma once

#include <cstddef>
#include <string>

#include "common/status.h"

namespace sb {

// InvalidConfig (naming `path` and why) if the file cannot be stat'ed or
// read, if group or others have any permission on it, or if the key is
// empty or shorter than `min_bytes`.
Result<std::string> ReadPrivateKeyFile(const std::string& path, size_t min_bytes);

}  // namespace sb
