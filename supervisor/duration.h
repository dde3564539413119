// Durations as operators write them in YAML: "100ms", "5s", "2m", "1h".
//
// Owns: the one place where text becomes a std::chrono::milliseconds and
// back. A unit is always required: a bare "5" is rejected, because OTP counts
// some settings in seconds and others in milliseconds and a silent guess is
// worse than an error. Does not: know about YAML, marks or key paths (the spec
// loader adds those to the message), or accept negative values or "infinity"
// (callers that allow infinity check for it first). Pure functions.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "common/status.h"

namespace sb::supervisor {

// Parses `<digits>[.<digits>]<unit>` with unit ms, s, m or h, e.g. "100ms",
// "5s", "1.5s", "2m". A fraction is accepted only when the result is a whole
// number of milliseconds ("1.5s" = 1500ms; "1.0001s" and "0.5ms" are errors).
// No sign, no spaces, no exponent. Errors (InvalidConfig) quote the input:
// "duration needs a unit (ms, s, m, h): '5'". Zero is accepted here; callers
// that need a positive value check for it.
sb::Result<std::chrono::milliseconds> ParseDuration(std::string_view text);

// The shortest exact form in the largest unit that divides the value:
// 7200000ms -> "2h", 90000ms -> "90s", 1500ms -> "1500ms", 0 -> "0ms".
// ParseDuration(FormatDuration(d)) == d for every d >= 0.
std::string FormatDuration(std::chrono::milliseconds d);

}  // namespace sb::supervisor
