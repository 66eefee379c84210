#pragma once

// Private to the stdio framers: how they hold a partial message between feed() calls.

#include <cstddef>
#include <new>
#include <string>
#include <string_view>

namespace car::stdio::detail {

// After a large message the buffer is freed rather than cleared: one 16 MiB message should not
// pin 16 MiB for the rest of the connection's life.
constexpr std::size_t kKeepCapacity = 64 * 1024;

inline void release(std::string& buffer) noexcept {
  if (buffer.capacity() > kKeepCapacity) {
    std::string().swap(buffer);
  } else {
    buffer.clear();
  }
}

// Releases a buffer when a delivery ends, even if the upcall throws, so that a later feed() does
// not glue new bytes onto a message that was already reported.
class ReleaseOnExit {
 public:
  explicit ReleaseOnExit(std::string& buffer) noexcept : buffer_(buffer) {}
  ReleaseOnExit(const ReleaseOnExit&) = delete;
  ReleaseOnExit& operator=(const ReleaseOnExit&) = delete;
  ~ReleaseOnExit() { release(buffer_); }

 private:
  std::string& buffer_;
};

// Appends without letting std::bad_alloc escape; the caller turns a failure into a framing error.
inline bool try_append(std::string& buffer, std::string_view bytes) noexcept {
  try {
    buffer.append(bytes);
    return true;
  } catch (const std::bad_alloc&) {
    return false;
  }
}

}  // namespace car::stdio::detail
