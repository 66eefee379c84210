#include "car/random.hpp"

#include <sys/random.h>

#include <cerrno>

#include <array>
#include <random>
#include <vector>

namespace car {
namespace {

// The kernel's CSPRNG (getrandom(2)): the engine needs unpredictable client ids without linking a
// crypto library. It blocks only until the pool is first initialised at boot.
void fill_random(unsigned char* out, std::size_t n) {
  std::size_t filled = 0;
  while (filled < n) {
    ssize_t got = ::getrandom(out + filled, n - filled, 0);
    if (got > 0) {
      filled += static_cast<std::size_t>(got);
    } else if (got < 0 && errno != EINTR) {
      break;  // ENOSYS on an ancient kernel: use the library's source below
    }
  }
  if (filled == n) return;
  std::random_device device;
  for (std::size_t i = filled; i < n; ++i) out[i] = static_cast<unsigned char>(device());
}

constexpr char hex_digits[] = "0123456789abcdef";

}  // namespace

std::string uuid_v4() {
  std::array<unsigned char, 16> b{};
  fill_random(b.data(), b.size());
  b[6] = static_cast<unsigned char>((b[6] & 0x0F) | 0x40);  // version 4
  b[8] = static_cast<unsigned char>((b[8] & 0x3F) | 0x80);  // RFC 4122 variant
  std::string out;
  out.reserve(36);
  for (std::size_t i = 0; i < b.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out.push_back(hex_digits[b[i] >> 4]);
    out.push_back(hex_digits[b[i] & 0x0F]);
  }
  return out;
}

std::string random_hex(std::size_t bytes) {
  std::vector<unsigned char> b(bytes);
  fill_random(b.data(), b.size());
  std::string out;
  out.reserve(bytes * 2);
  for (unsigned char c : b) {
    out.push_back(hex_digits[c >> 4]);
    out.push_back(hex_digits[c & 0x0F]);
  }
  return out;
}

}  // namespace car
