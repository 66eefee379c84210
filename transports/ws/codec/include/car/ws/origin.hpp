#pragma once

#include <span>
#include <string>
#include <string_view>

#include "car/export.hpp"

// Which browser pages may open a WebSocket to us (PROTOCOL.md §1, 403). Browsers send the page's
// origin on every upgrade and a page cannot forge it, so the Origin header is what stands between
// "any web site the user visits" and a daemon on localhost. Non-browser clients send none and are
// always allowed: for them the token is the only gate.
namespace car::ws {

struct UpgradeRequest;

// What happens to an Origin that is not on the allowlist.
enum class UnlistedOrigins {
  // With an empty allowlist every origin is allowed; with a non-empty one, only those listed.
  follow_allowlist,
  // Only loopback origins (see is_loopback_origin) are allowed besides those listed. The daemon's
  // choice when authentication is off: then a page's origin is the only thing that keeps an
  // arbitrary web site from driving the daemon.
  loopback_only,
};

// "http" or "https", then a host that is `localhost`, a name under `.localhost` (RFC 6761 keeps
// them on the machine), an IPv4 address in 127.0.0.0/8 or `[::1]`; an optional port; nothing else.
// "null" (sandboxed frames, file:// pages) is not loopback.
CAR_API bool is_loopback_origin(std::string_view origin);

// Whether the request's Origin may connect. A request without Origin is allowed; a listed Origin
// equals an entry ASCII-case-insensitively (e.g. "https://app.example.com"; no wildcard, no
// normalisation); an unlisted one follows `unlisted`.
CAR_API bool origin_allowed(const UpgradeRequest& request, std::span<const std::string> allowlist,
                            UnlistedOrigins unlisted = UnlistedOrigins::follow_allowlist);

// Whether the request comes from a page this listener served itself (car-daemon's run viewer at
// `GET /`): its Origin is exactly "http://" + its Host header (ASCII case-insensitively), and
// that Host names this machine as host_is_local (car/ws/plain_http.hpp) decides: `localhost`,
// 127.0.0.0/8, `[::1]`, or `local_address`, the "IP:PORT" the connection arrived on ("IP" alone
// matches on port 80; empty means none). `*.localhost` is not trusted here: only a resolver keeps
// those names local. A browser sets both headers itself, so no other page can claim them; the Host
// condition keeps out a rebound DNS name (evil.example resolving to 127.0.0.1), whose page would
// otherwise be "served by" us too. Such a request is allowed whatever the allowlist says.
// `secure`: the listener speaks TLS, so its pages' origin is "https://" + Host instead.
CAR_API bool is_own_page_origin(const UpgradeRequest& request, std::string_view local_address,
                                bool secure = false);

}  // namespace car::ws
