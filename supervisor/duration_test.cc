#include "supervisor/duration.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>

namespace sb::supervisor {
namespace {

using std::chrono::milliseconds;

milliseconds ParseOk(std::string_view text) {
  sb::Result<milliseconds> d = ParseDuration(text);
  EXPECT_TRUE(d.ok()) << text << ": " << d.status().message();
  return d.ok() ? *d : milliseconds(-1);
}

std::string ParseError(std::string_view text) {
  sb::Result<milliseconds> d = ParseDuration(text);
  EXPECT_FALSE(d.ok()) << text << " parsed as " << (d.ok() ? d->count() : 0) << "ms";
  EXPECT_EQ(d.status().code(), sb::Status::Code::kInvalidConfig);
  return d.status().message();
}

TEST(ParseDurationTest, AcceptsEveryUnit) {
  EXPECT_EQ(ParseOk("100ms"), milliseconds(100));
  EXPECT_EQ(ParseOk("5s"), milliseconds(5000));
  EXPECT_EQ(ParseOk("2m"), milliseconds(120000));
  EXPECT_EQ(ParseOk("1h"), milliseconds(3600000));
}

TEST(ParseDurationTest, AcceptsZeroAndLeadingZeros) {
  EXPECT_EQ(ParseOk("0ms"), milliseconds(0));
  EXPECT_EQ(ParseOk("0s"), milliseconds(0));
  EXPECT_EQ(ParseOk("007s"), milliseconds(7000));
}

TEST(ParseDurationTest, AcceptsFractionsThatAreWholeMilliseconds) {
  EXPECT_EQ(ParseOk("1.5s"), milliseconds(1500));
  EXPECT_EQ(ParseOk("0.1s"), milliseconds(100));
  EXPECT_EQ(ParseOk("0.001s"), milliseconds(1));
  EXPECT_EQ(ParseOk("1.25m"), milliseconds(75000));
  EXPECT_EQ(ParseOk("0.5h"), milliseconds(1800000));
  EXPECT_EQ(ParseOk("2.0ms"), milliseconds(2));
  EXPECT_EQ(ParseOk("1.500000000000s"), milliseconds(1500));  // trailing zeros are exact
}

TEST(ParseDurationTest, RejectsFractionsBelowOneMillisecond) {
  EXPECT_EQ(ParseError("0.5ms"), "duration is not a whole number of milliseconds: '0.5ms'");
  EXPECT_EQ(ParseError("1.0001s"), "duration is not a whole number of milliseconds: '1.0001s'");
  EXPECT_EQ(ParseError("1.00000001h"),
            "duration is not a whole number of milliseconds: '1.00000001h'");
}

TEST(ParseDurationTest, RequiresAUnit) {
  EXPECT_EQ(ParseError("5"), "duration needs a unit (ms, s, m, h): '5'");
  EXPECT_EQ(ParseError("1.5"), "duration needs a unit (ms, s, m, h): '1.5'");
}

TEST(ParseDurationTest, RejectsUnknownUnits) {
  EXPECT_EQ(ParseError("5sec"), "unknown duration unit 'sec' in '5sec' (use ms, s, m or h)");
  EXPECT_EQ(ParseError("5S"), "unknown duration unit 'S' in '5S' (use ms, s, m or h)");
  EXPECT_EQ(ParseError("5 s"), "unknown duration unit ' s' in '5 s' (use ms, s, m or h)");
  EXPECT_EQ(ParseError("5d"), "unknown duration unit 'd' in '5d' (use ms, s, m or h)");
  EXPECT_EQ(ParseError("1e3ms"), "unknown duration unit 'e3ms' in '1e3ms' (use ms, s, m or h)");
}

TEST(ParseDurationTest, RejectsMalformedNumbers) {
  EXPECT_EQ(ParseError(""), "duration is empty (write e.g. 5s or 100ms)");
  EXPECT_EQ(ParseError("-5s"), "duration must not be negative: '-5s'");
  EXPECT_EQ(ParseError("+5s"), "duration must start with a number (e.g. 5s): '+5s'");
  EXPECT_EQ(ParseError("s"), "duration must start with a number (e.g. 5s): 's'");
  EXPECT_EQ(ParseError(".5s"), "duration must start with a number (e.g. 5s): '.5s'");
  EXPECT_EQ(ParseError("5.s"), "duration has a '.' without digits after it: '5.s'");
  EXPECT_EQ(ParseError("infinity"), "duration must start with a number (e.g. 5s): 'infinity'");
}

TEST(ParseDurationTest, RejectsOverflow) {
  // The largest representable value parses; one more millisecond does not.
  EXPECT_EQ(ParseOk("9223372036854775807ms"), milliseconds(INT64_MAX));
  EXPECT_EQ(ParseError("9223372036854775808ms"), "duration is too large: '9223372036854775808ms'");
  EXPECT_EQ(ParseError("99999999999999999999999s"),
            "duration is too large: '99999999999999999999999s'");
  EXPECT_EQ(ParseError("9223372036854776s"), "duration is too large: '9223372036854776s'");
  EXPECT_EQ(ParseError("9223372036854775.808s"), "duration is too large: '9223372036854775.808s'");
  EXPECT_EQ(ParseOk("9223372036854775.807s"), milliseconds(INT64_MAX));
  EXPECT_EQ(ParseError("2562047788016h"), "duration is too large: '2562047788016h'");
}

TEST(FormatDurationTest, UsesTheLargestExactUnit) {
  EXPECT_EQ(FormatDuration(milliseconds(0)), "0ms");
  EXPECT_EQ(FormatDuration(milliseconds(1)), "1ms");
  EXPECT_EQ(FormatDuration(milliseconds(1500)), "1500ms");
  EXPECT_EQ(FormatDuration(milliseconds(5000)), "5s");
  EXPECT_EQ(FormatDuration(milliseconds(90000)), "90s");
  EXPECT_EQ(FormatDuration(milliseconds(120000)), "2m");
  EXPECT_EQ(FormatDuration(milliseconds(7200000)), "2h");
  EXPECT_EQ(FormatDuration(milliseconds(-5000)), "-5s");
  EXPECT_EQ(FormatDuration(milliseconds(INT64_MIN)), "-9223372036854775808ms");
}

TEST(FormatDurationTest, RoundTripsThroughParse) {
  for (int64_t ms : {int64_t{0}, int64_t{1}, int64_t{999}, int64_t{1000}, int64_t{61000},
                     int64_t{3600000}, int64_t{3600001}, INT64_MAX}) {
    EXPECT_EQ(ParseOk(FormatDuration(milliseconds(ms))), milliseconds(ms)) << ms;
  }
}

}  // namespace
}  // namespace sb::supervisor
