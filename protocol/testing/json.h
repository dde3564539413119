// Test helper: JSON text as a value, so tests compare documents, not bytes.
//
// Owns: nothing but the parse. For unit tests only (worker, broker); no
// program links it. A text that is not JSON throws boost::system::system_error,
// which gtest reports as a failure of the test that passed it.
#pragma once

#include <boost/json.hpp>
#include <string_view>

namespace sb::test {

// `text` parsed, for EXPECT_EQ(Json(got), Json(R"({"expected":1})")).
inline boost::json::value Json(std::string_view text) {
  return boost::json::parse(boost::json::string_view(text.data(), text.size()));
}

}  // namespace sb::test
