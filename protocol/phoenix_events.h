// Phoenix Channels names: the one definition of every topic and event name
// the protocol reserves (docs/WORKER.md, "Protocol"), shared by the shard,
// the broker and the tests' C++ clients.
//
// Owns: names only. Does not: decide what a client may send (worker/hub).
#pragma once

#include <string_view>

namespace sb::phx {

inline constexpr std::string_view kPhoenixTopic = "phoenix";  // heartbeats' topic
inline constexpr std::string_view kHeartbeat = "heartbeat";
inline constexpr std::string_view kJoin = "phx_join";
inline constexpr std::string_view kLeave = "phx_leave";
inline constexpr std::string_view kReply = "phx_reply";
inline constexpr std::string_view kClose = "phx_close";
inline constexpr std::string_view kError = "phx_error";
inline constexpr std::string_view kPresenceState = "presence_state";
inline constexpr std::string_view kPresenceDiff = "presence_diff";

// Reply statuses.
inline constexpr std::string_view kStatusOk = "ok";
inline constexpr std::string_view kStatusError = "error";

// Events only a server may send: a client sending one is answered with an
// error, never relayed (so presence cannot be forged).
inline constexpr bool IsServerOnlyEvent(std::string_view event) {
  return event == kReply || event == kClose || event == kError || event == kPresenceState ||
         event == kPresenceDiff;
}

}  // namespace sb::phx
