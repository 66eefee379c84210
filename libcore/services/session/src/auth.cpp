#include "car/session/auth.hpp"

namespace car::session {

bool constant_time_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  // Accumulate every difference instead of stopping at the first, so the time taken does not
  // reveal how long a matching prefix is. The volatile keeps the compiler from short-circuiting.
  volatile unsigned char diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff = static_cast<unsigned char>(diff | (static_cast<unsigned char>(a[i]) ^
                                              static_cast<unsigned char>(b[i])));
  }
  return diff == 0;
}

}  // namespace car::session
