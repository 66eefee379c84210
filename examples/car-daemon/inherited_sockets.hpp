#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "car/result.hpp"
#include "cli.hpp"

// Listening sockets car-daemon was handed at start instead of binding them itself (systemd's
// socket activation: systemd_activation.hpp). This file is the part that needs no libsystemd:
// what an inherited socket is, how its bound address reads, and the exposure rule it must obey.
namespace car::daemon {

struct InheritedSocket {
  enum class Kind { tcp, unix_stream };
  int fd = -1;
  Kind kind = Kind::tcp;
  // tcp: the bound numeric address and port. unix_stream: the bound path ("@name" for an
  // abstract socket, empty for an unnamed one) in `path`.
  std::string host;
  std::uint16_t port = 0;
  std::string path;
  // systemd's FileDescriptorName= (LISTEN_FDNAMES), for messages; may be empty.
  std::string name;
};

// Describes listening socket `fd` from its getsockname(2) result: AF_INET/AF_INET6 becomes a
// tcp socket, AF_UNIX a unix_stream one. Any other family, or an address too short for its
// family, is an Error "inherited fd N: ...". Pure: reads only `address`.
Result<InheritedSocket> describe_inherited_socket(int fd, const sockaddr* address,
                                                  socklen_t length);

// How the socket is named in messages: "fd 3 (127.0.0.1:9100)", with the LISTEN_FDNAMES name
// when it has one: "fd 3 'web' (127.0.0.1:9100)".
std::string inherited_socket_label(const InheritedSocket& socket);

// The rule check_exposure (cli.hpp) applies to --listen, applied to inherited TCP sockets:
// without authentication, a socket bound to anything but loopback (including a wildcard
// address) is refused unless --allow-unauthenticated-remote says it is meant. Unix sockets are
// never exposed. A refusal is a CliError (exit 2, like the same mistake on the command line).
std::optional<CliError> check_inherited_exposure(const Options& options,
                                                 const std::vector<InheritedSocket>& sockets);

}  // namespace car::daemon
