// car-daemon built without the nats feature: --fleet is refused at start-up.
#include "fleet_mode.hpp"

#include "car/log.hpp"

namespace car::daemon {

bool FleetMode::install(Server&, const Options&) {
  log_error("--fleet: this car-daemon was built without the nats feature (meson -Dnats=enabled)");
  return false;
}

void FleetMode::stop() {}

}  // namespace car::daemon
