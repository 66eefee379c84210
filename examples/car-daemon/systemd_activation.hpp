#pragma once

#include <vector>

#include "car/result.hpp"
#include "inherited_sockets.hpp"

// systemd socket activation for car-daemon (docs/SYSTEMD.md). Built from
// systemd_activation.cpp with libsystemd (meson -Dsystemd=enabled/auto), or from
// systemd_activation_unsupported.cpp without it. The transports never see any of this: they
// only adopt an fd (ws::TcpListener::adopt, unix_socket::UnixListener::adopt).
namespace car::daemon {

// Whether this build has systemd support (listed by `car-daemon --version` as a feature).
bool systemd_supported();

// Takes the listening sockets systemd passed (LISTEN_FDS/LISTEN_PID, from fd 3 on) and unsets
// those variables, so nothing this process starts sees them. Each must be a listening TCP or
// AF_UNIX stream socket; anything else is an Error naming the fd ("inherited fd N: ..."), and
// the daemon exits 1. No variables (or LISTEN_PID naming another process): an empty list.
// Without systemd support: always an empty list, with one warning logged when LISTEN_FDS or
// NOTIFY_SOCKET is set, since a service manager is then waiting for something this build
// cannot do. Call once, before the loop runs (it logs through car::log).
Result<std::vector<InheritedSocket>> take_inherited_sockets();

}  // namespace car::daemon
