#include "car/ws/tcp_listener.hpp"

#include <fmt/format.h>

#include "car/ws/ws_connection.hpp"

namespace car::ws {

TcpListener::TcpListener(std::unique_ptr<uv::Listener> listener,
                         std::shared_ptr<PendingUpgrades> pending, bool tls)
    : listener_(std::move(listener)), pending_(std::move(pending)) {
  const std::string& host = listener_->host();
  bool v6 = host.find(':') != std::string::npos;
  url_ = fmt::format("{}://{}{}{}:{}", tls ? "wss" : "ws", v6 ? "[" : "", host, v6 ? "]" : "",
                     listener_->port());
}

TcpListener::~TcpListener() = default;

Result<std::unique_ptr<TcpListener>> TcpListener::start(
    uv_loop_t* loop, Server& server, std::shared_ptr<const WsOptions> options,
    const std::string& host, std::uint16_t port) {
  // The connection cap (options->max_connections) is the WebSocket's: checked at the upgrade,
  // answered with 503; the listener only bounds the sockets still upgrading beyond it.
  uv::ListenerOptions listen_options = websocket_listener_options(*options);
  const bool tls = options->tls != nullptr;
  auto pending = std::make_shared<PendingUpgrades>();
  auto started = uv::Listener::listen_tcp(
      loop, host, port, std::move(listen_options),
      [&server, options = std::move(options), pending](uv::Listener::Incoming& incoming) {
        serve_websocket(incoming, server, options, pending);
      });
  if (!started) return started.error();
  return std::unique_ptr<TcpListener>(
      new TcpListener(std::move(started.value()), std::move(pending), tls));
}

Result<std::unique_ptr<TcpListener>> TcpListener::adopt(
    uv_loop_t* loop, Server& server, std::shared_ptr<const WsOptions> options, int fd) {
  // The same cap and upgrade handling as start(); only where the socket comes from differs.
  uv::ListenerOptions listen_options = websocket_listener_options(*options);
  const bool tls = options->tls != nullptr;
  auto pending = std::make_shared<PendingUpgrades>();
  auto adopted = uv::Listener::adopt_tcp(
      loop, fd, std::move(listen_options),
      [&server, options = std::move(options), pending](uv::Listener::Incoming& incoming) {
        serve_websocket(incoming, server, options, pending);
      });
  if (!adopted) return adopted.error();
  return std::unique_ptr<TcpListener>(
      new TcpListener(std::move(adopted.value()), std::move(pending), tls));
}

void TcpListener::stop() {
  listener_->stop();
  pending_->close_all();
}

}  // namespace car::ws
