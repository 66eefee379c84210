#include "car/ws/tcp_listener.hpp"

#include <fmt/format.h>

#include "car/log.hpp"
#include "car/ws/ws_connection.hpp"

namespace car::ws {

TcpListener::TcpListener(Server& server, std::shared_ptr<const WsOptions> options)
    : server_(server), options_(std::move(options)) {}

TcpListener::~TcpListener() { stop(); }

std::variant<std::unique_ptr<TcpListener>, TcpListener::Error> TcpListener::start(
    uv_loop_t* loop, Server& server, std::shared_ptr<const WsOptions> options,
    const std::string& host, std::uint16_t port) {
  // Resolve synchronously (numeric hosts never block; "localhost" reads /etc/hosts at start-up).
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  uv_getaddrinfo_t resolver{};
  int rc = uv_getaddrinfo(loop, &resolver, nullptr, host.c_str(), std::to_string(port).c_str(), &hints);
  if (rc != 0) return Error{fmt::format("cannot resolve {}: {}", host, uv_strerror(rc))};
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> addresses(resolver.addrinfo, uv_freeaddrinfo);

  std::unique_ptr<TcpListener> listener(new TcpListener(server, std::move(options)));
  auto* handle = new uv_tcp_t;
  uv_tcp_init(loop, handle);
  handle->data = listener.get();
  listener->handle_ = handle;
  rc = uv_tcp_bind(handle, addresses->ai_addr, 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(handle), 511, &TcpListener::on_connection);
  if (rc != 0) {
    listener->stop();
    return Error{fmt::format("cannot listen on {}:{}: {}", host, port, uv_strerror(rc))};
  }
  sockaddr_storage bound{};
  int length = sizeof bound;
  uv_tcp_getsockname(handle, reinterpret_cast<sockaddr*>(&bound), &length);
  std::uint16_t bound_port = bound.ss_family == AF_INET6
                                 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                                 : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  bool v6 = host.find(':') != std::string::npos;
  listener->url_ = fmt::format("ws://{}{}{}:{}", v6 ? "[" : "", host, v6 ? "]" : "", bound_port);
  return listener;
}

void TcpListener::on_connection(uv_stream_t* listener_stream, int status) {
  auto* self = static_cast<TcpListener*>(listener_stream->data);
  if (status != 0) {
    log_warn("accept failed: {}", uv_strerror(status));
    return;
  }
  auto* client = new uv_tcp_t;
  uv_tcp_init(listener_stream->loop, client);
  if (uv_accept(listener_stream, reinterpret_cast<uv_stream_t*>(client)) != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(client),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    return;
  }
  uv_tcp_nodelay(client, 1);
  std::string peer = "ws";
  sockaddr_storage addr{};
  int length = sizeof addr;
  if (uv_tcp_getpeername(client, reinterpret_cast<sockaddr*>(&addr), &length) == 0) {
    char ip[64] = {};
    if (addr.ss_family == AF_INET6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
      uv_ip6_name(a, ip, sizeof ip);
      peer = fmt::format("ws [{}]:{}", ip, ntohs(a->sin6_port));
    } else {
      auto* a = reinterpret_cast<sockaddr_in*>(&addr);
      uv_ip4_name(a, ip, sizeof ip);
      peer = fmt::format("ws {}:{}", ip, ntohs(a->sin_port));
    }
  }
  serve_websocket(reinterpret_cast<uv_stream_t*>(client), self->server_, self->options_,
                  std::move(peer));
}

void TcpListener::stop() {
  if (handle_ == nullptr) return;
  handle_->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(handle_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
  handle_ = nullptr;
}

}  // namespace car::ws
