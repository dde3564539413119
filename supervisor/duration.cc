#include "supervisor/duration.h"

#include <cstdint>
#include <limits>
#include <string>

namespace sb::supervisor {
namespace {

constexpr int64_t kMaxMillis = std::numeric_limits<std::chrono::milliseconds::rep>::max();

struct Unit {
  std::string_view suffix;
  int64_t millis;
};
// Largest unit first: FormatDuration uses the first one that divides exactly.
constexpr Unit kUnits[] = {{"h", 3'600'000}, {"m", 60'000}, {"s", 1'000}, {"ms", 1}};

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

std::string Quoted(std::string_view text) { return "'" + std::string(text) + "'"; }

sb::Status Invalid(std::string_view what, std::string_view text) {
  return sb::Status::InvalidConfig(std::string(what) + ": " + Quoted(text));
}

}  // namespace

sb::Result<std::chrono::milliseconds> ParseDuration(std::string_view text) {
  if (text.empty()) return sb::Status::InvalidConfig("duration is empty (write e.g. 5s or 100ms)");
  if (text.front() == '-') return Invalid("duration must not be negative", text);

  size_t pos = 0;
  int64_t whole = 0;
  bool overflow = false;
  while (pos < text.size() && IsDigit(text[pos])) {
    const int digit = text[pos] - '0';
    if (whole > (kMaxMillis - digit) / 10) overflow = true;
    if (!overflow) whole = whole * 10 + digit;
    ++pos;
  }
  if (pos == 0) return Invalid("duration must start with a number (e.g. 5s)", text);

  // The fraction is kept as digits, not as a double, so that "0.1s" is exactly
  // 100ms and an inexact value is an error rather than a rounding surprise.
  std::string_view fraction;
  if (pos < text.size() && text[pos] == '.') {
    const size_t start = ++pos;
    while (pos < text.size() && IsDigit(text[pos])) ++pos;
    fraction = text.substr(start, pos - start);
    if (fraction.empty()) return Invalid("duration has a '.' without digits after it", text);
  }

  const std::string_view suffix = text.substr(pos);
  if (suffix.empty()) return Invalid("duration needs a unit (ms, s, m, h)", text);
  const Unit* unit = nullptr;
  for (const Unit& u : kUnits) {
    if (u.suffix == suffix) unit = &u;
  }
  if (unit == nullptr) {
    return sb::Status::InvalidConfig("unknown duration unit " + Quoted(suffix) + " in " +
                                     Quoted(text) + " (use ms, s, m or h)");
  }

  if (overflow || whole > kMaxMillis / unit->millis) return Invalid("duration is too large", text);
  int64_t millis = whole * unit->millis;

  while (!fraction.empty() && fraction.back() == '0') fraction.remove_suffix(1);
  if (!fraction.empty()) {
    // No unit is longer than 3'600'000ms, so more than 7 significant fraction
    // digits can never give whole milliseconds; the cap also keeps the
    // arithmetic below far from overflow.
    if (fraction.size() > 7) return Invalid("duration is not a whole number of milliseconds", text);
    int64_t numerator = 0;
    int64_t denominator = 1;
    for (char c : fraction) {
      numerator = numerator * 10 + (c - '0');
      denominator *= 10;
    }
    const int64_t scaled = numerator * unit->millis;
    if (scaled % denominator != 0) {
      return Invalid("duration is not a whole number of milliseconds", text);
    }
    if (millis > kMaxMillis - scaled / denominator) return Invalid("duration is too large", text);
    millis += scaled / denominator;
  }
  return std::chrono::milliseconds(millis);
}

std::string FormatDuration(std::chrono::milliseconds d) {
  const int64_t count = d.count();
  if (count == 0) return "0ms";
  // Work on the magnitude as unsigned so that the most negative value, which
  // has no positive counterpart, still formats.
  const bool negative = count < 0;
  const uint64_t magnitude =
      negative ? uint64_t{0} - static_cast<uint64_t>(count) : static_cast<uint64_t>(count);
  std::string sign = negative ? "-" : "";
  for (const Unit& u : kUnits) {
    const uint64_t unit_millis = static_cast<uint64_t>(u.millis);
    if (magnitude % unit_millis == 0) {
      return sign + std::to_string(magnitude / unit_millis) + std::string(u.suffix);
    }
  }
  return sign + std::to_string(magnitude) + "ms";  // unreachable: 1ms divides everything
}

}  // namespace sb::supervisor
