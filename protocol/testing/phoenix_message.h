// Test helper: a client's Phoenix message (protocol/phoenix.h) built in one
// call, as the worker's decoder would have produced it from the wire.
//
// Owns: nothing but the construction. For unit tests only; no program
// links it.
#pragma once

#include <optional>
#include <string>
#include <utility>

#include "protocol/phoenix.h"

namespace sb::test {

// [join_ref, ref, topic, event, payload]; nullopt refs are JSON null, and
// `payload` is the raw JSON text of the payload element.
inline phx::Message Msg(std::optional<std::string> join_ref, std::optional<std::string> ref,
                        std::string topic, std::string event, std::string payload = "{}") {
  phx::Message m;
  m.join_ref = std::move(join_ref);
  m.ref = std::move(ref);
  m.topic = std::move(topic);
  m.event = std::move(event);
  m.payload = std::move(payload);
  return m;
}

}  // namespace sb::test
