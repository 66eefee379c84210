#include "health_endpoints.hpp"

#include <string>
#include <utility>
#include <vector>

#include "car/host/host_service.hpp"
#include "car/json.hpp"
#include "car/metrics.hpp"
#include "car/prometheus_text.hpp"
#include "car/runs/run_service.hpp"
#include "car/server.hpp"
#include "car/version.hpp"

namespace car::daemon {
namespace {

MetricFamily counter(std::string name, std::string help, std::uint64_t value) {
  return {std::move(name), std::move(help), MetricType::counter, static_cast<double>(value), {}};
}

MetricFamily gauge(std::string name, std::string help, std::uint64_t value) {
  return {std::move(name), std::move(help), MetricType::gauge, static_cast<double>(value), {}};
}

}  // namespace

HttpRoutes::Handler healthz_handler(std::chrono::steady_clock::time_point started) {
  return [started](const ws::PlainHttpRequest&) {
    const auto uptime = std::chrono::duration_cast<std::chrono::seconds>(
        std::chrono::steady_clock::now() - started);
    std::string body = R"({"status":"ok","version":)";
    json::append_quoted(body, version_string);
    body += R"(,"uptime_seconds":)" + std::to_string(uptime.count()) + "}\n";
    return ws::PlainHttpResponse{200, "application/json", std::move(body), {}};
  };
}

HttpRoutes::Handler metrics_handler(HealthSources sources) {
  return [sources = std::move(sources)](const ws::PlainHttpRequest&) {
    std::vector<MetricFamily> families;
    if (sources.server != nullptr) {
      const ServerMetrics server = sources.server->metrics();
      families.push_back(gauge("car_connections_open",
                               "Client connections (WebSocket, Unix socket, stdio) now open.",
                               server.connections_open));
      families.push_back(counter("car_connections_accepted_total",
                                 "Client connections accepted since the daemon started.",
                                 server.connections_accepted));
      families.push_back(gauge("car_requests_in_flight",
                               "JSON-RPC requests received and not yet answered.",
                               server.requests_inflight));
    }
    const SinkTotals sinks = sink_totals();
    families.push_back(counter("car_frames_out_total",
                               "Frames (replies, notifications, events) written to clients.",
                               sinks.frames_written));
    families.push_back(counter("car_bytes_out_total",
                               "Payload bytes of the frames written to clients.",
                               sinks.bytes_written));
    families.push_back(counter("car_sink_refusals_total",
                               "Sends refused because a client's outbound queue was full.",
                               sinks.refused_full));
    if (sources.runs) {
      const runs::RunCounters runs = sources.runs->counters();
      families.push_back(counter("car_run_trace_dropped_total",
                                 "Run-trace events not delivered to a slow subscriber.",
                                 runs.events_dropped));
      families.push_back(counter("car_run_trace_gaps_total",
                                 "Gap notices sent to run-trace subscribers that lost events.",
                                 runs.gaps_sent));
      families.push_back(
          gauge("car_run_trace_subscribers", "Live run-trace subscriptions.", runs.subscribers));
      families.push_back(counter("car_runs_started_total",
                                 "Runs whose started record was written to the store.",
                                 runs.runs_started));
      families.push_back(counter("car_runs_ended_total",
                                 "Runs whose ending was written to the store.", runs.runs_ended));
      families.push_back(
          gauge("car_runs_open", "Runs started and not yet ended.",
                runs.runs_started > runs.runs_ended ? runs.runs_started - runs.runs_ended : 0));
      MetricFamily latency{"car_store_append_seconds",
                           "Time one run store append (start, record_turns or end) took.",
                           MetricType::histogram, 0, sources.runs->store_append_latency()};
      families.push_back(std::move(latency));
      // Record exporters (--nats): only when there is one, summed over them.
      const std::vector<runs::ExporterStats> exporters = sources.runs->exporter_stats();
      if (!exporters.empty()) {
        std::uint64_t lag = 0;
        std::uint64_t lost = 0;
        bool connected = true;
        for (const auto& e : exporters) {
          lag += e.lag;
          lost += e.lost;
          if (e.status && !e.status->connected) connected = false;
        }
        families.push_back(gauge("car_export_lag_records",
                                 "Records offered to the exporters and not yet acknowledged.",
                                 lag));
        families.push_back(counter("car_export_lost_total",
                                   "Records the exporters will never see (host events dropped).",
                                   lost));
        families.push_back(gauge("car_export_connected",
                                 "1 when every exporter with a link (NATS) is connected.",
                                 connected ? 1 : 0));
      }
    }
    if (sources.host) {
      families.push_back(counter("car_host_events_total",
                                 "Host events recorded (agents, devices, approvals, notify).",
                                 sources.host->state_ptr()->last_sequence()));
    }
    return ws::PlainHttpResponse{
        200, std::string(prometheus_content_type), format_prometheus_text(families), {}};
  };
}

void add_health_endpoints(HttpRoutes& routes, HealthSources sources) {
  routes.add("/healthz", healthz_handler(sources.started));
  routes.add("/metrics", metrics_handler(std::move(sources)));
}

}  // namespace car::daemon
