// FrameRef: one encoded WebSocket frame, shared by every socket it goes to.
//
// Owns: a heap block with the frame's bytes and a reference count. This is
// what makes fan-out encode-once: a broadcast is framed once and each
// recipient's outbound queue holds a FrameRef to the same bytes. The count is
// a plain integer, not std::shared_ptr's atomic one: frames never leave the
// shard's loop thread, and a broadcast to 1,000 sockets takes 1,000
// references, each of which would otherwise be a locked instruction.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string_view>
#include <utility>

namespace sb::worker {

class FrameRef {
 public:
  // Bytes before the frame in its heap block: the reference count and size.
  static constexpr size_t kHeaderBytes = 16;

  FrameRef() = default;
  // A block of `size` bytes to be filled through mutable_data().
  static FrameRef Allocate(size_t size) {
    void* p = std::malloc(sizeof(Block) + size);
    if (!p) throw std::bad_alloc();
    FrameRef f;
    f.block_ = new (p) Block{1, size};
    return f;
  }
  static FrameRef Copy(std::string_view a, std::string_view b = {}) {
    FrameRef f = Allocate(a.size() + b.size());
    if (!a.empty()) std::memcpy(f.mutable_data(), a.data(), a.size());
    if (!b.empty()) std::memcpy(f.mutable_data() + a.size(), b.data(), b.size());
    return f;
  }

  FrameRef(const FrameRef& o) : block_(o.block_) {
    if (block_) ++block_->refs;
  }
  FrameRef(FrameRef&& o) noexcept : block_(std::exchange(o.block_, nullptr)) {}
  FrameRef& operator=(FrameRef o) noexcept {
    std::swap(block_, o.block_);
    return *this;
  }
  ~FrameRef() {
    if (block_ && --block_->refs == 0) std::free(block_);
  }

  const char* data() const { return reinterpret_cast<const char*>(block_ + 1); }
  char* mutable_data() { return reinterpret_cast<char*>(block_ + 1); }
  size_t size() const { return block_ ? block_->size : 0; }
  explicit operator bool() const { return block_ != nullptr; }

 private:
  struct Block {
    uint64_t refs;
    size_t size;
  };
  static_assert(sizeof(Block) == kHeaderBytes);
  Block* block_ = nullptr;
};

}  // namespace sb::worker
