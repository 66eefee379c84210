#include "car/unix_socket/unix_listener.hpp"

#include "car/ws/ws_connection.hpp"

namespace car::unix_socket {

UnixListener::UnixListener(std::unique_ptr<uv::Listener> listener,
                           std::shared_ptr<ws::PendingUpgrades> pending)
    : listener_(std::move(listener)),
      pending_(std::move(pending)),
      url_("unix:" + listener_->path()) {}

UnixListener::~UnixListener() = default;

Result<std::unique_ptr<UnixListener>> UnixListener::start(
    uv_loop_t* loop, Server& server, std::shared_ptr<const ws::WsOptions> options,
    const std::string& path) {
  // As on TCP, the connection cap is checked at the WebSocket upgrade (503); the listener only
  // bounds the sockets still upgrading beyond it.
  uv::ListenerOptions listen_options = ws::websocket_listener_options(*options);
  auto pending = std::make_shared<ws::PendingUpgrades>();
  auto started = uv::Listener::listen_unix(
      loop, path, std::move(listen_options),
      [&server, options = std::move(options), pending](uv::Listener::Incoming& incoming) {
        ws::serve_websocket(incoming, server, options, pending);
      });
  if (!started) return started.error();
  return std::unique_ptr<UnixListener>(
      new UnixListener(std::move(started.value()), std::move(pending)));
}

Result<std::unique_ptr<UnixListener>> UnixListener::adopt(
    uv_loop_t* loop, Server& server, std::shared_ptr<const ws::WsOptions> options, int fd) {
  // The same cap and upgrade handling as start(); only where the socket comes from differs.
  uv::ListenerOptions listen_options = ws::websocket_listener_options(*options);
  auto pending = std::make_shared<ws::PendingUpgrades>();
  auto adopted = uv::Listener::adopt_unix(
      loop, fd, std::move(listen_options),
      [&server, options = std::move(options), pending](uv::Listener::Incoming& incoming) {
        ws::serve_websocket(incoming, server, options, pending);
      });
  if (!adopted) return adopted.error();
  return std::unique_ptr<UnixListener>(
      new UnixListener(std::move(adopted.value()), std::move(pending)));
}

void UnixListener::stop() {
  listener_->stop();
  pending_->close_all();
}

}  // namespace car::unix_socket
