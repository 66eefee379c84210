// systemd_activation.hpp with libsystemd.
#include "systemd_activation.hpp"

#include <systemd/sd-daemon.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>

#include <fmt/format.h>

namespace car::daemon {
namespace {

// LISTEN_FDNAMES as an array of `count` names (sd_listen_fds_with_names' result), freed at once.
struct Names {
  char** names = nullptr;
  int count = 0;
  ~Names() {
    if (names == nullptr) return;
    for (int i = 0; i < count; ++i) std::free(names[i]);
    std::free(names);
  }
  std::string at(int i) const { return names != nullptr && names[i] != nullptr ? names[i] : ""; }
};

}  // namespace

bool systemd_supported() { return true; }

Result<std::vector<InheritedSocket>> take_inherited_sockets() {
  Names names;
  // 1: unset LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES; the fds get FD_CLOEXEC.
  int count = sd_listen_fds_with_names(1, &names.names);
  if (count < 0) {
    // E.g. a LISTEN_FDS that is not a number, or LISTEN_FDNAMES naming another count of fds.
    return Error::internal(fmt::format(
        "socket activation: LISTEN_FDS, LISTEN_PID or LISTEN_FDNAMES is unusable: {}",
        std::strerror(-count)));
  }
  names.count = count;
  std::vector<InheritedSocket> sockets;
  for (int i = 0; i < count; ++i) {
    int fd = SD_LISTEN_FDS_START + i;
    // sd_is_socket_* check the type and that listen(2) was called: a connected or datagram
    // socket would be accepted by libuv and then never produce a connection.
    bool tcp = sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0) > 0;
    bool local = !tcp && sd_is_socket_unix(fd, SOCK_STREAM, 1, nullptr, 0) > 0;
    if (!tcp && !local) {
      std::string name = names.at(i);
      return Error::internal(fmt::format(
          "inherited fd {}{}: not a listening TCP or Unix stream socket; car-daemon serves only "
          "ListenStream= sockets (Accept=no)",
          fd, name.empty() ? "" : " '" + name + "'"));
    }
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      return Error::internal(
          fmt::format("inherited fd {}: getsockname: {}", fd, std::strerror(errno)));
    }
    auto described = describe_inherited_socket(fd, reinterpret_cast<sockaddr*>(&address), length);
    if (!described) return described.error();
    described.value().name = names.at(i);
    sockets.push_back(std::move(described.value()));
  }
  return sockets;
}

}  // namespace car::daemon
