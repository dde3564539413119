// FUZZ_CHECK: the one assertion of the libFuzzer targets (protocol/fuzz,
// worker/fuzz).
//
// Owns: checking a property of what a fuzzer decoded, in every build (not
// assert: fuzzers are built with NDEBUG in RelWithDebInfo), and aborting
// with the condition and its place so libFuzzer keeps the input. Does not:
// recover or count; fuzz targets only.
#pragma once

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond)                                                            \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                 \
    }                                                                               \
  } while (0)
