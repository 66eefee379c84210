#pragma once

#include <string>
#include <string_view>

#include "http_routes.hpp"

// The run viewer's place in car-daemon (docs/VIEWER.md): the embedded page (viewer_page.hpp) at
// `GET /` on every listener that serves plain HTTP, and the start-up line that opens it.
namespace car::daemon {

// `/`: 200 text/html; charset=utf-8, the page, with its Content-Security-Policy (only its own
// inline script and style, connections back to the daemon that served it, no frames, no forms)
// and `Referrer-Policy: no-referrer`. The page carries no secret: the token travels in the URL
// fragment, which a browser never sends.
HttpRoutes::Handler viewer_page_handler();

// "viewer: http://HOST:PORT/#token=TOKEN\n" for the listener whose url() is `listener_url`
// ("ws://HOST:PORT"; "https://..." for "wss://HOST:PORT"); every byte of `token` outside
// base64url's alphabet is percent-encoded.
std::string viewer_line(std::string_view listener_url, std::string_view token);

}  // namespace car::daemon
