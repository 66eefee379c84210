#include "nats_export.hpp"

#include <nats/nats.h>
#include <unistd.h>

#include <climits>
#include <filesystem>

#include "car/log.hpp"
#include "car/nats/jetstream_exporter.hpp"

namespace car::daemon {

bool nats_supported() { return true; }

namespace {
bool nats_used = false;  // main thread only: set by configure, read after the Daemon is gone
}  // namespace

void release_nats_library() {
  if (nats_used) (void)nats_CloseAndWait(2000);
}

struct NatsExport::Impl {
  std::shared_ptr<nats::JetStreamExporter> exporter;
};

NatsExport::NatsExport() : impl_(std::make_unique<Impl>()) {}
NatsExport::~NatsExport() = default;

namespace {

std::string machine_hostname() {
  char name[HOST_NAME_MAX + 1] = {};
  if (gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

}  // namespace

std::optional<std::string> NatsExport::configure(const Options& options,
                                                 const std::string& state_dir,
                                                 runs::RunConfig& config) {
  if (options.nats_servers.empty()) return std::nullopt;
  nats::JetStreamConfig c;
  c.servers = options.nats_servers;
  c.host_id = options.host_id ? *options.host_id : machine_hostname();
  if (options.nats_stream) c.stream = *options.nats_stream;
  if (options.nats_replicas) c.replicas = static_cast<int>(*options.nats_replicas);
  c.cursor_dir = (std::filesystem::path(state_dir) / "exports" / "nats").string();
  auto exporter = nats::make_jetstream_exporter(std::move(c));
  if (!exporter) return "--nats: " + exporter.error().message;
  impl_->exporter = exporter.value();
  nats_used = true;
  config.exporters.push_back(impl_->exporter);
  log_info("exporting run records to NATS JetStream stream {} as host {}",
           options.nats_stream.value_or("CAR"),
           options.host_id ? *options.host_id : machine_hostname());
  return std::nullopt;
}

void NatsExport::installed(host::HostService& host, runs::RunService& runs) {
  if (!impl_->exporter) return;
  if (auto tap = runs.host_event_exporter()) host.state().subscribe("record-exporters", tap);
}

void NatsExport::stop() {
  if (impl_->exporter) impl_->exporter->stop();
}

}  // namespace car::daemon
