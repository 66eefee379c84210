#pragma once

#include <memory>
#include <optional>
#include <string>

#include "car/host/host_service.hpp"
#include "car/runs/run_service.hpp"
#include "cli.hpp"

// car-daemon --nats: the JetStream record exporter (car/nats/jetstream_exporter.hpp,
// docs/FLEET.md "Export"), kept out of daemon.cpp so the daemon builds without libnats
// (nats_export_unsupported.cpp) and the fleet gateway's wiring merges beside it.
namespace car::daemon {

// Whether this build has the `nats` feature (car-daemon --version lists it).
bool nats_supported();
// After the Daemon is gone: frees libnats' process-wide state (its threads and buffers), bounded,
// so a leak checker sees a clean exit. Nothing without the feature.
void release_nats_library();

class NatsExport {
 public:
  NatsExport();
  ~NatsExport();
  NatsExport(const NatsExport&) = delete;
  NatsExport& operator=(const NatsExport&) = delete;

  // With --nats, adds the exporter to `config` (cursors under <state_dir>/exports/nats); the
  // error text when it cannot (the daemon then exits 1). Without --nats it does nothing.
  std::optional<std::string> configure(const Options& options, const std::string& state_dir,
                                       runs::RunConfig& config);
  // After install_run_services: host events go to the exporters too.
  void installed(host::HostService& host, runs::RunService& runs);
  // At shutdown, before the services are destroyed: a publish waiting for the broker returns.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace car::daemon
