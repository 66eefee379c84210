#include "car/uv/listener.hpp"

#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <optional>

#include <fmt/format.h>

#include "car/log.hpp"
#include "car/uv/guarded.hpp"

namespace car::uv {
namespace {

union ListenHandle {
  uv_handle_t handle;
  uv_stream_t stream;
  uv_tcp_t tcp;
  uv_pipe_t pipe;
};

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

// The address family of `fd` when it is a SOCK_STREAM socket, else an Error naming what it is.
Result<int> stream_socket_family(int fd) {
  int type = 0;
  socklen_t length = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) != 0) {
    return Error::internal(fmt::format("fd {}: not a socket: {}", fd, std::strerror(errno)));
  }
  if (type != SOCK_STREAM) return Error::internal(fmt::format("fd {}: not a stream socket", fd));
  sockaddr_storage address{};
  length = sizeof address;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    return Error::internal(fmt::format("fd {}: getsockname: {}", fd, std::strerror(errno)));
  }
  return static_cast<int>(address.ss_family);
}

}  // namespace

struct Listener::Core {
  ListenHandle h;
  Listener* owner;  // null once stopped
  ListenerOptions options;
  AcceptFn on_accept;
  // Refusals since the last accepted connection: only the first of a run is logged, so a flood of
  // connections beyond the cap cannot turn into a flood of log lines.
  std::size_t refused_in_a_row = 0;
};

Listener::Listener(bool tcp, std::string host, ListenerOptions options, AcceptFn on_accept)
    : core_(new Core{{}, this, std::move(options), std::move(on_accept)}),
      tcp_(tcp),
      host_(std::move(host)) {}

Listener::~Listener() { stop(); }

uv_loop_t* Listener::Incoming::loop() const { return server_->loop; }

int Listener::Incoming::accept(Stream& stream) {
  if (taken_) return UV_EALREADY;
  taken_ = true;
  return stream.accept(server_);
}

Listener::Started Listener::listen_tcp(uv_loop_t* loop, const std::string& host, std::uint16_t port,
                                       ListenerOptions options, AcceptFn on_accept) {
  // Resolve synchronously (numeric hosts never block; "localhost" reads /etc/hosts at start-up).
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  uv_getaddrinfo_t resolver{};
  int rc = uv_getaddrinfo(loop, &resolver, nullptr, host.c_str(), std::to_string(port).c_str(), &hints);
  if (rc != 0) return Error::internal(fmt::format("cannot resolve {}: {}", host, uv_strerror(rc)));
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> addresses(resolver.addrinfo, uv_freeaddrinfo);

  int backlog = options.backlog;
  std::unique_ptr<Listener> listener(new Listener(true, host, std::move(options), std::move(on_accept)));
  uv_tcp_t* handle = &listener->core_->h.tcp;
  uv_tcp_init(loop, handle);
  handle->data = listener->core_;
  rc = uv_tcp_bind(handle, addresses->ai_addr, 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(handle), backlog, &Listener::on_connection);
  if (rc != 0) {
    listener->stop();
    return Error::internal(fmt::format("cannot listen on {}:{}: {}", host, port, uv_strerror(rc)));
  }
  sockaddr_storage bound{};
  int length = sizeof bound;
  uv_tcp_getsockname(handle, reinterpret_cast<sockaddr*>(&bound), &length);
  listener->port_ = bound.ss_family == AF_INET6
                        ? ntohs(reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port)
                        : ntohs(reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);
  return listener;
}

Listener::Started Listener::listen_unix(uv_loop_t* loop, const std::string& path,
                                        ListenerOptions options, AcceptFn on_accept) {
  if (path.empty() || path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return Error::internal(fmt::format("unix socket path '{}' is empty or too long", path));
  }
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Error::internal(fmt::format("{} exists and is not a socket; refusing to replace it", path));
    }
    if (socket_is_live(path)) {
      return Error::internal(fmt::format("{} is in use by a running daemon", path));
    }
    log_info("replacing stale socket {}", path);
    ::unlink(path.c_str());
  }
  int backlog = options.backlog;
  std::unique_ptr<Listener> listener(new Listener(false, path, std::move(options), std::move(on_accept)));
  uv_pipe_t* handle = &listener->core_->h.pipe;
  uv_pipe_init(loop, handle, 0);
  handle->data = listener->core_;
  // Create the file with mode 0600 from the start: no window where others could connect.
  mode_t old_mask = ::umask(0177);
  int rc = uv_pipe_bind(handle, path.c_str());
  ::umask(old_mask);
  if (rc == 0) listener->owns_file_ = true;
  if (rc == 0) rc = ::chmod(path.c_str(), 0600) == 0 ? 0 : -errno;
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(handle), backlog, &Listener::on_connection);
  if (rc != 0) {
    listener->stop();
    return Error::internal(fmt::format("cannot listen on {}: {}", path, uv_strerror(rc)));
  }
  return listener;
}

Listener::Started Listener::adopt_tcp(uv_loop_t* loop, int fd, ListenerOptions options,
                                     AcceptFn on_accept) {
  auto family = stream_socket_family(fd);
  if (family && family.value() != AF_INET && family.value() != AF_INET6) {
    family = Error::internal(fmt::format("fd {}: not a TCP socket", fd));
  }
  if (!family) {
    ::close(fd);  // the Listener owns fd from the call on, also when it fails
    return family.error();
  }
  int backlog = options.backlog;
  std::unique_ptr<Listener> listener(
      new Listener(true, "", std::move(options), std::move(on_accept)));
  uv_tcp_t* handle = &listener->core_->h.tcp;
  uv_tcp_init(loop, handle);
  handle->data = listener->core_;
  const int opened = uv_tcp_open(handle, static_cast<uv_os_sock_t>(fd));
  if (auto error = listener->listen_adopted(reinterpret_cast<uv_stream_t*>(handle), fd, opened,
                                            backlog)) {
    return *error;
  }
  sockaddr_storage bound{};
  int length = sizeof bound;
  uv_tcp_getsockname(handle, reinterpret_cast<sockaddr*>(&bound), &length);
  char host[INET6_ADDRSTRLEN] = {};
  if (bound.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&bound);
    uv_ip6_name(in6, host, sizeof host);
    listener->port_ = ntohs(in6->sin6_port);
  } else {
    const auto* in4 = reinterpret_cast<const sockaddr_in*>(&bound);
    uv_ip4_name(in4, host, sizeof host);
    listener->port_ = ntohs(in4->sin_port);
  }
  listener->host_ = host;
  return listener;
}

std::optional<Error> Listener::listen_adopted(uv_stream_t* handle, int fd, int opened,
                                              int backlog) {
  if (opened != 0) {
    ::close(fd);  // the handle did not take it, so closing the handle would not close it
    stop();
    return Error::internal(fmt::format("fd {}: cannot adopt: {}", fd, uv_strerror(opened)));
  }
  const int rc = uv_listen(handle, backlog, &Listener::on_connection);
  if (rc != 0) {
    stop();  // closes fd with the handle
    return Error::internal(fmt::format("fd {}: cannot listen: {}", fd, uv_strerror(rc)));
  }
  return std::nullopt;
}

Listener::Started Listener::adopt_unix(uv_loop_t* loop, int fd, ListenerOptions options,
                                      AcceptFn on_accept) {
  auto family = stream_socket_family(fd);
  if (family && family.value() != AF_UNIX) {
    family = Error::internal(fmt::format("fd {}: not a Unix-domain socket", fd));
  }
  if (!family) {
    ::close(fd);  // the Listener owns fd from the call on, also when it fails
    return family.error();
  }
  sockaddr_un address{};
  socklen_t address_length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &address_length);
  std::string path;
  std::size_t path_room = address_length > offsetof(sockaddr_un, sun_path)
                              ? address_length - offsetof(sockaddr_un, sun_path)
                              : 0;
  if (path_room > 0 && address.sun_path[0] == '\0') {
    // Abstract socket: a name that is not a file, shown the way ss(8) and systemd show it.
    path = "@" + std::string(address.sun_path + 1, path_room - 1);
  } else if (path_room > 0) {
    path.assign(address.sun_path, ::strnlen(address.sun_path, path_room));
  }
  int backlog = options.backlog;
  std::unique_ptr<Listener> listener(
      new Listener(false, std::move(path), std::move(options), std::move(on_accept)));
  uv_pipe_t* handle = &listener->core_->h.pipe;
  uv_pipe_init(loop, handle, 0);
  handle->data = listener->core_;
  // owns_file_ stays false: whoever bound the socket removes its file (systemd does at stop).
  const int opened = uv_pipe_open(handle, static_cast<uv_file>(fd));
  if (auto error = listener->listen_adopted(reinterpret_cast<uv_stream_t*>(handle), fd, opened,
                                            backlog)) {
    return *error;
  }
  return listener;
}

void Listener::on_connection(uv_stream_t* server, int status) {
  auto* core = static_cast<Core*>(server->data);
  if (status != 0) {
    log_warn("accept failed: {}", uv_strerror(status));
    return;
  }
  Listener* self = core->owner;
  if (self == nullptr) {
    refuse(server);
    return;
  }
  const ListenerOptions& options = core->options;
  if (options.max_connections != 0 && options.open_connections) {
    std::size_t open = 0;
    bool counted = guarded("listener connection count", [&] { open = options.open_connections(); });
    if (counted && open >= options.max_connections) {
      if (core->refused_in_a_row++ == 0) {
        log_info("{}: refusing connections: {} open, the limit is {} (logged once until one is "
                 "accepted again)", self->host_, open, options.max_connections);
      }
      refuse(server);
      return;
    }
  }
  core->refused_in_a_row = 0;
  // The callback may stop or destroy the Listener; `core` (and the callback in it) lives until
  // the handle's close callback, which runs on a later loop iteration.
  Incoming incoming(server, *self);
  guarded("listener accept callback", [&] { core->on_accept(incoming); });
  if (!incoming.taken_) refuse(server);
}

// Accepts the pending connection only to close it: libuv stops watching a listener whose
// connection callback left its connection unaccepted.
void Listener::refuse(uv_stream_t* server) {
  auto* h = new ListenHandle;
  if (uv_handle_get_type(reinterpret_cast<uv_handle_t*>(server)) == UV_TCP) {
    uv_tcp_init(server->loop, &h->tcp);
  } else {
    uv_pipe_init(server->loop, &h->pipe, 0);
  }
  uv_accept(server, &h->stream);
  uv_close(&h->handle, [](uv_handle_t* handle) { delete reinterpret_cast<ListenHandle*>(handle); });
}

void Listener::stop() {
  if (core_ == nullptr) return;
  core_->owner = nullptr;
  uv_close(&core_->h.handle, [](uv_handle_t* h) { delete static_cast<Core*>(h->data); });
  core_ = nullptr;
  if (owns_file_) ::unlink(host_.c_str());
  owns_file_ = false;
}

}  // namespace car::uv
