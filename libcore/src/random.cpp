#include "car/random.hpp"

#include <openssl/rand.h>

#include <array>
#include <random>
#include <vector>

namespace car {
namespace {

void fill_random(unsigned char* out, std::size_t n) {
  if (RAND_bytes(out, static_cast<int>(n)) == 1) return;
  // OpenSSL could not seed (should not happen on Linux): fall back to the OS source directly.
  std::random_device device;
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<unsigned char>(device());
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
