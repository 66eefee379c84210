#include "car/ws/origin.hpp"

#include <cctype>
#include <charconv>

#include "car/ws/handshake.hpp"
#include "car/ws/plain_http.hpp"
#include "http_chars.hpp"

namespace car::ws {
namespace {

using detail::ends_with_ci;
using detail::iequals;

// Four decimal octets, each 0..255 without a sign, the first 127.
bool is_ipv4_loopback(std::string_view host) noexcept {
  int octets = 0;
  while (true) {
    std::size_t end = host.find('.');
    std::string_view part = host.substr(0, end);
    unsigned value = 0;
    auto [ptr, ec] = std::from_chars(part.data(), part.data() + part.size(), value);
    if (part.empty() || part.size() > 3 || ec != std::errc{} || ptr != part.data() + part.size() ||
        value > 255) {
      return false;
    }
    if (octets == 0 && value != 127) return false;
    ++octets;
    if (end == std::string_view::npos) break;
    host.remove_prefix(end + 1);
  }
  return octets == 4;
}

}  // namespace

bool is_loopback_origin(std::string_view origin) {
  std::string_view rest;
  if (origin.size() > 7 && iequals(origin.substr(0, 7), "http://")) {
    rest = origin.substr(7);
  } else if (origin.size() > 8 && iequals(origin.substr(0, 8), "https://")) {
    rest = origin.substr(8);
  } else {
    return false;
  }
  std::string_view host = rest;
  std::string_view port;
  if (!rest.empty() && rest.front() == '[') {
    std::size_t close = rest.find(']');
    if (close == std::string_view::npos) return false;
    host = rest.substr(0, close + 1);
    std::string_view after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return false;
      port = after.substr(1);
      if (port.empty()) return false;
    }
  } else if (std::size_t colon = rest.find(':'); colon != std::string_view::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
    if (port.empty()) return false;
  }
  for (char c : port) {
    if (c < '0' || c > '9') return false;
  }
  if (port.size() > 5) return false;
  if (host == "[::1]") return true;
  if (iequals(host, "localhost")) return true;
  // `x.localhost`, but not `.localhost` alone nor `evil-localhost`.
  if (host.size() > 10 && ends_with_ci(host, ".localhost")) {
    for (char c : host) {
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.')) return false;
    }
    return true;
  }
  return is_ipv4_loopback(host);
}

bool origin_allowed(const UpgradeRequest& request, std::span<const std::string> allowlist,
                    UnlistedOrigins unlisted) {
  if (!request.has_origin) return true;
  for (const std::string& allowed : allowlist) {
    if (iequals(request.origin, allowed)) return true;
  }
  if (unlisted == UnlistedOrigins::loopback_only) return is_loopback_origin(request.origin);
  return allowlist.empty();
}

bool is_own_page_origin(const UpgradeRequest& request, std::string_view local_address,
                        bool secure) {
  const std::string_view scheme = secure ? "https://" : "http://";
  if (!request.has_origin || request.host.empty()) return false;
  std::string_view origin = request.origin;
  if (origin.size() != scheme.size() + request.host.size() ||
      !iequals(origin.substr(0, scheme.size()), scheme) ||
      !iequals(origin.substr(scheme.size()), request.host)) {
    return false;
  }
  // The same names the plain-HTTP Host check accepts, so the page and its socket agree.
  return host_is_local(request.host, local_address);
}

}  // namespace car::ws
