#pragma once

#include <uv.h>

#include <memory>
#include <string>
#include <variant>

#include "car/ws/ws_options.hpp"
#include "car/export.hpp"

// `--unix PATH`: a Unix-socket listener whose connections speak WebSocket exactly like TCP ones.
// The socket file is created with mode 0600. An existing file at PATH is replaced only when it is
// a socket that no live process answers on (a stale one left by a crash); a live daemon's socket
// or any other kind of file is never touched.
namespace car {
class Server;
}

namespace car::unix_socket {

class CAR_API UnixListener {
 public:
  struct Error {
    std::string message;
  };
  static std::variant<std::unique_ptr<UnixListener>, Error> start(
      uv_loop_t* loop, Server& server, std::shared_ptr<const ws::WsOptions> options,
      const std::string& path);
  ~UnixListener();

  const std::string& url() const { return url_; }  // "unix:PATH"
  // Stops accepting and removes the socket file. Idempotent.
  void stop();

 private:
  UnixListener(Server& server, std::shared_ptr<const ws::WsOptions> options, std::string path);
  static void on_connection(uv_stream_t* listener, int status);

  Server& server_;
  std::shared_ptr<const ws::WsOptions> options_;
  std::string path_;
  std::string url_;
  uv_pipe_t* handle_ = nullptr;  // freed in its close callback
  bool owns_file_ = false;       // we bound the socket file, so we remove it
};

}  // namespace car::unix_socket
