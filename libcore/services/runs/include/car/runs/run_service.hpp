#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "car/method_registry.hpp"
#include "car/runs/run_record.hpp"
#include "car/runs/run_store.hpp"
#include "car/runs/trace_subscriber.hpp"
#include "car/export.hpp"

// Agent run tracing (PROTOCOL.md §7): the run lifecycle, persistence through a RunStore, authorization
// of trace reads and the live fan-out to subscribers. One RunService serves one Server.
//
// How a record travels. A handler checks and stamps synchronously under the service lock (so
// pipelined calls from one connection keep arrival order) and queues a store operation on the
// run's serial store actor: at most one pool job per run at a time, each taking everything queued.
// The job writes the lines (RunStore::append, on the pool), then, under the lock, *publishes*
// them: the records join the run's in-memory trace and their events are pushed to every
// subscriber. Only then is the call answered. So a record is visible to subscribers, snapshots
// and get_trace exactly when it is durable, and a snapshot taken under the lock is always
// followed by precisely the events of the records published after it.
//
// Threads: every public member may be called from any thread. Handlers run where the dispatcher
// calls them; store work and drains run on Executor::queue_work's pool; timers on the loop.
// Lifetime: create with install_run_services; the Server's method table and teardown hooks keep
// a reference, so it lives as long as the Server.
namespace car {
class Server;
class Connection;
}  // namespace car

namespace car::runs {

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
  // Where drain passes run: the pool (PROTOCOL.md §7.4), or the loop thread as a benchmark baseline
  // (car-daemon --drain-on-loop).
  DrainThread drain_thread = DrainThread::pool;
  std::size_t max_turns_per_call = 256;
  std::size_t max_turns_per_run = 2000;
  TurnLimits turn_limits;
  // Ended runs kept in memory (oldest dropped first; the store still serves them).
  std::size_t max_ended_runs = 256;
  // [ext] runs.get_trace returns at most this many bytes of records (at least one record) and
  // then adds `next_cursor`; a peer pages on with cursor = next_cursor.
  std::size_t max_trace_page_bytes = 4 * 1024 * 1024;
  // The store; null means make_jsonl_run_store(state_dir).
  std::shared_ptr<RunStore> store;
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
};

class CAR_API RunService : public std::enable_shared_from_this<RunService> {
 public:
  // Use install_run_services.
  RunService(Server& server, RunConfig config);
  ~RunService();
  RunService(const RunService&) = delete;
  RunService& operator=(const RunService&) = delete;

  // Graceful shutdown: refuses new runs and ends every open run `incomplete` at once. `flushed`
  // (optional) runs exactly once, on a pool or loop thread, when every store write queued so far
  // has finished; the embedder keeps its loop running until then.
  void shutdown(std::function<void()> flushed = {});

  RunCounters counters() const;
  // Per-subscription statistics (runs.stats), optionally for one run only.
  std::vector<SubscriberStats> subscriber_stats(std::optional<std::string_view> run_id = {}) const;
  std::size_t runs_in_memory() const;
  // Store operations queued or running.
  std::size_t pending_store_ops() const;
  const RunConfig& config() const { return config_; }

  // ---- the methods (PROTOCOL.md §7.2); registered by install_run_services ----
  void start(const Request& request, Reply reply);
  void complete(const Request& request, Reply reply);
  void record_turns(const Request& request, Reply reply);
  void subscribe(const Request& request, Reply reply);
  void unsubscribe(const Request& request, Reply reply);
  void list(const Request& request, Reply reply);
  void get_trace(const Request& request, Reply reply);
  void stats(const Request& request, Reply reply);

  // ---- teardown steps (PROTOCOL.md §3); registered by install_run_services ----
  void remove_subscriptions(const std::string& client_id);
  void start_grace(const std::string& client_id);

 private:
  struct Run;
  struct StoreOp;
  using RunPtr = std::shared_ptr<Run>;
  using StoreDone = std::function<void(std::optional<std::string> error)>;

  bool may_read(const Connection& connection, std::string_view agent_id,
                std::string_view starter_client_id) const;
  // The run's writer: the connection that started it, or one bound to its agent (PROTOCOL.md §7.3).
  static bool is_writer(std::string_view starter_client_id, std::string_view agent_id,
                        const Connection& connection);
  static bool is_writer(const Run& run, const Connection& connection);
  // The writer check for a run found only in the store. Pool thread (reads the store).
  bool is_stored_writer(std::string_view run_id, const Connection& connection);

  void create_run(std::shared_ptr<Connection> connection, std::string run_id,
                  std::string agent_id, std::string intent,
                  std::optional<std::string> outcome_description, Reply reply);
  void subscribe_stored(std::shared_ptr<Connection> connection, std::string run_id, Reply reply);
  void register_subscriber_locked(const std::shared_ptr<TraceSubscriber>& subscriber);
  bool remove_subscriber_locked(const std::string& run_id, const std::string& client_id,
                                const TraceSubscriber* only = nullptr);
  std::shared_ptr<TraceSubscriber> make_subscriber(const std::shared_ptr<Connection>& connection,
                                                   const std::string& run_id,
                                                   std::uint64_t cursor);

  void arm_grace_locked(const RunPtr& run);
  // Marks the run terminal and queues its `ended` record. Locked.
  void end_locked(const RunPtr& run, RunStatus status, std::string_view outcome_json,
                  StoreDone done);
  // Ends an open run `incomplete` (grace expiry, shutdown). Locked.
  void end_incomplete_locked(const RunPtr& run);
  void enqueue_locked(const RunPtr& run, StoreOp op);
  using Subscribers = std::vector<std::shared_ptr<TraceSubscriber>>;
  void run_store_job(const RunPtr& run);
  // Writes and publishes one operation; `ready` receives the subscribers whose drain pass the
  // publish claimed.
  void process_op(const RunPtr& run, StoreOp& op, Subscribers& ready);
  void publish_locked(const Run& run, const std::string& record, std::uint64_t cursor,
                      RunStatus status, Subscribers& ready);
  // Runs the claimed passes: here (a pool thread), or posted to the loop (DrainThread::loop).
  // Returns whether there were any.
  bool drain_ready(Subscribers& ready);
  void evict_locked();
  void op_finished();
  std::string next_timestamp_locked();

  Server& server_;
  const RunConfig config_;
  const std::shared_ptr<RunStore> store_;
  const std::shared_ptr<FanoutTotals> totals_;

  mutable std::mutex mutex_;  // "the runs lock"
  std::unordered_map<std::string, RunPtr> runs_;
  std::deque<std::string> ended_order_;  // ended runs in memory, oldest first
  // Subscriptions by run, then by client; and the runs each client is subscribed to.
  std::unordered_map<std::string, std::map<std::string, std::shared_ptr<TraceSubscriber>>> subs_;
  std::unordered_map<std::string, std::set<std::string>> subs_by_client_;
  bool shutting_down_ = false;
  std::int64_t last_started_ms_ = 0;
  std::size_t pending_ops_ = 0;
  std::vector<std::function<void()>> flush_waiters_;
  std::uint64_t events_published_ = 0;
  std::uint64_t store_jobs_ = 0;
  std::uint64_t store_ops_ = 0;
};

// Teardown steps of the run services (see car::teardown_order in car/server.hpp).
namespace teardown_order {
inline constexpr int run_subscriptions = 20;  // remove its run-trace subscriptions
inline constexpr int run_grace = 70;          // start the grace window of the runs it started
}  // namespace teardown_order

// Creates the service, registers runs.start, runs.complete, runs.record_turns, runs.subscribe,
// runs.unsubscribe, runs.list, runs.get_trace and runs.stats, and the teardown steps
// (teardown_order::run_subscriptions, teardown_order::run_grace). Call once, before serving.
CAR_API std::shared_ptr<RunService> install_run_services(Server& server, RunConfig config);

}  // namespace car::runs
