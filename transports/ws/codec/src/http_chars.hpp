// Character rules of HTTP/1.1 text that the handshake parser, the plain-HTTP responder and the
// Origin checks share: ASCII case folding (header names, hosts and schemes compare
// case-insensitively, never by locale) and the RFC 9110 §5.6.2 token characters.
#pragma once

#include <cstddef>
#include <string_view>

namespace car::ws::detail {

inline char ascii_lower(char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

inline bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  }
  return true;
}

inline bool ends_with_ci(std::string_view text, std::string_view suffix) noexcept {
  return text.size() >= suffix.size() && iequals(text.substr(text.size() - suffix.size()), suffix);
}

// tchar: the characters of a method, a header name, or another token.
inline bool is_tchar(char c) noexcept {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

inline bool is_token(std::string_view s) noexcept {
  if (s.empty()) return false;
  for (char c : s) {
    if (!is_tchar(c)) return false;
  }
  return true;
}

}  // namespace car::ws::detail
