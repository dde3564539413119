// History rules: which topics keep history, how much, how long — the
// `--history PATTERN=SIZE/TTL` flag every program that sequences or holds
// history takes (shards and broker), and how a stream's epoch is written for
// clients.
//
// Owns: parsing and matching the rules, the defaults (docs/WORKER.md,
// History). Does not: hold history (broker/history_store, worker/history).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace sb::history {

struct Rule {
  std::string pattern;  // an exact topic, or a prefix and a final '*'
  uint32_t size = 0;    // messages kept per topic, 1..kMaxSize
  int64_t ttl_ms = 0;   // how long a message is kept, 1 ms..kMaxTtlMs
};

inline constexpr uint32_t kMaxSize = 1'000'000;
inline constexpr int64_t kMaxTtlMs = int64_t{7} * 24 * 3600 * 1000;
// How many messages after its offset a join may ask to recover by default
// (--recovery-max): beyond, recovered:false and the app reloads its state.
inline constexpr uint32_t kDefaultRecoveryMax = 300;
// A process's history bound by default (--history-max-bytes): the oldest
// messages of any topic go first beyond it.
inline constexpr uint64_t kDefaultMaxBytes = uint64_t{64} << 20;

// "room:*=1000/10m": SIZE a count, TTL a number with a unit of ms, s, m or h.
// InvalidConfig naming the flag's text and what is wrong otherwise.
Result<Rule> ParseRule(std::string_view text);

// The rules of one process, in the order given: the first whose pattern
// matches a topic is that topic's.
class Rules {
 public:
  Rules() = default;
  explicit Rules(std::vector<Rule> rules) : rules_(std::move(rules)) {}
  // Parses each text (ParseRule); the first error is returned.
  static Result<Rules> Parse(const std::vector<std::string>& texts);

  const Rule* Find(std::string_view topic) const;
  bool empty() const { return rules_.empty(); }
  const std::vector<Rule>& rules() const { return rules_; }

 private:
  std::vector<Rule> rules_;
};

// Where a client says it is in a topic's stream: a join's
// {"recover": {"epoch": "<16 hex digits>", "offset": N}}.
struct Position {
  uint64_t stream = 0;
  uint64_t offset = 0;
  bool operator==(const Position&) const = default;
};

// A stream's epoch as clients see it: 16 lowercase hex digits.
std::string FormatEpoch(uint64_t stream);
// The inverse: nullopt unless `text` is 16 hex digits naming a nonzero stream.
std::optional<uint64_t> ParseEpoch(std::string_view text);

}  // namespace sb::history
