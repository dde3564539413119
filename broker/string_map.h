// StringMap: an unordered_map keyed by std::string that is searched with a
// std::string_view, so looking a topic up never builds a temporary string.
//
// Owns nothing; a type alias shared by the broker's tables (interest,
// presence, links), which are all keyed by topics or routing ids.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace sb::broker {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

}  // namespace sb::broker
