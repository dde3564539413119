// Spec loader: Switchboard's YAML configuration -> a validated TreeSpec.
//
// Owns: the configuration schema (documented key by key in config/README.md),
// its defaults (OTP's where OTP has one), every validation rule, replica
// expansion, and the translation of yaml-cpp exceptions into Status values,
// which happens here and nowhere else. Does not: start, diff or reload
// anything, or keep the YAML document: the TreeSpec it returns is plain data.
// Stateless and synchronous; call it from any thread.
#pragma once

#include <string>

#include "common/status.h"
#include "supervisor/tree_spec.h"

namespace sb::supervisor {

// Reads and validates the file at `path`. A file that cannot be read gives
// IoError("unable to read <path>: <strerror>"); anything wrong with its
// content gives what LoadTreeSpecString gives. TreeSpec::file is `path` as
// given.
sb::Result<TreeSpec> LoadTreeSpecFile(const std::string& path);

// Validates `yaml`, naming it `file_name` in messages and in TreeSpec::file.
// Stops at the first problem and returns InvalidConfig with one line:
//   <file>:<line>:<column>: key '<dotted.key.path>': <what is wrong>
// e.g. "a.yaml:7:13: key 'supervisor.children[1].strategy': unknown strategy
// 'one_for_none' (expected one of ...)". Line and column are 1-based and point
// at the offending value, or at the key itself for an unknown or duplicate
// key. YAML syntax errors and problems not tied to a key (an empty file, a
// top level that is not a map) omit the "key '...': " part. Never throws.
sb::Result<TreeSpec> LoadTreeSpecString(const std::string& yaml, const std::string& file_name);

}  // namespace sb::supervisor
