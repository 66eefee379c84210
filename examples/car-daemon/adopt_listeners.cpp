// Daemon::adopt_inherited: the listening sockets a service manager passed become listeners like
// those of --listen and --unix (same options, same `listening ...` line). Nothing here knows
// about systemd; systemd_activation.cpp found the sockets.
#include <fmt/format.h>

#include "car/log.hpp"
#include "daemon.hpp"
#include "stderr_writer.hpp"

namespace car::daemon {

bool Daemon::adopt_inherited(const ListenerOptions& options_for) {
  for (const auto& socket : inherited_) {
    // --http-endpoints applies as to a listener of the command line: a Unix socket counts as
    // loopback, a TCP one by its bound address.
    const bool loopback =
        socket.kind == InheritedSocket::Kind::unix_stream || is_loopback_host(socket.host);
    const auto ws_options = options_for(loopback);
    // The listener owns the fd from here on, also when adopting it fails.
    std::string url;
    if (socket.kind == InheritedSocket::Kind::tcp) {
      auto adopted = ws::TcpListener::adopt(&loop_, *server_, ws_options, socket.fd);
      if (!adopted) {
        log_error("inherited socket {}: {}", inherited_socket_label(socket),
                  adopted.error().message);
        return false;
      }
      url = adopted.value()->url();
      tcp_listeners_.push_back(std::move(adopted.value()));
    } else {
      auto adopted = unix_socket::UnixListener::adopt(&loop_, *server_, ws_options, socket.fd);
      if (!adopted) {
        log_error("inherited socket {}: {}", inherited_socket_label(socket),
                  adopted.error().message);
        return false;
      }
      url = adopted.value()->url();
      unix_listeners_.push_back(std::move(adopted.value()));
    }
    // PROTOCOL.md §9: the same plain line as for a listener the daemon bound itself.
    StderrWriter::process().write(fmt::format("listening {}\n", url));
    listening_.push_back(url);
  }
  return true;
}

}  // namespace car::daemon
