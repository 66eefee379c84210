#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "car/export.hpp"
#include "car/frame_sink.hpp"
#include "car/tls/server_context.hpp"
#include "car/ws/origin.hpp"
#include "car/ws/plain_http.hpp"

// Settings shared by every WebSocket connection of a listener (PROTOCOL.md §1, §8).
namespace car::ws {

struct CAR_API WsOptions {
  // Origin allowlist. A request without Origin is always allowed; an Origin not on the list
  // follows `unlisted_origins` (by default: allowed when the list is empty). See car/ws/origin.hpp.
  std::vector<std::string> allowed_origins;
  UnlistedOrigins unlisted_origins = UnlistedOrigins::follow_allowlist;
  // Upgrades beyond this many live connections of the server get 503; 0 = unlimited. The default
  // bounds what a flood of clients can hold (car-daemon lowers it to its fd limit minus 64).
  std::size_t max_connections = 1024;
  // Connections still upgrading are not counted by max_connections (it is checked at the upgrade,
  // so a refused client learns why: 503). With a cap set, the listeners hold at most this many
  // WebSocket sockets beyond it, upgrading or finishing a rejection; further connections are
  // accepted and closed at once, so a flood of idle sockets cannot exhaust the descriptors.
  std::size_t max_pending_upgrades = 32;
  // The largest message of a connection that has not authenticated yet (while the server
  // requires auth); larger ⇒ close 1009. A session.auth request is small, and this is all an
  // unauthenticated peer can make the server buffer. After auth the server's max_message applies.
  std::size_t max_unauthenticated_message = 64 * 1024;
  // Ping a connection idle this long; after `missed_pongs` unanswered pings close it with 1001.
  // Zero disables keepalive.
  std::chrono::milliseconds ping_interval{30000};
  unsigned missed_pongs = 2;
  // The HTTP upgrade must complete within this time and header budget.
  std::chrono::milliseconds handshake_timeout{10000};
  std::size_t max_header_bytes = 8192;
  // Outbound bounds of each connection's FrameSink.
  SinkLimits limits;
  // Backpressure toward the reader: stop reading while more than `high` bytes wait to be written,
  // resume at `low`. Zero means half / a quarter of limits.max_bytes.
  std::size_t read_pause_high = 0;
  std::size_t read_pause_low = 0;
  // Plain HTTP on the same listener (car/ws/plain_http.hpp). Null (the default): a request
  // without `Upgrade: websocket` gets 400, as an upgrade that lacks it. Set: such a request —
  // still bounded by handshake_timeout and max_header_bytes — whose Host passes host_is_local
  // (checked on TCP only: a browser cannot reach a Unix socket, so no page can rebind to one) is
  // answered with what the handler returns; any other Host gets 421 Misdirected Request without
  // the handler being called. The connection closes once the response is written.
  PlainHttpHandler http_handler;
  // The largest body a handler may answer with; a larger one is replaced by a 500, so that one
  // request cannot make the transport hold an unbounded response.
  std::size_t max_http_response_bytes = 1024 * 1024;
  // TLS (wss://, and https:// for plain HTTP): set, every connection of a TCP listener starts
  // with a TLS handshake under this context; everything above — upgrade, frames, plain HTTP —
  // then runs on the decrypted bytes. handshake_timeout covers the TLS handshake too. A failed
  // TLS handshake (or plaintext sent to the port) closes that connection only, logged at debug.
  // Unix-socket listeners ignore it: only local processes that pass the socket's file
  // permissions reach those. Null (the default): plaintext ws://.
  std::shared_ptr<const tls::ServerContext> tls;
};

}  // namespace car::ws
