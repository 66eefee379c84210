#include "car/ws/plain_http.hpp"

#include <array>
#include <string>

#include "http_chars.hpp"

namespace car::ws {
namespace {

using detail::ends_with_ci;
using detail::iequals;
using detail::is_token;

bool safe_header(std::string_view name, std::string_view value) noexcept {
  if (!is_token(name)) return false;
  for (char c : value) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7F) return false;
  }
  // The transport's own headers cannot be replaced or doubled by a handler.
  for (std::string_view own : {"content-length", "content-type", "connection", "cache-control",
                               "x-content-type-options", "transfer-encoding"}) {
    if (iequals(name, own)) return false;
  }
  return true;
}

// "1".."255" style decimal octet without leading zeros beyond a single "0".
bool parse_octet(std::string_view s, unsigned& out) noexcept {
  if (s.empty() || s.size() > 3 || (s.size() > 1 && s[0] == '0')) return false;
  unsigned v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  if (v > 255) return false;
  out = v;
  return true;
}

bool is_ipv4_loopback(std::string_view s) noexcept {
  std::array<unsigned, 4> octets{};
  for (std::size_t i = 0; i < 4; ++i) {
    const std::size_t dot = s.find('.');
    const bool last = i == 3;
    if (last != (dot == std::string_view::npos)) return false;
    if (!parse_octet(s.substr(0, dot), octets[i])) return false;
    if (!last) s.remove_prefix(dot + 1);
  }
  return octets[0] == 127;
}

bool is_port(std::string_view s) noexcept {
  if (s.empty() || s.size() > 5) return false;
  unsigned v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  return v <= 65535;
}

// Splits "name[:port]" / "[v6][:port]" into the name part; false when the port is malformed.
bool strip_port(std::string_view host, std::string_view& name) noexcept {
  std::size_t colon = std::string_view::npos;
  if (!host.empty() && host.front() == '[') {
    const std::size_t close = host.find(']');
    if (close == std::string_view::npos) return false;
    if (close + 1 < host.size()) {
      if (host[close + 1] != ':') return false;
      colon = close + 1;
    }
  } else {
    colon = host.find(':');
  }
  if (colon != std::string_view::npos && !is_port(host.substr(colon + 1))) return false;
  name = host.substr(0, colon);
  return true;
}

}  // namespace

std::string_view http_reason_phrase(int status) noexcept {
  switch (status) {
    case 200:
      return "OK";
    case 204:
      return "No Content";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 421:
      return "Misdirected Request";
    case 426:
      return "Upgrade Required";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Error";
  }
}

std::string build_http_response(const PlainHttpResponse& response, bool head_only) {
  // A status outside 100..599 would not parse as a status line: report our own failure instead.
  const int status = (response.status >= 100 && response.status <= 599) ? response.status : 500;
  std::string out = "HTTP/1.1 " + std::to_string(status) + ' ';
  out.append(http_reason_phrase(status));
  out += "\r\nContent-Type: ";
  bool type_ok = safe_header("x", response.content_type) && !response.content_type.empty();
  out += type_ok ? response.content_type : std::string("application/octet-stream");
  out += "\r\nContent-Length: " + std::to_string(response.body.size());
  out += "\r\nConnection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n";
  for (const auto& [name, value] : response.headers) {
    if (!safe_header(name, value)) continue;
    out += name;
    out += ": ";
    out += value;
    out += "\r\n";
  }
  out += "\r\n";
  if (!head_only) out += response.body;
  return out;
}

bool host_is_local(std::string_view host, std::string_view local_address) noexcept {
  if (host.empty()) return false;
  if (!local_address.empty() && iequals(host, local_address)) return true;
  // A browser leaves the default port out of Host.
  constexpr std::string_view default_port = ":80";
  if (ends_with_ci(local_address, default_port) &&
      iequals(host, local_address.substr(0, local_address.size() - default_port.size()))) {
    return true;
  }
  std::string_view name;
  if (!strip_port(host, name) || name.empty()) return false;
  // Only the literal loopback names: `x.localhost` is loopback only where the resolver says so
  // (RFC 6761 says SHOULD), and a network DNS server that answers it could rebind it to us.
  if (iequals(name, "localhost") || iequals(name, "[::1]")) return true;
  return is_ipv4_loopback(name);
}

}  // namespace car::ws
