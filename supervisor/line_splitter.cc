#include "supervisor/line_splitter.h"

namespace sb::supervisor {

void LineSplitter::Emit(std::string_view line, bool truncated, const LineFn& on_line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  on_line(line, truncated);
}

void LineSplitter::Feed(std::string_view data, const LineFn& on_line) {
  while (!data.empty()) {
    size_t nl = data.find('\n');
    size_t room = max_line_ - partial_.size();
    if (nl == std::string_view::npos || nl > room) {
      size_t take = std::min(room, data.size());
      partial_.append(data.substr(0, take));
      data.remove_prefix(take);
      if (partial_.size() == max_line_) {
        Emit(partial_, true, on_line);
        partial_.clear();
      }
      continue;
    }
    if (partial_.empty()) {
      Emit(data.substr(0, nl), false, on_line);
    } else {
      partial_.append(data.substr(0, nl));
      Emit(partial_, false, on_line);
      partial_.clear();
    }
    data.remove_prefix(nl + 1);
  }
}

void LineSplitter::Finish(const LineFn& on_line) {
  if (!partial_.empty()) Emit(partial_, false, on_line);
  partial_.clear();
}

}  // namespace sb::supervisor
