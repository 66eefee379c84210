// Private to the codec: applying the RFC 6455 §5.3 client-to-server mask.
//
// The mask is a 4-byte key XORed cyclically over the payload; because frames arrive in arbitrary
// pieces, the caller passes the payload offset of the first byte so the key is rotated to the
// right phase. Thread-safety: pure function, reentrant.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace car::ws::detail {

// dst[i] = src[i] ^ key[(offset + i) % 4] for i in [0, n). dst may equal src (in-place) but the
// ranges must not otherwise overlap. Works a 64-bit word at a time: the key repeated twice is one
// word, and memcpy in and out keeps every access legal at any alignment.
inline void mask_copy(unsigned char* dst, const unsigned char* src, std::size_t n,
                      const std::array<unsigned char, 4>& key, std::size_t offset) noexcept {
  unsigned char phased[8];
  for (std::size_t i = 0; i < 8; ++i) phased[i] = key[(offset + i) % 4];
  std::uint64_t key_word;
  std::memcpy(&key_word, phased, sizeof key_word);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, src + i, sizeof w);
    w ^= key_word;
    std::memcpy(dst + i, &w, sizeof w);
  }
  // 8 is a multiple of 4, so after whole words the phase is unchanged.
  for (; i < n; ++i) dst[i] = static_cast<unsigned char>(src[i] ^ phased[i % 8]);
}

}  // namespace car::ws::detail
