// systemd_notify.hpp without libsystemd: nothing to notify (the one warning that a service
// manager expected notifications is systemd_activation_unsupported.cpp's).
#include "systemd_notify.hpp"

namespace car::daemon {

void ServiceNotifier::ready(const std::vector<std::string>&) {}
void ServiceNotifier::stopping(std::string_view) {}
void ServiceNotifier::start_watchdog() {}
void ServiceNotifier::close() {
  closed_ = true;
  // The timer and loop are used only by the libsystemd variant; touched here so a compiler does
  // not flag them as unused private fields in this one.
  (void)loop_;
  (void)watchdog_;
  (void)watchdog_started_;
}

}  // namespace car::daemon
