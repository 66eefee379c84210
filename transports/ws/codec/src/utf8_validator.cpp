#include "car/ws/utf8_validator.hpp"

#include <cstring>

namespace car::ws {

namespace {

constexpr std::uint64_t high_bits = 0x8080808080808080ULL;

// Length of the ASCII prefix of [p, end), found eight bytes at a time. memcpy keeps the load
// legal for any alignment; compilers turn it into a single unaligned load.
std::size_t ascii_prefix(const unsigned char* p, const unsigned char* end) noexcept {
  const unsigned char* start = p;
  while (end - p >= 8) {
    std::uint64_t word;
    std::memcpy(&word, p, sizeof word);
    if ((word & high_bits) != 0) break;
    p += 8;
  }
  while (p != end && *p < 0x80) ++p;
  return static_cast<std::size_t>(p - start);
}

}  // namespace

bool Utf8Validator::feed(std::string_view bytes) noexcept {
  if (failed_) return false;
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const auto* end = p + bytes.size();
  while (p != end) {
    if (remaining_ == 0) {
      // Most JSON is ASCII: skip whole runs of it before looking at a byte individually.
      p += ascii_prefix(p, end);
      if (p == end) break;
      const unsigned char lead = *p++;
      // The table of RFC 3629 §4, folded into lead-byte classes. For the lead bytes whose
      // well-formed range of the second byte is narrower than 0x80-0xBF, next_low_/next_high_
      // encode the restriction; that single check is what rules out overlongs (E0, F0),
      // surrogates (ED) and code points beyond U+10FFFF (F4).
      next_low_ = 0x80;
      next_high_ = 0xBF;
      if (lead >= 0xC2 && lead <= 0xDF) {
        remaining_ = 1;
      } else if (lead >= 0xE0 && lead <= 0xEF) {
        remaining_ = 2;
        if (lead == 0xE0) next_low_ = 0xA0;
        if (lead == 0xED) next_high_ = 0x9F;
      } else if (lead >= 0xF0 && lead <= 0xF4) {
        remaining_ = 3;
        if (lead == 0xF0) next_low_ = 0x90;
        if (lead == 0xF4) next_high_ = 0x8F;
      } else {
        // 0x80-0xBF (stray continuation), 0xC0/0xC1 (always overlong), 0xF5-0xFF (too large).
        failed_ = true;
        return false;
      }
      continue;
    }
    const unsigned char c = *p++;
    if (c < next_low_ || c > next_high_) {
      failed_ = true;
      return false;
    }
    next_low_ = 0x80;
    next_high_ = 0xBF;
    --remaining_;
  }
  return true;
}

void Utf8Validator::reset() noexcept { *this = Utf8Validator{}; }

bool is_valid_utf8(std::string_view bytes) noexcept {
  Utf8Validator v;
  return v.feed(bytes) && v.at_boundary();
}

}  // namespace car::ws
