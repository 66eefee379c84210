#pragma once

#include <memory>

#include "cli.hpp"

// car-daemon --fleet (docs/FLEET.md "Gateway"): the daemon serves every host's runs read-only
// from NATS JetStream instead of installing its own host and run services. fleet_mode.cpp is
// built with the nats feature; fleet_mode_unsupported.cpp otherwise refuses --fleet.
namespace car {
class Server;
namespace fleet {
class FleetService;
}
}  // namespace car

namespace car::daemon {

class FleetMode {
 public:
  // Connects to the broker and installs the gateway's methods into `server` (after the session
  // service). False, logged, when the build has no nats feature or no server answers.
  bool install(Server& server, const Options& options);
  // Stops the gateway's consumers, worker thread and NATS connection. Blocks up to about one
  // broker timeout: call it once every connection is gone. Idempotent.
  void stop();

 private:
  std::shared_ptr<fleet::FleetService> service_;
};

}  // namespace car::daemon
