#include "viewer_route.hpp"

#include <fmt/format.h>

#include "viewer_page.hpp"

namespace car::daemon {

HttpRoutes::Handler viewer_page_handler() {
  return [](const ws::PlainHttpRequest&) {
    ws::PlainHttpResponse response;
    response.content_type = "text/html; charset=utf-8";
    response.body = std::string(viewer_page_html);  // ~25 KiB, once per page load
    response.headers = {{"Content-Security-Policy", std::string(viewer_page_csp)},
                        {"Referrer-Policy", "no-referrer"}};
    return response;
  };
}

std::string viewer_line(std::string_view listener_url, std::string_view token) {
  constexpr std::string_view ws_scheme = "ws://";
  constexpr std::string_view wss_scheme = "wss://";
  std::string_view authority = listener_url;
  // A TLS listener (wss://) serves its page over https://.
  const bool secure = authority.substr(0, wss_scheme.size()) == wss_scheme;
  if (secure) {
    authority.remove_prefix(wss_scheme.size());
  } else if (authority.substr(0, ws_scheme.size()) == ws_scheme) {
    authority.remove_prefix(ws_scheme.size());
  }
  std::string encoded;
  for (unsigned char c : token) {
    bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '_';
    if (plain) {
      encoded += static_cast<char>(c);
    } else {
      encoded += fmt::format("%{:02X}", c);
    }
  }
  return fmt::format("viewer: {}://{}/#token={}\n", secure ? "https" : "http", authority, encoded);
}

}  // namespace car::daemon
