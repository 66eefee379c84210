#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <variant>

#include "car/export.hpp"
#include "car/result.hpp"
#include "car/uv/listener.hpp"
#include "car/ws/pending_upgrades.hpp"
#include "car/ws/ws_options.hpp"

// `--listen HOST:PORT`: accepts TCP connections (TCP_NODELAY) and serves each as a WebSocket.
namespace car {
class Server;
}

namespace car::ws {

class CAR_API TcpListener {
 public:
  // Binds and listens on the loop. Port 0 picks a free port (see url()). Loop thread only.
  static Result<std::unique_ptr<TcpListener>> start(
      uv_loop_t* loop, Server& server, std::shared_ptr<const WsOptions> options,
      const std::string& host, std::uint16_t port);
  // Serves WebSocket on `fd`, a TCP socket bound by someone else (a service manager's socket
  // activation, a parent process): see uv::Listener::adopt_tcp. The listener owns `fd` from the
  // call on (stop() closes it; so does an Error). url() names the bound address. Loop thread only.
  static Result<std::unique_ptr<TcpListener>> adopt(
      uv_loop_t* loop, Server& server, std::shared_ptr<const WsOptions> options, int fd);
  ~TcpListener();

  // "ws://HOST:PORT" with the bound port (IPv6 hosts in brackets); "wss://..." when the
  // options carry a TLS context (WsOptions::tls).
  const std::string& url() const { return url_; }
  // Stops accepting and closes the sockets still upgrading (they are not connections of the
  // server yet); upgraded connections are not affected. Idempotent.
  void stop();

 private:
  TcpListener(std::unique_ptr<uv::Listener> listener, std::shared_ptr<PendingUpgrades> pending,
              bool tls);

  std::unique_ptr<uv::Listener> listener_;
  std::shared_ptr<PendingUpgrades> pending_;
  std::string url_;
};

}  // namespace car::ws
