#include "fleet_mode.hpp"

#include <nats/nats.h>

#include "car/fleet/fleet_service.hpp"
#include "car/log.hpp"
#include "car/nats/subjects.hpp"
#include "car/server.hpp"
#include "stderr_writer.hpp"

namespace car::daemon {

bool FleetMode::install(Server& server, const Options& options) {
  fleet::FleetConfig config;
  config.servers = options.fleet_servers;
  config.stream = options.nats_stream.value_or(std::string(nats::default_stream));
  config.prefix = std::string(nats::default_prefix);
  if (options.drain_timeout_ms) {
    config.drain_timeout = std::chrono::milliseconds(*options.drain_timeout_ms);
  }
  auto installed = fleet::install_fleet_services(server, std::move(config));
  if (!installed) {
    log_error("--fleet: {}", installed.error().message);
    return false;
  }
  service_ = std::move(installed.value());
  // A plain line like `listening ...`: scripts (and the tests) know the gateway is connected.
  StderrWriter::process().write(fmt::format("fleet gateway: {} stream {}\n",
                                            fmt::join(options.fleet_servers, ","),
                                            options.nats_stream.value_or("CAR")));
  return true;
}

void FleetMode::stop() {
  if (!service_) return;
  service_->shutdown();  // every consumer, the worker and the NATS connection are gone after it
  service_.reset();
  // The library's own threads and memory too, bounded, for a clean leak check at exit (the
  // exporter, which --fleet excludes, does the same through release_nats_library).
  (void)nats_CloseAndWait(2000);
}

}  // namespace car::daemon
