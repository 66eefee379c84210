#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "car/export.hpp"
#include "car/fleet/fleet_index.hpp"
#include "car/result.hpp"

// The fleet gateway (docs/FLEET.md "Gateway", car-daemon --fleet): the runs of every host, read
// from the JetStream stream the hosts' exporters (car-daemon --nats) write, served over the same
// JSON-RPC methods as one daemon's runs service — runs.list, runs.get_trace, runs.subscribe,
// runs.unsubscribe, runs.stats — plus fleet.hosts, and a read-only host.subscribe so the run
// viewer works unchanged. Read-only: every write method of the local services is answered with
// one error (read_only_error). Authorization is the local one (PROTOCOL.md §7.5) through the
// session service, which the embedder installs as for a daemon.
//
// Threads: one libnats connection (its own I/O and delivery threads), one gateway worker thread
// for the reads that wait on the broker (runs.get_trace, runs.subscribe snapshots, starting and
// stopping consumers), with a bounded job queue; handlers never wait on the loop. Live events are
// pushed to the subscribers (StreamSubscriber, drop_with_gap, 256 events) from libnats' delivery
// threads; their drain passes run on the executor's pool as for local runs.
namespace car {
class Server;
}  // namespace car

namespace car::fleet {

struct CAR_API FleetConfig {
  // NATS servers (nats://host:port); several for a cluster. Required.
  std::vector<std::string> servers;
  std::string stream = "CAR";  // car::nats::default_stream
  std::string prefix = "car";  // car::nats::default_prefix
  FleetIndexLimits index;
  // Jobs (trace reads, consumer start/stop) queued for the worker; beyond it a read is answered
  // -32000 `server busy: fleet gateway has <n> reads queued`.
  std::size_t max_queued_jobs = 256;
  // Live runs.subscribe subscriptions (each one ordered consumer on the broker); beyond it
  // runs.subscribe of an open run is answered -32000.
  std::size_t max_live_subscriptions = 1024;
  std::size_t subscriber_queue = 256;
  std::chrono::milliseconds drain_timeout{10000};
  std::size_t max_trace_page_bytes = 4 * 1024 * 1024;
  std::size_t max_snapshot_bytes = 2 * 1024 * 1024;
  std::size_t max_list_page = 1000;
  std::chrono::milliseconds request_timeout{5000};  // of every broker round trip
};

// The gateway's counters (runs.stats "gateway").
struct CAR_API FleetStats {
  std::uint64_t records_indexed = 0;  // records applied to the index
  std::size_t runs_indexed = 0;
  std::uint64_t runs_evicted = 0;
  std::uint64_t trace_reads = 0;       // runs.get_trace and snapshot reads of the stream
  std::uint64_t read_errors = 0;
  std::uint64_t live_events = 0;       // records pushed to live subscribers
  std::size_t live_subscriptions = 0;  // now
  std::size_t queued_jobs = 0;         // now
  bool connected = false;              // the NATS connection, now
  std::string server;                  // the NATS server it is connected to ("" when none)
};

// -32603 `read-only fleet gateway: <method> is not served here; call the host's daemon`.
CAR_API Error read_only_error(std::string_view method);
// The write methods of the local services the gateway refuses (runs.start, host.register_agent…).
CAR_API const std::vector<std::string>& refused_methods();

class FleetService;

// Connects to the broker, starts indexing the stream from its beginning and registers the
// methods and the teardown step (runs::teardown_order::run_subscriptions). Errors: -32603 when no
// NATS server answers. A stream that does not exist yet is not an error: the index consumer is
// retried every second until an exporter has created it (the gateway never creates the stream).
CAR_API Result<std::shared_ptr<FleetService>> install_fleet_services(Server& server,
                                                                     FleetConfig config);

namespace detail {
class FleetGateway;
}

// A handle on the gateway, for the embedder's shutdown and introspection. Any thread.
class CAR_API FleetService {
 public:
  explicit FleetService(std::shared_ptr<detail::FleetGateway> gateway);
  ~FleetService();
  FleetService(const FleetService&) = delete;
  FleetService& operator=(const FleetService&) = delete;

  FleetStats stats() const;
  // Ends every live subscription, stops the index, the worker thread and the NATS connection.
  // Blocks until the worker has stopped (at most about one request_timeout): call it at
  // shutdown, once the connections are closed. Idempotent.
  void shutdown();

 private:
  std::shared_ptr<detail::FleetGateway> gateway_;
};

}  // namespace car::fleet
