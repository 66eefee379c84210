#include "inherited_sockets.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <algorithm>
#include <cstddef>
#include <cstring>

#include <fmt/format.h>

namespace car::daemon {

Result<InheritedSocket> describe_inherited_socket(int fd, const sockaddr* address,
                                                  socklen_t length) {
  InheritedSocket socket;
  socket.fd = fd;
  auto too_short = [fd] {
    return Error::internal(fmt::format("inherited fd {}: its address is truncated", fd));
  };
  if (length < static_cast<socklen_t>(sizeof(sa_family_t))) return too_short();
  char text[INET6_ADDRSTRLEN] = {};
  switch (address->sa_family) {
    case AF_INET: {
      if (length < static_cast<socklen_t>(sizeof(sockaddr_in))) return too_short();
      sockaddr_in in4{};
      std::memcpy(&in4, address, sizeof in4);  // the caller's buffer need not be aligned for it
      ::inet_ntop(AF_INET, &in4.sin_addr, text, sizeof text);
      socket.host = text;
      socket.port = ntohs(in4.sin_port);
      return socket;
    }
    case AF_INET6: {
      if (length < static_cast<socklen_t>(sizeof(sockaddr_in6))) return too_short();
      sockaddr_in6 in6{};
      std::memcpy(&in6, address, sizeof in6);
      ::inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof text);
      socket.host = text;
      socket.port = ntohs(in6.sin6_port);
      return socket;
    }
    case AF_UNIX: {
      socket.kind = InheritedSocket::Kind::unix_stream;
      constexpr std::size_t path_offset = offsetof(sockaddr_un, sun_path);
      std::size_t room = length > path_offset ? length - path_offset : 0;
      room = std::min(room, sizeof(sockaddr_un{}.sun_path));
      const char* path = reinterpret_cast<const char*>(address) + path_offset;
      if (room > 0 && path[0] == '\0') {
        // Abstract: the name is every byte after the NUL, as long as the address says.
        socket.path = "@" + std::string(path + 1, room - 1);
      } else if (room > 0) {
        socket.path.assign(path, ::strnlen(path, room));
      }
      return socket;
    }
    default:
      return Error::internal(fmt::format(
          "inherited fd {}: address family {} is neither TCP (IPv4/IPv6) nor a Unix socket", fd,
          address->sa_family));
  }
}

std::string inherited_socket_label(const InheritedSocket& socket) {
  std::string where;
  if (socket.kind == InheritedSocket::Kind::unix_stream) {
    where = socket.path.empty() ? "unnamed unix socket" : "unix:" + socket.path;
  } else if (socket.host.find(':') != std::string::npos) {
    where = fmt::format("[{}]:{}", socket.host, socket.port);
  } else {
    where = fmt::format("{}:{}", socket.host, socket.port);
  }
  if (socket.name.empty()) return fmt::format("fd {} ({})", socket.fd, where);
  return fmt::format("fd {} '{}' ({})", socket.fd, socket.name, where);
}

std::optional<CliError> check_inherited_exposure(const Options& options,
                                                 const std::vector<InheritedSocket>& sockets) {
  if (!options.no_auth || options.allow_unauthenticated_remote) return std::nullopt;
  for (const auto& socket : sockets) {
    if (socket.kind != InheritedSocket::Kind::tcp || is_loopback_host(socket.host)) continue;
    return CliError{fmt::format(
        "inherited socket {}: authentication is disabled and this address is not loopback, so "
        "anyone who can reach it could drive this daemon; bind the socket unit to 127.0.0.1 or "
        "::1, enable authentication, or add --allow-unauthenticated-remote if that is what you "
        "want",
        inherited_socket_label(socket))};
  }
  return std::nullopt;
}

}  // namespace car::daemon
