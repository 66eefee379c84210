#pragma once

#include <uv.h>

#include <string>
#include <string_view>
#include <vector>

// sd_notify(3) for car-daemon (docs/SYSTEMD.md): READY=1 once listening, STOPPING=1 when a
// graceful shutdown begins, WATCHDOG=1 from a loop timer while the service has a watchdog.
// Built from systemd_notify.cpp with libsystemd, or from systemd_notify_unsupported.cpp, where
// every call does nothing (systemd_activation_unsupported.cpp already warned once).
//
// Lifetime: owned by the Daemon; the watchdog timer is embedded and freed with this object, so
// close() must have run and the loop must have run its close callback before destruction (the
// Daemon closes it in finish_shutdown, like its other handles, and runs the loop once more in
// its destructor). Threading: loop thread only.
namespace car::daemon {

class ServiceNotifier {
 public:
  explicit ServiceNotifier(uv_loop_t* loop) : loop_(loop) {}
  ServiceNotifier(const ServiceNotifier&) = delete;
  ServiceNotifier& operator=(const ServiceNotifier&) = delete;

  // READY=1 with a STATUS= naming the listeners (systemd_messages.hpp).
  void ready(const std::vector<std::string>& listeners);
  // STOPPING=1 with a STATUS= naming the reason. Pings go on until close(): shutdown may take a
  // few seconds, and the watchdog is still armed until the process exits.
  void stopping(std::string_view why);
  // When the service manager asked for a watchdog (WATCHDOG_USEC, for this pid), starts a loop
  // timer that sends WATCHDOG=1 at half the interval. Idempotent.
  void start_watchdog();
  // Stops and closes the watchdog timer (a no-op when it never started). Idempotent.
  void close();

 private:
  uv_loop_t* loop_;
  uv_timer_t watchdog_{};
  bool watchdog_started_ = false;
  bool closed_ = false;
};

}  // namespace car::daemon
