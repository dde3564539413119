// LineSplitter: turns a child's output byte stream into log lines.
//
// Owns: the bytes of one unfinished line, never more than `max_line` of
// them: a longer line is emitted in pieces of `max_line` bytes, so a child
// that writes without newlines cannot grow the daemon's memory. Pure: no I/O.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace sb::supervisor {

class LineSplitter {
 public:
  using LineFn = std::function<void(std::string_view line, bool truncated)>;

  explicit LineSplitter(size_t max_line = 8192) : max_line_(max_line) {}

  // Emits every complete line in `data` (without the '\n'; a trailing '\r' is
  // dropped too). `truncated` is true for a piece of an over-long line.
  void Feed(std::string_view data, const LineFn& on_line);
  // End of stream: emits what is left, if anything.
  void Finish(const LineFn& on_line);

  size_t buffered() const { return partial_.size(); }

 private:
  void Emit(std::string_view line, bool truncated, const LineFn& on_line);
  size_t max_line_;
  std::string partial_;
};

}  // namespace sb::supervisor
