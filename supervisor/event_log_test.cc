#include "supervisor/event_log.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <boost/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace sb::supervisor {
namespace {

TEST(EventLog, EncodesAllFieldsWithNulls) {
  TreeEvent ev{.kind = EventKind::kExited, .id = "shard.0", .pid = 123, .signal = SIGKILL};
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
  TreeEvent ev{.kind = EventKind::kGaveUp, .id = "root"};
  ev.reason = "quote \" and newline \n";
  auto v = boost::json::parse(EncodeEventLine(1.0, ev)).as_object();
  EXPECT_EQ(v["reason"].as_string(), "quote \" and newline \n");
  EXPECT_TRUE(v["pid"].is_null());
}

// Users and tests read these spellings: they never change.
TEST(EventLog, EveryKindHasTheSpellingTheEventsFileAlwaysHad) {
  const std::vector<std::pair<EventKind, std::string>> expected = {
      {EventKind::kStarted, "started"},   {EventKind::kReady, "ready"},
      {EventKind::kExited, "exited"},     {EventKind::kRestarting, "restarting"},
      {EventKind::kStopping, "stopping"}, {EventKind::kStopped, "stopped"},
      {EventKind::kGaveUp, "gave_up"},    {EventKind::kDaemonExit, "daemon_exit"},
  };
  ASSERT_EQ(expected.size(), kEventKindNames.size());
  for (const auto& [kind, name] : expected) {
    EXPECT_EQ(EventName(kind), name);
    EXPECT_EQ(ParseEventKind(name), kind) << name;
  }
  EXPECT_EQ(ParseEventKind("gave up"), std::nullopt);
  EXPECT_EQ(ParseEventKind(""), std::nullopt);
}

TEST(EventLog, LineIsExactlyTheDocumentedForm) {
  EXPECT_EQ(
      EncodeEventLine(
          12.5,
          TreeEvent{.kind = EventKind::kExited, .id = "shard.0", .pid = 123, .signal = SIGKILL}),
      "{\"ts\":12.500000,\"event\":\"exited\",\"id\":\"shard.0\",\"pid\":123,"
      "\"status\":null,\"signal\":\"SIGKILL\"}\n");
  EXPECT_EQ(EncodeEventLine(3.0, TreeEvent{.kind = EventKind::kDaemonExit,
                                           .id = "root",
                                           .status = 1,
                                           .reason = "gave up"}),
            "{\"ts\":3.000000,\"event\":\"daemon_exit\",\"id\":\"root\",\"pid\":null,"
            "\"status\":1,\"signal\":null,\"reason\":\"gave up\"}\n");
}

}  // namespace
}  // namespace sb::supervisor
