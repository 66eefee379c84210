#pragma once

#include <uv.h>

#include <memory>
#include <string>

#include "car/ws/ws_options.hpp"
#include "car/export.hpp"

// One accepted stream (TCP or Unix socket) served as a WebSocket: HTTP upgrade, RFC 6455 frames,
// keepalive, close handshake, and a FrameSink for the core. Listeners call this for each accept.
namespace car {
class Server;
}

namespace car::ws {

// Takes ownership of `stream` (an initialized, accepted uv_tcp_t or uv_pipe_t allocated with new)
// and serves it until it closes; the connection frees itself once its handles are closed.
// Loop thread only. `options` must outlive the connection (listeners share one copy).
CAR_API void serve_websocket(uv_stream_t* stream, Server& server, std::shared_ptr<const WsOptions> options,
                     std::string peer_label);

// Live WebSocket connections served by this process (all listeners), for tests and capacity logs.
CAR_API std::size_t live_websocket_connections();

}  // namespace car::ws
