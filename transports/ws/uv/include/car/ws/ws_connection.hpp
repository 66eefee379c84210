#pragma once

#include <memory>

#include "car/export.hpp"
#include "car/uv/listener.hpp"
#include "car/ws/pending_upgrades.hpp"
#include "car/ws/ws_options.hpp"

// One accepted stream (TCP or Unix socket) served as a WebSocket: HTTP upgrade, RFC 6455 frames,
// keepalive, close handshake, and a FrameSink for the core. Listeners call this for each accept.
namespace car {
class Server;
}

namespace car::ws {

// Accepts the connection waiting in `incoming` and serves it until it closes; the connection
// frees itself once its handles are closed. Its peer label is "ws IP:PORT" on TCP ("wss IP:PORT"
// with TLS) and "unix PATH" on a Unix socket. Loop thread only, inside the listener's accept
// callback.
// `options` is shared by the listener's connections (each keeps a reference). With `pending`, the
// socket is listed there until its upgrade completes, so the listener can close it when it stops.
CAR_API void serve_websocket(uv::Listener::Incoming& incoming, Server& server,
                             std::shared_ptr<const WsOptions> options,
                             std::shared_ptr<PendingUpgrades> pending = nullptr);

// Live WebSocket connections served by this process (all listeners), for tests and capacity logs.
// Counts sockets from accept to close, upgraded or not.
CAR_API std::size_t live_websocket_connections();

// The accept-time cap of a listener serving WebSocket connections with `options`: at most
// max_connections + max_pending_upgrades live sockets (none when max_connections is 0).
CAR_API uv::ListenerOptions websocket_listener_options(const WsOptions& options);

}  // namespace car::ws
