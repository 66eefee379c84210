#include "car/unix_socket/unix_listener.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "car/log.hpp"
#include "car/ws/ws_connection.hpp"

namespace car::unix_socket {
namespace {

// True when a process accepts connections on the socket at `path`.
bool socket_is_live(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return true;  // cannot tell: be safe and do not remove it
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  // connect() on a Unix socket answers at once: success (live) or ECONNREFUSED (stale).
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  int err = errno;
  ::close(fd);
  return rc == 0 || (err != ECONNREFUSED && err != ENOENT);
}

}  // namespace

UnixListener::UnixListener(Server& server, std::shared_ptr<const ws::WsOptions> options,
                           std::string path)
    : server_(server), options_(std::move(options)), path_(std::move(path)), url_("unix:" + path_) {}

UnixListener::~UnixListener() { stop(); }

std::variant<std::unique_ptr<UnixListener>, UnixListener::Error> UnixListener::start(
    uv_loop_t* loop, Server& server, std::shared_ptr<const ws::WsOptions> options,
    const std::string& path) {
  if (path.empty() || path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return Error{fmt::format("unix socket path '{}' is empty or too long", path)};
  }
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Error{fmt::format("{} exists and is not a socket; refusing to replace it", path)};
    }
    if (socket_is_live(path)) {
      return Error{fmt::format("{} is in use by a running daemon", path)};
    }
    log_info("replacing stale socket {}", path);
    ::unlink(path.c_str());
  }
  std::unique_ptr<UnixListener> listener(new UnixListener(server, std::move(options), path));
  auto* handle = new uv_pipe_t;
  uv_pipe_init(loop, handle, 0);
  handle->data = listener.get();
  listener->handle_ = handle;
  // Create the file with mode 0600 from the start: no window where others could connect.
  mode_t old_mask = ::umask(0177);
  int rc = uv_pipe_bind(handle, path.c_str());
  ::umask(old_mask);
  if (rc == 0) listener->owns_file_ = true;
  if (rc == 0) rc = ::chmod(path.c_str(), 0600) == 0 ? 0 : -errno;
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(handle), 511, &UnixListener::on_connection);
  if (rc != 0) {
    listener->stop();
    return Error{fmt::format("cannot listen on {}: {}", path, uv_strerror(rc))};
  }
  return listener;
}

void UnixListener::on_connection(uv_stream_t* listener_stream, int status) {
  auto* self = static_cast<UnixListener*>(listener_stream->data);
  if (status != 0) {
    log_warn("accept failed: {}", uv_strerror(status));
    return;
  }
  auto* client = new uv_pipe_t;
  uv_pipe_init(listener_stream->loop, client, 0);
  if (uv_accept(listener_stream, reinterpret_cast<uv_stream_t*>(client)) != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(client),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_pipe_t*>(h); });
    return;
  }
  ws::serve_websocket(reinterpret_cast<uv_stream_t*>(client), self->server_, self->options_,
                      "unix " + self->path_);
}

void UnixListener::stop() {
  if (handle_ == nullptr) return;
  handle_->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(handle_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_pipe_t*>(h); });
  handle_ = nullptr;
  if (owns_file_) ::unlink(path_.c_str());
  owns_file_ = false;
}

}  // namespace car::unix_socket
