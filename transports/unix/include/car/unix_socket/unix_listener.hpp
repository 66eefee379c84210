#pragma once

#include <uv.h>

#include <memory>
#include <string>
#include <variant>

#include "car/export.hpp"
#include "car/result.hpp"
#include "car/uv/listener.hpp"
#include "car/ws/pending_upgrades.hpp"
#include "car/ws/ws_options.hpp"

// `--unix PATH`: a Unix-socket listener whose connections speak WebSocket exactly like TCP ones.
// The socket file is created with mode 0600. An existing file at PATH is replaced only when it is
// a socket that no live process answers on (a stale one left by a crash); a live daemon's socket
// or any other kind of file is never touched (uv::Listener::listen_unix does all of this).
namespace car {
class Server;
}

namespace car::unix_socket {

class CAR_API UnixListener {
 public:
  // Loop thread only.
  static Result<std::unique_ptr<UnixListener>> start(
      uv_loop_t* loop, Server& server, std::shared_ptr<const ws::WsOptions> options,
      const std::string& path);
  // Serves WebSocket on `fd`, a Unix stream socket bound by someone else (a service manager's
  // socket activation, a parent process): see uv::Listener::adopt_unix. The listener owns `fd`
  // from the call on (stop() closes it; so does an Error) but never removes the socket file,
  // which belongs to whoever bound it. Loop thread only.
  static Result<std::unique_ptr<UnixListener>> adopt(
      uv_loop_t* loop, Server& server, std::shared_ptr<const ws::WsOptions> options, int fd);
  ~UnixListener();

  const std::string& url() const { return url_; }  // "unix:PATH"
  // Stops accepting, removes the socket file (only if start() created it) and closes the sockets
  // still upgrading (upgraded connections are not affected). Idempotent.
  void stop();

 private:
  UnixListener(std::unique_ptr<uv::Listener> listener,
               std::shared_ptr<ws::PendingUpgrades> pending);

  std::unique_ptr<uv::Listener> listener_;
  std::shared_ptr<ws::PendingUpgrades> pending_;
  std::string url_;
};

}  // namespace car::unix_socket
