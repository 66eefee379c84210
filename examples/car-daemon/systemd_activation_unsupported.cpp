// systemd_activation.hpp without libsystemd: no socket activation, one warning when the
// environment shows that a service manager expected it.
#include <cstdlib>

#include "car/log.hpp"
#include "systemd_activation.hpp"

namespace car::daemon {

bool systemd_supported() { return false; }

Result<std::vector<InheritedSocket>> take_inherited_sockets() {
  const char* listen_fds = std::getenv("LISTEN_FDS");
  const char* notify_socket = std::getenv("NOTIFY_SOCKET");
  bool listen_set = listen_fds != nullptr && *listen_fds != '\0';
  bool notify_set = notify_socket != nullptr && *notify_socket != '\0';
  if (listen_set || notify_set) {
    // Said once, here: the notifier (systemd_notify_unsupported.cpp) stays silent.
    log_warn("{} is set, but this car-daemon was built without systemd support: inherited "
             "sockets are ignored and no READY/STOPPING/WATCHDOG notifications are sent "
             "(rebuild with libsystemd-dev and meson -Dsystemd=enabled)",
             listen_set && notify_set ? "LISTEN_FDS (and NOTIFY_SOCKET)"
                                      : (listen_set ? "LISTEN_FDS" : "NOTIFY_SOCKET"));
  }
  return std::vector<InheritedSocket>{};
}

}  // namespace car::daemon
