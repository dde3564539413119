#include "supervisor/event_log.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <boost/json.hpp>

namespace sb::supervisor {
namespace {

TEST(EventLog, EncodesAllFieldsWithNulls) {
  TreeEvent ev{"exited", "shard.0", 123, std::nullopt, SIGKILL};
  std::string line = EncodeEventLine(12.3456789, ev);
  ASSERT_EQ(line.back(), '\n');
  auto v = boost::json::parse(line).as_object();
  EXPECT_NEAR(v["ts"].to_number<double>(), 12.345679, 1e-9);
  EXPECT_EQ(v["event"].as_string(), "exited");
  EXPECT_EQ(v["id"].as_string(), "shard.0");
  EXPECT_EQ(v["pid"].as_int64(), 123);
  EXPECT_TRUE(v["status"].is_null());
  EXPECT_EQ(v["signal"].as_string(), "SIGKILL");
  EXPECT_FALSE(v.contains("reason"));
}

TEST(EventLog, EscapesReason) {
  TreeEvent ev{"gave_up", "root"};
  ev.reason = "quote \" and newline \n";
  auto v = boost::json::parse(EncodeEventLine(1.0, ev)).as_object();
  EXPECT_EQ(v["reason"].as_string(), "quote \" and newline \n");
  EXPECT_TRUE(v["pid"].is_null());
}

}  // namespace
}  // namespace sb::supervisor
