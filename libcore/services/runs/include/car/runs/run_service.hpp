#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "car/export.hpp"
#include "car/runs/record_exporter.hpp"
#include "car/runs/run_record.hpp"
#include "car/runs/run_store.hpp"
#include "car/event_stream.hpp"
#include "car/metrics.hpp"
#include "car/event_subscriber.hpp"

// Agent run tracing (PROTOCOL.md §7): the run lifecycle, persistence through a RunStore,
// authorization of trace reads and the live fan-out to subscribers, installed into a Server as
// the runs.* methods. One installation serves one Server.
//
// A record is durable before anyone sees it: a call is checked and stamped at once, in arrival
// order, and written by its run's store actor (one pool job per run at a time); only after the
// write does the record join the run's trace, reach its subscribers and get its call answered.
// A subscriber's snapshot is therefore followed by exactly the records written after it. The
// implementation (run ledger, trace fan-out, method bindings) is private to this library.
namespace car {
class Server;
}  // namespace car

namespace car::runs {

// When an acknowledged record is durable (car-daemon --sync).
enum class StoreSync : std::uint8_t {
  // Acknowledged once handed to the OS (write(2)): survives a crash of the daemon, not of the
  // machine. The default: batch costs a large share of throughput (docs/RELIABILITY.md).
  none,
  // Acknowledged once synced (RunStore::sync, fdatasync for the JSONL store): survives power loss.
  // One sync per store job covers every call queued on the run while the previous job ran (group
  // commit), so pipelined callers share it.
  batch,
};

struct CAR_API RunConfig {
  // Root of the default JSONL store (<state_dir>/runs/...). Ignored when `store` is set.
  std::string state_dir;
  // Agent id for runs.start calls that name none and whose session is unbound (car-daemon:
  // --agent-id, else env CAR_AGENT_ID).
  std::optional<std::string> default_agent_id;
  // Disconnect grace window (car-daemon --grace-ms).
  std::chrono::milliseconds grace{2000};
  // Deadline of every trace frame handed to a subscriber's sink (car-daemon --drain-timeout-ms).
  std::chrono::milliseconds drain_timeout{10000};
  // Events queued per subscription before they are dropped for it.
  std::size_t subscriber_queue = 256;
  // Where drain passes run: the pool (PROTOCOL.md §7.4), or the loop thread as a benchmark
  // baseline (car-daemon --drain-on-loop).
  DrainThread drain_thread = DrainThread::pool;
  std::size_t max_turns_per_call = 256;
  std::size_t max_turns_per_run = 2000;
  TurnLimits turn_limits;
  // Ended runs kept in memory (oldest dropped first; the store still serves them).
  std::size_t max_ended_runs = 256;
  // [ext] runs.get_trace returns at most this many bytes of records (at least one record) and
  // then adds `next_cursor`; a peer pages on with cursor = next_cursor.
  std::size_t max_trace_page_bytes = 4 * 1024 * 1024;
  // [ext] A runs.subscribe snapshot carries the newest turns of at most this many bytes (at least
  // one turn) and says from which index (`turns_from`); older turns are paged with runs.get_trace.
  std::size_t max_snapshot_bytes = 2 * 1024 * 1024;
  // [ext] runs.list {limit} is clamped to this many runs per page (PROTOCOL.md §7.2).
  std::size_t max_list_page = 1000;
  // What the store keeps (PROTOCOL.md §7.7; car-daemon --retain-runs / --retain-days): applied on
  // the pool at start-up to every agent, and to an agent each time one of its runs ends.
  RetentionPolicy retention;
  // The store; null means make_jsonl_run_store(state_dir).
  std::shared_ptr<RunStore> store;
  // Whether a call is answered after its records' write (none) or after their sync (batch).
  StoreSync sync = StoreSync::none;
  // Exporters offered every acknowledged record (car/runs/record_exporter.hpp), each on its own
  // thread with its own bounded queue; none by default. Null entries are ignored.
  std::vector<std::shared_ptr<RecordExporter>> exporters;
  ExportOptions export_options;
};

// One subscription's counters (runs.stats, RunService::subscriber_stats).
struct CAR_API SubscriberStats : StreamStats {
  std::string run_id;
  std::string client_id;
};

// Monotonic counters for tests and benchmarks.
struct CAR_API RunCounters {
  std::uint64_t drain_hops = 0;        // pool jobs that ran drain passes (a store job that drained
                                       // what it published counts once); events per hop = ratio
  std::uint64_t drain_passes = 0;      // batches handed to sinks, one per subscriber per pass
  std::uint64_t events_drained = 0;    // events those passes handed over
  std::uint64_t events_dropped = 0;    // events dropped at full subscriber queues
  std::uint64_t gaps_sent = 0;
  std::uint64_t events_published = 0;  // records fanned out to at least one subscriber
  std::uint64_t store_jobs = 0;        // pool hops paid by store actors
  std::uint64_t store_ops = 0;         // store operations (start, record_turns, end) they ran
  // For a metrics endpoint (car-daemon /metrics):
  std::uint64_t runs_started = 0;      // runs whose `started` record was written
  std::uint64_t runs_ended = 0;        // runs whose ending was written (open = started - ended)
  std::size_t subscribers = 0;         // live run-trace subscriptions, now
  // Record exporters, summed over every exporter (per exporter: RunService::exporter_stats).
  std::uint64_t exports_offered = 0;
  std::uint64_t exports_delivered = 0;
  std::uint64_t exports_fell_behind = 0;
  std::uint64_t exports_caught_up = 0;
};

class RunService;

// Creates the service, registers runs.start, runs.complete, runs.record_turns, runs.subscribe,
// runs.unsubscribe, runs.list, runs.get_trace and runs.stats, and the teardown steps
// (teardown_order::run_subscriptions, teardown_order::run_grace). Call once, before serving.
CAR_API std::shared_ptr<RunService> install_run_services(Server& server, RunConfig config);

namespace detail {
class RunLedger;
class TraceFanout;
}  // namespace detail

// A handle on the run services of one Server, for the embedder's shutdown and for introspection.
// Threads: every member may be called from any thread. Lifetime: the Server's method table and
// teardown hooks keep the services themselves alive as long as the Server; the handle keeps them
// alive as long as it lives, and may be dropped at any time.
class CAR_API RunService {
 public:
  // Use install_run_services (this creates the services without registering any method).
  RunService(Server& server, RunConfig config);
  ~RunService();
  RunService(const RunService&) = delete;
  RunService& operator=(const RunService&) = delete;

  // Graceful shutdown: refuses new runs and ends every open run `incomplete` at once. `flushed`
  // (optional) runs exactly once, on a pool or loop thread (on the calling thread when nothing is
  // pending), when every store write queued so far has finished; the embedder keeps its loop
  // running until then.
  void shutdown(std::function<void()> flushed = {});

  RunCounters counters() const;
  // How long each RunStore::append took (one observation per store operation, on the pool).
  LatencyHistogram::Snapshot store_append_latency() const;
  // Per-subscription statistics (runs.stats), optionally for one run only.
  std::vector<SubscriberStats> subscriber_stats(std::optional<std::string_view> run_id = {}) const;
  std::size_t runs_in_memory() const;
  // Store operations queued or running.
  std::size_t pending_store_ops() const;
  const RunConfig& config() const;

  // Per-exporter counters (RunConfig::exporters, in that order; runs.stats "exporters").
  std::vector<ExporterStats> exporter_stats() const;
  // The subscriber that offers host events to the exporters: subscribe it to the HostState
  // (`host->state().subscribe("record-exporters", runs->host_event_exporter())`) before serving.
  // Null when RunConfig::exporters is empty. The same object on every call; it holds the service
  // weakly and does nothing once the service is gone.
  std::shared_ptr<EventSubscriber> host_event_exporter() const;

 private:
  friend std::shared_ptr<RunService> install_run_services(Server& server, RunConfig config);

  std::shared_ptr<detail::TraceFanout> fanout_;
  std::shared_ptr<detail::RunLedger> ledger_;
};

// Teardown steps of the run services (see car::teardown_order in car/server.hpp).
namespace teardown_order {
inline constexpr int run_subscriptions = 20;  // remove its run-trace subscriptions
inline constexpr int run_grace = 70;          // start the grace window of the runs it started
}  // namespace teardown_order

}  // namespace car::runs
