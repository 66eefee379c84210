// systemd_notify.hpp with libsystemd.
#include "systemd_notify.hpp"

#include <systemd/sd-daemon.h>

#include <cstdint>
#include <cstring>

#include "car/log.hpp"
#include "car/uv/guarded.hpp"
#include "systemd_messages.hpp"

namespace car::daemon {
namespace {

// sd_notify does nothing (0) without NOTIFY_SOCKET; a failure to send is logged, not fatal:
// the service manager then times out on its own and says so.
void notify(const std::string& message) {
  // 0: keep NOTIFY_SOCKET, there are more messages to send.
  int rc = sd_notify(0, message.c_str());
  if (rc < 0) log_warn("sd_notify failed: {}", std::strerror(-rc));
}

}  // namespace

void ServiceNotifier::ready(const std::vector<std::string>& listeners) {
  notify(ready_message(listeners));
}

void ServiceNotifier::stopping(std::string_view why) { notify(stopping_message(why)); }

void ServiceNotifier::start_watchdog() {
  if (watchdog_started_ || closed_) return;
  std::uint64_t usec = 0;
  // 0: keep WATCHDOG_USEC/WATCHDOG_PID; > 0 only when they name this process.
  if (sd_watchdog_enabled(0, &usec) <= 0) return;
  std::uint64_t interval = watchdog_ping_interval_ms(usec);
  if (interval == 0) return;
  uv_timer_init(loop_, &watchdog_);
  watchdog_.data = this;
  watchdog_started_ = true;
  // The ping comes from the loop thread on purpose: a loop that is wedged (a callback that never
  // returns, a deadlock) stops pinging, and systemd then kills and restarts the daemon. A ping
  // from a thread of its own would keep a dead daemon "alive".
  // sd_notify sends one small datagram to the service manager's socket, which PID 1 drains
  // continuously; that send is the one socket write the loop makes itself (docs/SYSTEMD.md).
  uv_timer_start(
      &watchdog_,
      [](uv_timer_t*) { uv::guarded("watchdog ping", [] { notify("WATCHDOG=1"); }); }, 0,
      interval);
  log_info("watchdog: WATCHDOG=1 every {} ms", interval);
}

void ServiceNotifier::close() {
  if (closed_) return;
  closed_ = true;
  if (!watchdog_started_) return;
  uv_timer_stop(&watchdog_);
  uv_close(reinterpret_cast<uv_handle_t*>(&watchdog_), nullptr);
}

}  // namespace car::daemon
