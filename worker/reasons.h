// Reasons: the shard's vocabulary for why a socket was closed, an HTTP
// request refused or a client message rejected.
//
// Owns: the three enums whose values are metric label values (their
// spellings live beside the metrics, worker/worker_metrics.cc) and the
// mapping from a WebSocket close code the protocol layer chose to the reason
// it is counted under. Plain values: the pure HTTP decision and the gateway
// use them without depending on the metrics.
#pragma once

#include <cstdint>

#include "protocol/websocket.h"

namespace sb::worker {

enum class CloseReason : uint8_t {
  kClient,           // the client closed (close frame or EOF)
  kIdleTimeout,      // nothing received for --idle-timeout
  kSlowConsumer,     // outbound queue over --max-outbound
  kProtocolError,    // RFC 6455 violation (1002)
  kInvalidPayload,   // not a Phoenix message / invalid UTF-8 (1007)
  kTooBig,           // message over --max-frame (1009)
  kUnsupportedData,  // binary message of a kind a client may not send (1003)
  kShutdown,         // SIGTERM drain (1012)
  kIoError,          // the socket failed (reset, write error)
  kMessageTimeout,   // a data message not complete within --message-timeout (1008)
  kCount
};

enum class Refusal : uint8_t {
  kNotFound,
  kBadRequest,
  kMethodNotAllowed,
  kForbidden,
  kForbiddenOrigin,  // Origin check failed (--check-origin, --allowed-origins)
  kUnauthorized,
  kOverloaded,
  kDraining,
  kTimeout,
  kAddressLimit,  // closed at accept: its address holds --max-connections-per-ip sockets
  kCount
};

enum class Rejection : uint8_t {
  kRateLimited,
  kUnmatchedTopic,
  kReservedEvent,
  kStaleJoinRef,
  kCount
};

// The reason a close with `code` (chosen by protocol/websocket or
// protocol/phoenix for bad input) is counted under.
constexpr CloseReason ReasonForCloseCode(uint16_t code) {
  switch (code) {
    case ws::close_code::kMessageTooBig:
      return CloseReason::kTooBig;
    case ws::close_code::kInvalidPayload:
      return CloseReason::kInvalidPayload;
    case ws::close_code::kUnsupportedData:
      return CloseReason::kUnsupportedData;
    default:
      return CloseReason::kProtocolError;
  }
}

}  // namespace sb::worker
