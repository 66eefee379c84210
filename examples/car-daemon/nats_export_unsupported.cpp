#include "nats_export.hpp"

// A build without the `nats` feature: --nats is refused before the daemon starts (main.cpp).
namespace car::daemon {

bool nats_supported() { return false; }

void release_nats_library() {}

struct NatsExport::Impl {};

NatsExport::NatsExport() = default;
NatsExport::~NatsExport() = default;

std::optional<std::string> NatsExport::configure(const Options& options, const std::string&,
                                                 runs::RunConfig&) {
  if (options.nats_servers.empty()) return std::nullopt;
  return "--nats: this car-daemon was built without the nats feature (meson -Dnats=enabled)";
}

void NatsExport::installed(host::HostService&, runs::RunService&) {}

void NatsExport::stop() {}

}  // namespace car::daemon
