// Plain HTTP/1.1 requests on a WebSocket port: a GET (or any method) that does not ask for
// `Upgrade: websocket` can be answered with an ordinary response instead of the upgrade's 400,
// so the same listener serves health checks and metrics. Sans-I/O like the rest of the codec:
// HandshakeParser recognises the request (HandshakeStatus::plain_http), this file holds what the
// caller needs to answer it; the caller writes the bytes and closes the connection.
//
// Thread-safety: every function is reentrant. Nothing here throws except std::bad_alloc.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "car/export.hpp"

namespace car::ws {

// What a plain-HTTP handler is told. The views are valid only during the handler call.
struct CAR_API PlainHttpRequest {
  std::string_view method;  // as sent, e.g. "GET", "HEAD", "POST"
  std::string_view target;  // request-target as sent, e.g. "/metrics?x=1"
  std::string_view host;    // the Host header value (always present: HTTP/1.1 requires it)
  // The address the connection arrived on: "IP:PORT" (IPv6 bracketed) of the accepted TCP socket,
  // or "unix:PATH" on a Unix-domain socket.
  std::string_view local_address;
  bool unix_socket = false;  // the connection came through a Unix-domain socket
};

// What the handler answers. The transport adds the status line, Content-Type, Content-Length,
// `Connection: close`, `Cache-Control: no-store` and `X-Content-Type-Options: nosniff`, and omits
// the body (keeping its Content-Length) for HEAD.
struct CAR_API PlainHttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  // Extra header lines, e.g. {"Allow", "GET, HEAD"} for a 405. A pair whose name is not an HTTP
  // token, or whose value holds a control character (CR and LF included), is dropped, so a
  // handler cannot split the response; so are names the transport writes itself.
  std::vector<std::pair<std::string, std::string>> headers;
};

// Called on the connection's thread (the loop thread for the bundled transports) with a
// complete request whose Host passed host_is_local; must not block. An exception it throws
// becomes a 500.
using PlainHttpHandler = std::function<PlainHttpResponse(const PlainHttpRequest&)>;

// The standard reason phrase of `status` ("OK", "Not Found", "Misdirected Request", ...), or
// "Error" for a status this codec does not name. Points to static storage.
CAR_API std::string_view http_reason_phrase(int status) noexcept;

// The whole response as bytes (see PlainHttpResponse for the headers added). `head_only`: no body,
// the Content-Length still that of `response.body`.
CAR_API std::string build_http_response(const PlainHttpResponse& response, bool head_only);

// DNS-rebinding defence: whether a plain-HTTP request with this Host header may be answered.
// True iff `host` (ASCII case-insensitive, an optional ":PORT" after it) is
//   - a loopback name: `localhost`, a dotted-quad IPv4 literal in 127.0.0.0/8, or `[::1]` — not
//     `*.localhost`, which stays local only if the resolver keeps it so (RFC 6761: SHOULD); or
//   - exactly `local_address` ("IP:PORT" the connection arrived on), or its IP alone when that
//     port is 80 (browsers leave the default port out).
// A page a browser loaded from an attacker's name that now resolves to us still sends that name
// as Host, so it is refused; a loopback name in Host means the page's own origin is local.
CAR_API bool host_is_local(std::string_view host, std::string_view local_address) noexcept;

}  // namespace car::ws
