#pragma once

#include <chrono>
#include <memory>

#include "http_routes.hpp"

// car-daemon's /healthz and /metrics (docs/OPERATIONS.md "Health and metrics"): what an
// orchestrator's liveness probe and a Prometheus scrape read, over plain HTTP on the WebSocket
// listeners. Both only read counters the library keeps anyway; neither reveals a token, an agent
// id or any run content, and neither blocks (a scrape takes the run ledger's lock once, like
// runs.stats).
namespace car {
class Server;
namespace host {
class HostService;
}
namespace runs {
class RunService;
}
}  // namespace car

namespace car::daemon {

// Where the numbers come from. The pointers must outlive every listener (the daemon's services
// do: the loop has ended before they go).
struct HealthSources {
  const Server* server = nullptr;
  std::shared_ptr<const host::HostService> host;
  std::shared_ptr<const runs::RunService> runs;
  // Process start, for uptime_seconds (steady: a clock step does not move it).
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
};

// /healthz: 200 application/json {"status":"ok","version":"<car::version_string>",
// "uptime_seconds":N} (N whole seconds). A daemon that can answer is up; nothing else is checked.
HttpRoutes::Handler healthz_handler(std::chrono::steady_clock::time_point started);

// /metrics: Prometheus text format 0.0.4 (car/prometheus_text.hpp); the names and their meaning
// are listed in docs/OPERATIONS.md.
HttpRoutes::Handler metrics_handler(HealthSources sources);

// routes.add("/healthz", ...) and routes.add("/metrics", ...).
void add_health_endpoints(HttpRoutes& routes, HealthSources sources);

}  // namespace car::daemon
