#include "openssl_errors.hpp"

#include <openssl/err.h>

namespace car::tls::detail {
namespace {

// A handshake failure stacks a handful of entries; beyond this they repeat the context.
constexpr int max_reported = 3;

}  // namespace

void clear_openssl_errors() { ERR_clear_error(); }

std::string take_openssl_errors(const char* fallback) {
  std::string text;
  int reported = 0;
  while (unsigned long code = ERR_get_error()) {
    if (reported == max_reported) continue;  // keep draining: the queue must end up empty
    const char* reason = ERR_reason_error_string(code);
    if (!text.empty()) text += "; ";
    if (reason != nullptr) {
      text += reason;
    } else {
      char buffer[256];
      ERR_error_string_n(code, buffer, sizeof buffer);
      text += buffer;
    }
    ++reported;
  }
  return text.empty() ? std::string(fallback) : text;
}

}  // namespace car::tls::detail
