#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "car/json.hpp"
#include "car/result.hpp"
#include "car/runs/run_record.hpp"
#include "car/runs/run_service.hpp"
#include "car/runs/run_store.hpp"
#include "car/event_stream.hpp"
#include "record_exports.hpp"
#include "trace_fanout.hpp"

// Private to the runs layer: the run ledger (PROTOCOL.md §7.1–§7.3, §7.7) — the lifecycle of every
// run (start, record turns, complete, the disconnect grace window, abandonment at shutdown),
// idempotency keys, stamping, and the serial store actor that makes records durable and then
// publishes them. It knows nothing about JSON-RPC: operations return values or car::Error, and
// the method bindings (run_methods.cpp) turn those into replies.
//
// How a record travels. An operation checks and stamps synchronously under the runs lock (so
// pipelined calls from one connection keep arrival order) and queues a store operation on the
// run's store actor: at most one pool job per run at a time, each taking everything queued. The
// job writes the lines (RunStore::append, on the pool), then, under the lock, publishes them: the
// records join the run's in-memory trace and go to the fan-out. Only then does the operation
// complete. So a record is visible to subscribers, snapshots and get_trace exactly when it is
// durable, and a snapshot taken under the lock (subscribe) is followed by precisely the events of
// the records published after it. The passes a publish claimed run in the same store job, right
// after its operation, so a publish to S subscribers costs no extra pool hop.
//
// Completions run exactly once and never under the runs lock: on the calling thread when the
// answer needs nothing from the store (a refusal, a live run's snapshot), otherwise on a pool
// thread once the store has been read or written.
//
// Threads: every public member may be called from any thread. Store work runs on
// Executor::queue_work's pool, the grace timers on the loop. Lifetime: owned by shared_ptr (the
// service handle and the method bindings); pool jobs hold it strongly, timers weakly. `server`
// must outlive it.
namespace car {
class Connection;
class Server;
class Session;
}  // namespace car

namespace car::runs::detail {

// Receives the outcome of an asynchronous ledger operation exactly once.
template <typename T>
using Completion = std::function<void(Result<T>)>;
// The same for an operation that has nothing to report but success (nullopt) or an error.
using Finished = std::function<void(std::optional<Error>)>;

// runs.start, as the client asked for it.
struct StartSpec {
  std::string intent;
  std::optional<std::string> agent_id;
  std::optional<std::string> agent_name;
  std::optional<std::string> outcome_description;
  std::optional<std::string> idempotency_key;  // becomes the run id
};

struct StartedRun {
  std::string run_id;
  std::string agent_id;
};

// The -32602 of every runs.record_turns params failure (PROTOCOL.md §7.3), in upstream's words so
// its clients recognise it: `runs.record_turns requires { run_id, turns: [RunTurn] }: <detail>`,
// where `detail` names the field, e.g. `turns[3] must be an object`.
Error record_turns_params_error(std::string_view detail);

// Turns prepared for runs.record_turns before any lock is taken (the costly part).
struct TurnBatch {
  std::vector<std::string> tails;  // make_turn_tail of each turn, up to the first too large
  std::size_t count = 0;           // turns sent
  bool too_large = false;          // some turn does not fit even with its bulk omitted
};

// Why runs.record_turns recorded nothing (PROTOCOL.md §7.3); not an error.
enum class TurnRefusal : std::uint8_t {
  run_not_found,
  run_terminal,
  run_turn_limit,
  turn_too_large
};
std::string_view to_string(TurnRefusal refusal);

struct RecordedTurns {
  std::uint64_t base_index = 0;
  std::size_t count = 0;
  std::optional<TurnRefusal> refused;  // set: nothing was recorded
};

// What a new subscriber starts from: the run's turns so far and the cursor they end at.
struct TraceSnapshot {
  std::string agent_id;
  std::vector<std::shared_ptr<const std::string>> turns;
  std::uint64_t cursor = 0;
  // Index of turns.front(): the snapshot holds only the newest max_snapshot_bytes of turns.
  std::uint64_t turns_from = 0;
  RunStatus status = RunStatus::in_progress;
  // Paused; resume it once the snapshot is queued. Null when the connection closed meanwhile.
  std::shared_ptr<StreamSubscriber> subscriber;
};

// One page of a stored trace (runs.get_trace).
struct TracePage {
  std::string agent_id;
  std::vector<std::string> records;
  std::size_t cursor = 0;                  // index of the first record
  std::optional<std::size_t> next_cursor;  // more records follow from here
};

class RunLedger : public std::enable_shared_from_this<RunLedger> {
 public:
  // `runs_lock` is shared with `fanout` (see trace_fanout.hpp).
  RunLedger(Server& server, RunConfig config, std::shared_ptr<std::mutex> runs_lock,
            std::shared_ptr<TraceFanout> fanout);
  ~RunLedger();
  RunLedger(const RunLedger&) = delete;
  RunLedger& operator=(const RunLedger&) = delete;

  // ---- the lifecycle (PROTOCOL.md §7.2, §7.3) ----

  // Starts a run written by `writer`, or finds the one its idempotency key already started.
  // Errors: -32602 for a key outside 1..128 characters, an agent id that cannot be resolved or a
  // key that belongs to another agent; -32603 when shutting down or the store write failed.
  void start(std::shared_ptr<Connection> writer, StartSpec spec, Completion<StartedRun> done);

  // Ends the run `completed` with `outcome_json` (the client's AgentOutcome, compact). Errors:
  // -32602 "unknown run" (also for a non-writer); -32603 when it already ended or the store
  // write failed.
  void complete(std::shared_ptr<Connection> writer, std::string run_id, std::string outcome_json,
                Finished done);

  // Validates and prepares runs.record_turns' `turns` (an array, already type-checked) without
  // taking any lock. Errors: record_turns_params_error for an empty array, more than
  // max_turns_per_call, or a turn that is not an object.
  Result<TurnBatch> prepare_turns(const json::Value& turns) const;
  // Stamps and records `batch`. A refusal is a value (RecordedTurns::refused); the only error is
  // -32603 when the store write failed.
  void record_turns(std::shared_ptr<Connection> writer, std::string run_id, TurnBatch batch,
                    Completion<RecordedTurns> done);

  // Teardown step run_grace: arms the grace window of every open run `client_id` started; a run
  // not completed within it ends `incomplete`.
  void start_grace(const std::string& client_id);

  // Refuses new runs and ends every open run `incomplete` at once. `flushed` (optional) runs
  // exactly once, on the calling thread or a pool thread, when every store write queued so far
  // has finished.
  void shutdown(std::function<void()> flushed);

  // ---- reads ----

  // Takes the run's trace so far and attaches a fan-out subscriber for `reader` that continues
  // exactly where it ends. A run found only in the store gets its stored turns and a subscriber
  // that will receive nothing. Errors: -32602 "unknown run"; -32603 not authorized, or the
  // connection is already closed.
  void subscribe(std::shared_ptr<Connection> reader, std::string run_id,
                 Completion<TraceSnapshot> done);

  // The runs of `agent_id`, newest first, with the live status: at most `limit` (nothing: all)
  // started before the run `before`. Errors: -32603 not authorized (decided before any storage is
  // read); -32602 for a `before` that is not a run of this agent.
  void list(const Connection& reader, std::string agent_id, std::optional<std::size_t> limit,
            std::optional<std::string> before, Completion<RunPage> done);

  // Applies the retention policy to every agent's stored runs, on the pool (start-up).
  void prune_store();

  // The stored records of `run_id` from index `cursor`, at most max_trace_page_bytes of them (at
  // least one). Nothing when the store has no such run. Error: -32603 not authorized.
  void get_trace(std::shared_ptr<Connection> reader, std::string run_id, std::size_t cursor,
                 Completion<std::optional<TracePage>> done);

  // ---- introspection ----

  // The store actors' counters and the fan-out's, read under one lock.
  RunCounters counters() const;
  std::size_t runs_in_memory() const;
  const LatencyHistogram& append_latency() const { return append_latency_; }
  std::size_t pending_store_ops() const;  // queued or running
  const RunConfig& config() const { return config_; }
  RecordExports& exports() const { return *exports_; }

 private:
  struct Run;
  struct StoreOp;
  using RunPtr = std::shared_ptr<Run>;
  using StoreDone = std::function<void(std::optional<std::string> error)>;

  void create_run(std::shared_ptr<Connection> writer, std::string run_id, std::string agent_id,
                  std::string intent, std::optional<std::string> outcome_description,
                  Completion<StartedRun> done);
  std::optional<std::string> resolve_agent_id(const StartSpec& spec, const Session& session) const;
  // The writer check for a run found only in the store. Pool thread (reads the store).
  bool is_stored_writer(std::string_view run_id, const Connection& connection) const;
  void subscribe_stored(std::shared_ptr<Connection> reader, std::string run_id,
                        Completion<TraceSnapshot> done);

  // Lifecycle, with the lock held.
  void arm_grace_locked(const RunPtr& run);
  // Marks the run terminal and queues its `ended` record.
  void end_locked(const RunPtr& run, RunStatus status, std::string_view outcome_json,
                  StoreDone done);
  // Ends an open run `incomplete` (grace expiry, shutdown).
  void end_incomplete_locked(const RunPtr& run);
  void evict_locked();
  // Applies the retention policy to `agent_id` (nothing: every agent) on the pool.
  void queue_prune(std::optional<std::string> agent_id);
  bool is_open(std::string_view run_id) const;
  std::string next_timestamp_locked();

  // The store actor.
  void enqueue_locked(const RunPtr& run, StoreOp op);
  void queue_store_job_locked(const RunPtr& run);
  void run_store_job(const RunPtr& run);
  // What one store job has written so far, for the checks of the ops after it.
  struct StoreCursor {
    std::uint64_t written_turns = 0;  // the run's turns on disk, counting this job's appends
    bool start_failed = false;        // this job's `started` append failed
  };
  // Appends one operation's records (pool thread, no lock held during the write); the error, if
  // it was not written.
  std::optional<std::string> write_op(const RunPtr& run, const StoreOp& op, StoreCursor& cursor);
  // Publishes a written operation (or undoes its stamping when `error`) and answers its caller;
  // `ready` receives the subscribers whose pass it claimed.
  void complete_op(const RunPtr& run, StoreOp& op, std::optional<std::string> error,
                   TraceFanout::Claimed& ready);
  void op_finished();
  // Offers a published record of `run` at `offset` in its stored trace to the exporters.
  void offer_locked(const Run& run, std::uint64_t offset, const std::string& record);

  Server& server_;
  const RunConfig config_;
  const std::shared_ptr<RunStore> store_;
  const std::shared_ptr<TraceFanout> fanout_;
  // Offered every published record, under the runs lock (offers never wait for an exporter).
  const std::shared_ptr<RecordExports> exports_;

  const std::shared_ptr<std::mutex> lock_;  // the runs lock; guards everything below
  std::unordered_map<std::string, RunPtr> runs_;
  std::deque<std::string> ended_order_;  // ended runs in memory, oldest first
  bool shutting_down_ = false;
  std::int64_t last_started_ms_ = 0;
  std::size_t pending_ops_ = 0;
  std::vector<std::function<void()>> flush_waiters_;
  std::uint64_t store_jobs_ = 0;
  std::uint64_t store_ops_ = 0;
  std::uint64_t runs_started_ = 0;
  std::uint64_t runs_ended_ = 0;
  LatencyHistogram append_latency_;  // atomics: recorded outside the lock
};

}  // namespace car::runs::detail
