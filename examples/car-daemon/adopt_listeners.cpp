// Daemon::adopt_inherited: the listening sockets a service manager passed become listeners like
// those of --listen and --unix (same options, same `listening ...` line). Nothing here knows
// about systemd; systemd_activation.cpp found the sockets.
#include <unistd.h>

#include <cstddef>
#include <vector>

#include <fmt/format.h>

#include "car/log.hpp"
#include "daemon.hpp"
#include "stderr_writer.hpp"

namespace car::daemon {

namespace {

// After a failed adoption the start-up ends (exit 1); the sockets not adopted yet are closed
// here, so that no listening fd stays open unserved, whatever the caller does next.
void close_not_adopted(const std::vector<InheritedSocket>& sockets, std::size_t from) {
  for (std::size_t i = from; i < sockets.size(); ++i) ::close(sockets[i].fd);
}

}  // namespace

bool Daemon::adopt_inherited(const ListenerOptions& options_for) {
  for (std::size_t index = 0; index < inherited_.size(); ++index) {
    const InheritedSocket& socket = inherited_[index];
    // --http-endpoints applies as to a listener of the command line: a Unix socket counts as
    // loopback, a TCP one by its bound address.
    const bool loopback =
        socket.kind == InheritedSocket::Kind::unix_stream || is_loopback_host(socket.host);
    const auto ws_options = options_for(loopback);
    // The listener owns the fd from here on, also when adopting it fails. Both listener kinds
    // are adopted the same way; only the type and the list they join differ.
    std::string url;
    auto keep = [&](auto adopted, auto& listeners) {
      if (!adopted) {
        log_error("inherited socket {}: {}", inherited_socket_label(socket),
                  adopted.error().message);
        close_not_adopted(inherited_, index + 1);
        return false;
      }
      url = adopted.value()->url();
      listeners.push_back(std::move(adopted.value()));
      return true;
    };
    const bool kept =
        socket.kind == InheritedSocket::Kind::tcp
            ? keep(ws::TcpListener::adopt(&loop_, *server_, ws_options, socket.fd), tcp_listeners_)
            : keep(unix_socket::UnixListener::adopt(&loop_, *server_, ws_options, socket.fd),
                   unix_listeners_);
    if (!kept) return false;
    // PROTOCOL.md §9: the same plain line as for a listener the daemon bound itself.
    StderrWriter::process().write(fmt::format("listening {}\n", url));
    listening_.push_back(url);
  }
  return true;
}

}  // namespace car::daemon
