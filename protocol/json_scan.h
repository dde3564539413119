// JsonScan: the exact source bytes of values inside JSON text a parser has
// already accepted.
//
// Owns: skipping whitespace, a string and a whole value by their bytes, so a
// payload can be relayed as the client wrote it (Phoenix's array elements,
// the HTTP API's payload member) without re-serialising it. Relies on the
// text being valid JSON (strings closed, brackets balanced, no comments):
// call it only after a parse succeeded. Header-only, any thread.
#pragma once

#include <cstddef>
#include <string_view>

namespace sb::json_scan {

inline size_t SkipSpace(std::string_view t, size_t i) {
  while (i < t.size() && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r')) ++i;
  return i;
}

// `i` is at an opening quote; returns the index after the closing one.
inline size_t SkipString(std::string_view t, size_t i) {
  for (++i; i < t.size(); ++i) {
    if (t[i] == '\\') {
      ++i;  // the escaped character can never close the string
    } else if (t[i] == '"') {
      return i + 1;
    }
  }
  return t.size();
}

// `i` is at the first byte of a value; returns the index after its last.
inline size_t SkipValue(std::string_view t, size_t i) {
  const char c = t[i];
  if (c == '"') return SkipString(t, i);
  if (c == '[' || c == '{') {
    int depth = 0;
    while (i < t.size()) {
      const char d = t[i];
      if (d == '"') {
        i = SkipString(t, i);
        continue;
      }
      if (d == '[' || d == '{') {
        ++depth;
      } else if ((d == ']' || d == '}') && --depth == 0) {
        return i + 1;
      }
      ++i;
    }
    return t.size();
  }
  while (i < t.size() && t[i] != ',' && t[i] != ']' && t[i] != '}' && t[i] != ' ' && t[i] != '\t' &&
         t[i] != '\n' && t[i] != '\r') {
    ++i;
  }
  return i;
}

}  // namespace sb::json_scan
