// JsonDepth: how deep a JSON value nests, counted the way protocol/limits.h
// bounds presence metas — a scalar is 0, an object or array of scalars 1.
//
// Owns: the one measure the hub (at a join) and the mesh codec (in a hello
// or a presence change) compare with limits::kMaxPresenceMetaDepth, so both
// sides agree on what is too deep. Recursion is bounded by the depth the
// caller's parser allowed. Header-only, any thread.
#pragma once

#include <algorithm>
#include <boost/json/value.hpp>
#include <cstddef>

namespace sb {

inline size_t JsonDepth(const boost::json::value& v) {
  size_t inner = 0;
  if (const boost::json::object* o = v.if_object()) {
    for (const auto& field : *o) inner = std::max(inner, JsonDepth(field.value()));
  } else if (const boost::json::array* a = v.if_array()) {
    for (const boost::json::value& e : *a) inner = std::max(inner, JsonDepth(e));
  } else {
    return 0;
  }
  return inner + 1;
}

}  // namespace sb
