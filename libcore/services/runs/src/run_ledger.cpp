#include "run_ledger.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>

#include "car/connection.hpp"
#include "car/log.hpp"
#include "car/random.hpp"
#include "car/server.hpp"
#include "car/session/session_service.hpp"
#include "run_access.hpp"

namespace car::runs::detail {

// One store operation of a run, queued on its actor.
struct RunLedger::StoreOp {
  enum class Kind : std::uint8_t { started, turns, ended };
  Kind kind = Kind::turns;
  std::vector<std::string> records;                // compact JSON, in order
  std::uint64_t base_index = 0;                    // turns: index of the first record
  RunStatus final_status = RunStatus::incomplete;  // ended
  StoreDone done;  // pool thread, without the lock, after the records were published (or not)
};

// One run in memory. Immutable identity; everything else is guarded by the runs lock.
struct RunLedger::Run {
  std::string run_id;
  std::string agent_id;
  std::string client_id;  // the connection that started it

  // Accepted state (stamping and lifecycle checks).
  std::uint64_t reserved_turns = 0;  // turns stamped: published plus queued for the store
  bool terminal = false;             // an ending was accepted (maybe not yet written)
  bool removed = false;              // its `started` could not be written: the run is gone
  // A batch sync of this run's log failed (RunConfig::sync = batch): what it covered may or may
  // not be on disk, so nothing more is written to it — a later index could repeat one there.
  std::optional<std::string> sync_failure;
  Executor::TimerId grace_timer = 0;

  // Published state: what is durable and has been fanned out.
  std::uint64_t published_turns = 0;
  std::vector<std::shared_ptr<const std::string>> turns;  // dropped once the run has ended
  RunStatus status = RunStatus::in_progress;

  // The serial store actor: operations waiting, and whether a pool job owns them.
  std::deque<StoreOp> ops;
  bool store_busy = false;
};

namespace {

void on_pool(Executor& executor, Executor::Task work) {
  executor.queue_work(std::move(work), [] {});
}

std::size_t utf8_length(std::string_view s) {
  std::size_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80 ? 1 : 0;
  return n;
}

Error unknown_run(std::string_view run_id) {
  return {ErrorCode::invalid_params, fmt::format("unknown run '{}'", run_id)};
}

Error already_ended(std::string_view run_id) {
  return Error::internal(fmt::format("run '{}' already ended", run_id));
}

Error store_failed(std::string_view reason) {
  return Error::internal(fmt::format("store write failed: {}", reason));
}

Error not_authorized_run() { return Error::internal("not authorized for run"); }

Error key_of_another_agent() {
  return {ErrorCode::invalid_params, "idempotency key belongs to another agent"};
}

// Leaves the newest turns of at most `max_bytes` (and at least one) in `snapshot`, so one
// subscriber's reply is bounded however long the run is (the queue a snapshot lands in is not).
void bound_snapshot(TraceSnapshot& snapshot, std::size_t max_bytes) {
  auto& turns = snapshot.turns;
  std::size_t bytes = 0;
  std::size_t keep = 0;
  while (keep < turns.size()) {
    std::size_t size = turns[turns.size() - 1 - keep]->size() + 1;
    if (keep != 0 && bytes + size > max_bytes) break;
    bytes += size;
    keep += 1;
  }
  std::size_t cut = turns.size() - keep;
  if (cut == 0) return;
  turns.erase(turns.begin(), turns.begin() + static_cast<std::ptrdiff_t>(cut));
  snapshot.turns_from = cut;
}

// The answer to a start whose idempotency key names an existing run.
Result<StartedRun> existing_start(std::string run_id, std::string_view found_agent_id,
                                  std::string agent_id) {
  if (found_agent_id != agent_id) return key_of_another_agent();
  return StartedRun{std::move(run_id), std::move(agent_id)};
}

}  // namespace

std::string_view to_string(TurnRefusal refusal) {
  switch (refusal) {
    case TurnRefusal::run_not_found:
      return "run_not_found";
    case TurnRefusal::run_terminal:
      return "run_terminal";
    case TurnRefusal::run_turn_limit:
      return "run_turn_limit";
    case TurnRefusal::turn_too_large:
      return "turn_too_large";
  }
  return "run_not_found";
}

RunLedger::RunLedger(Server& server, RunConfig config, std::shared_ptr<std::mutex> runs_lock,
                     std::shared_ptr<TraceFanout> fanout)
    : server_(server),
      config_(std::move(config)),
      store_(config_.store ? config_.store : make_jsonl_run_store(config_.state_dir)),
      fanout_(std::move(fanout)),
      exports_(std::make_shared<RecordExports>(config_.exporters, config_.export_options, store_)),
      lock_(std::move(runs_lock)) {}

RunLedger::~RunLedger() = default;

// ---- runs.start ----

std::optional<std::string> RunLedger::resolve_agent_id(const StartSpec& spec,
                                                       const Session& session) const {
  // The resolution order of PROTOCOL.md §7.2.
  if (spec.agent_id) return spec.agent_id;
  if (auto bound = session::agent_id(session)) return bound;
  if (config_.default_agent_id && !config_.default_agent_id->empty()) {
    return config_.default_agent_id;
  }
  if (spec.agent_name) {
    std::string slug = slugify(*spec.agent_name);
    if (!slug.empty()) return "name:" + slug;
  }
  return std::nullopt;
}

void RunLedger::start(std::shared_ptr<Connection> writer, StartSpec spec,
                      Completion<StartedRun> done) {
  if (spec.idempotency_key) {
    std::size_t n = utf8_length(*spec.idempotency_key);
    if (n < 1 || n > 128) {
      done(Error::invalid_params("idempotency_key", "must be 1 to 128 characters"));
      return;
    }
  }
  auto resolved = resolve_agent_id(spec, writer->session());
  if (!resolved || resolved->empty()) {
    done(Error{ErrorCode::invalid_params, "cannot resolve agent id"});
    return;
  }
  std::string agent_id = std::move(*resolved);
  if (!spec.idempotency_key) {
    create_run(std::move(writer), uuid_v4(), std::move(agent_id), std::move(spec.intent),
               std::move(spec.outcome_description), std::move(done));
    return;
  }
  std::string key = std::move(*spec.idempotency_key);
  {
    std::unique_lock lock(*lock_);
    auto it = runs_.find(key);
    if (it != runs_.end() && !it->second->removed) {
      std::string found_agent_id = it->second->agent_id;
      lock.unlock();
      done(existing_start(std::move(key), found_agent_id, std::move(agent_id)));
      return;
    }
  }
  // Not in memory: the store may still hold it (evicted, or from before a restart).
  on_pool(server_.executor(),
          [self = shared_from_this(), writer = std::move(writer), key = std::move(key),
           agent_id = std::move(agent_id), intent = std::move(spec.intent),
           outcome_description = std::move(spec.outcome_description),
           done = std::move(done)]() mutable {
            if (auto found = self->store_->find(key)) {
              done(existing_start(std::move(key), found->agent_id, std::move(agent_id)));
              return;
            }
            self->create_run(std::move(writer), std::move(key), std::move(agent_id),
                             std::move(intent), std::move(outcome_description), std::move(done));
          });
}

void RunLedger::create_run(std::shared_ptr<Connection> writer, std::string run_id,
                           std::string agent_id, std::string intent,
                           std::optional<std::string> outcome_description,
                           Completion<StartedRun> done) {
  std::unique_lock lock(*lock_);
  if (shutting_down_) {
    lock.unlock();
    done(Error::internal("server is shutting down"));
    return;
  }
  auto existing = runs_.find(run_id);
  if (existing != runs_.end() && !existing->second->removed) {
    // Another start with the same idempotency key won the race while we read the store.
    std::string found_agent_id = existing->second->agent_id;
    lock.unlock();
    done(existing_start(std::move(run_id), found_agent_id, std::move(agent_id)));
    return;
  }
  auto run = std::make_shared<Run>();
  run->run_id = run_id;
  run->agent_id = agent_id;
  run->client_id = writer->client_id();
  std::string started_at = next_timestamp_locked();
  StoreOp op;
  op.kind = StoreOp::Kind::started;
  op.records.push_back(make_started_record(
      {run->run_id, run->agent_id, run->client_id, intent, outcome_description, started_at}));
  op.done = [done = std::move(done), run_id, agent_id](std::optional<std::string> error) {
    if (error) {
      done(store_failed(*error));
    } else {
      done(StartedRun{run_id, agent_id});
    }
  };
  // Registered now, before the answer: the writer's pipelined calls find it at once.
  runs_[run_id] = run;
  enqueue_locked(run, std::move(op));
  // A writer already gone (closed while we read the store) may have missed its teardown's grace
  // step: arm the window here (arming twice is a no-op).
  if (writer->closed()) arm_grace_locked(run);
}

// ---- runs.complete ----

void RunLedger::complete(std::shared_ptr<Connection> writer, std::string run_id,
                         std::string outcome_json, Finished done) {
  {
    std::unique_lock lock(*lock_);
    auto it = runs_.find(run_id);
    if (it != runs_.end() && !it->second->removed) {
      RunPtr run = it->second;
      if (!is_writer(*writer, run->client_id, run->agent_id)) {
        lock.unlock();
        done(unknown_run(run_id));
        return;
      }
      if (run->terminal) {
        lock.unlock();
        done(already_ended(run_id));
        return;
      }
      end_locked(run, RunStatus::completed, outcome_json,
                 [done = std::move(done)](std::optional<std::string> error) {
                   if (error) {
                     done(store_failed(*error));
                   } else {
                     done(std::nullopt);
                   }
                 });
      return;
    }
  }
  // Only the store can know it: such a run has ended (or its writer is gone), so it is terminal.
  on_pool(server_.executor(), [self = shared_from_this(), writer = std::move(writer),
                               run_id = std::move(run_id), done = std::move(done)] {
    done(self->is_stored_writer(run_id, *writer) ? already_ended(run_id) : unknown_run(run_id));
  });
}

bool RunLedger::is_stored_writer(std::string_view run_id, const Connection& connection) const {
  auto found = store_->find(run_id);
  return found && is_writer(connection, found->client_id, found->agent_id);
}

// ---- runs.record_turns ----

Error record_turns_params_error(std::string_view detail) {
  return {ErrorCode::invalid_params,
          fmt::format("runs.record_turns requires {{ run_id, turns: [RunTurn] }}: {}", detail)};
}

Result<TurnBatch> RunLedger::prepare_turns(const json::Value& turns) const {
  if (turns.Empty()) return record_turns_params_error("turns must be a non-empty array");
  if (turns.Size() > config_.max_turns_per_call) {
    return record_turns_params_error(
        fmt::format("turns must hold at most {} turns", config_.max_turns_per_call));
  }
  for (rapidjson::SizeType i = 0; i < turns.Size(); ++i) {
    if (!turns[i].IsObject()) {
      return record_turns_params_error(fmt::format("turns[{}] must be an object", i));
    }
  }
  // Truncation and serialization, before any lock; a turn that is too large is reported later,
  // in the spec's order (after existence, terminal and the run's limit).
  TurnBatch batch;
  batch.count = turns.Size();
  batch.tails.reserve(turns.Size());
  for (const auto& turn : turns.GetArray()) {
    auto tail = make_turn_tail(turn, config_.turn_limits);
    if (!tail) {
      batch.too_large = true;
      break;
    }
    batch.tails.push_back(std::move(*tail));
  }
  return batch;
}

void RunLedger::record_turns(std::shared_ptr<Connection> writer, std::string run_id,
                             TurnBatch batch, Completion<RecordedTurns> done) {
  const std::size_t count = batch.count;
  {
    std::unique_lock lock(*lock_);
    auto it = runs_.find(run_id);
    if (it != runs_.end() && !it->second->removed) {
      RunPtr run = it->second;
      std::optional<TurnRefusal> refused;
      if (!is_writer(*writer, run->client_id, run->agent_id)) {
        refused = TurnRefusal::run_not_found;  // indistinguishable from a missing run
      } else if (run->terminal) {
        refused = TurnRefusal::run_terminal;
      } else if (run->reserved_turns + count > config_.max_turns_per_run) {
        refused = TurnRefusal::run_turn_limit;
      } else if (batch.too_large) {
        refused = TurnRefusal::turn_too_large;
      }
      if (refused) {
        lock.unlock();
        done(RecordedTurns{0, 0, refused});
        return;
      }
      std::uint64_t base = run->reserved_turns;
      run->reserved_turns += count;
      StoreOp op;
      op.kind = StoreOp::Kind::turns;
      op.base_index = base;
      op.records.reserve(count);
      for (std::size_t i = 0; i < count; ++i) {
        op.records.push_back(stamp_turn(batch.tails[i], base + i));
      }
      op.done = [done = std::move(done), base, count](std::optional<std::string> error) {
        if (error) {
          done(store_failed(*error));
        } else {
          done(RecordedTurns{base, count, std::nullopt});
        }
      };
      enqueue_locked(run, std::move(op));
      return;
    }
  }
  on_pool(server_.executor(), [self = shared_from_this(), writer = std::move(writer),
                               run_id = std::move(run_id), done = std::move(done)] {
    // Runs found only in the store are terminal; for a non-writer they do not exist.
    bool is_writer_of_stored = self->is_stored_writer(run_id, *writer);
    done(RecordedTurns{
        0, 0, is_writer_of_stored ? TurnRefusal::run_terminal : TurnRefusal::run_not_found});
  });
}

// ---- endings and the grace window ----

void RunLedger::end_locked(const RunPtr& run, RunStatus status, std::string_view outcome_json,
                           StoreDone done) {
  run->terminal = true;
  if (run->grace_timer != 0) {
    server_.executor().cancel_timer(run->grace_timer);
    run->grace_timer = 0;
  }
  StoreOp op;
  op.kind = StoreOp::Kind::ended;
  op.final_status = status;
  std::string ended_at = format_timestamp(std::chrono::system_clock::now());
  op.records.push_back(make_ended_record(outcome_json, ended_at));
  op.done = std::move(done);
  enqueue_locked(run, std::move(op));
}

void RunLedger::end_incomplete_locked(const RunPtr& run) {
  if (run->terminal || run->removed) return;
  end_locked(run, RunStatus::incomplete, {}, [id = run->run_id](std::optional<std::string> error) {
    if (error) log_warn("run {}: could not record its incomplete ending", id);
  });
}

void RunLedger::arm_grace_locked(const RunPtr& run) {
  if (run->terminal || run->removed || run->grace_timer != 0) return;
  std::weak_ptr<RunLedger> weak = shared_from_this();
  std::weak_ptr<Run> weak_run = run;
  run->grace_timer = server_.executor().start_timer(config_.grace, [weak, weak_run] {
    auto self = weak.lock();
    auto r = weak_run.lock();
    if (!self || !r) return;
    std::lock_guard lock(*self->lock_);
    r->grace_timer = 0;
    // A runs.complete inside the window made it terminal; other appends do not count.
    self->end_incomplete_locked(r);
  });
}

void RunLedger::start_grace(const std::string& client_id) {
  std::lock_guard lock(*lock_);
  for (auto& [id, run] : runs_) {
    if (run->client_id == client_id) arm_grace_locked(run);
  }
}

void RunLedger::shutdown(std::function<void()> flushed) {
  bool now = false;
  {
    std::lock_guard lock(*lock_);
    shutting_down_ = true;
    for (auto& [id, run] : runs_) end_incomplete_locked(run);
    if (flushed) {
      if (pending_ops_ == 0) {
        now = true;
      } else {
        flush_waiters_.push_back(std::move(flushed));
      }
    }
  }
  if (now) flushed();
}

void RunLedger::evict_locked() {
  while (ended_order_.size() > config_.max_ended_runs) {
    std::string id = std::move(ended_order_.front());
    ended_order_.pop_front();
    auto it = runs_.find(id);
    if (it != runs_.end() && it->second->status != RunStatus::in_progress) runs_.erase(it);
  }
}

std::string RunLedger::next_timestamp_locked() {
  // Strictly increasing start times keep "newest first" well defined for runs started within the
  // same millisecond.
  auto now =
      std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
  std::int64_t ms = now.time_since_epoch().count();
  if (ms <= last_started_ms_) ms = last_started_ms_ + 1;
  last_started_ms_ = ms;
  return format_timestamp(std::chrono::system_clock::time_point(std::chrono::milliseconds(ms)));
}

// ---- the store actor ----

void RunLedger::enqueue_locked(const RunPtr& run, StoreOp op) {
  pending_ops_ += 1;
  run->ops.push_back(std::move(op));
  if (run->store_busy) return;  // the running job picks it up
  run->store_busy = true;
  queue_store_job_locked(run);
}

void RunLedger::queue_store_job_locked(const RunPtr& run) {
  store_jobs_ += 1;
  server_.executor().queue_work([self = shared_from_this(), run] { self->run_store_job(run); },
                                [] {});
}

void RunLedger::run_store_job(const RunPtr& run) {
  // Pool thread. Everything queued so far, in order; then hand the thread back to the pool and
  // come again if more arrived (another run's writes may be waiting for a thread).
  std::deque<StoreOp> ops;
  StoreCursor cursor;
  {
    std::lock_guard lock(*lock_);
    ops.swap(run->ops);
    cursor.written_turns = run->published_turns;
  }
  // After each op completes (its producer answered first) the passes its publish claimed run
  // right here, so a subscriber's events never wait for later appends, and a claimed queue —
  // empty when it was claimed — cannot fill up behind a pass that has not run yet. The whole job
  // is one pool hop however many passes ride it.
  TraceFanout::Claimed ready;
  bool drained = false;
  auto complete = [&](StoreOp& op, std::optional<std::string> error) {
    try {
      complete_op(run, op, std::move(error), ready);
    } catch (const std::exception& e) {
      // Only our own allocations can throw here (completion errors are caught inside); keep the
      // job's bookkeeping intact so the run and its subscribers are not wedged.
      log_error("run {}: store op failed: {}", run->run_id, e.what());
    }
    drained = fanout_->run_claimed(ready) || drained;
  };
  auto write = [&](const StoreOp& op) -> std::optional<std::string> {
    try {
      return write_op(run, op, cursor);
    } catch (const std::exception& e) {
      // Only our own allocations can throw here (a store's exceptions are caught inside): the
      // op fails as a write would, and nothing escapes into the pool thread.
      return fmt::format("store op failed: {}", e.what());
    }
  };
  if (config_.sync == StoreSync::none) {
    for (auto& op : ops) complete(op, write(op));
  } else {
    // Group commit: every op this job holds is appended, then one sync makes them all durable,
    // and only then is any of them published or answered — no ack precedes its sync.
    std::vector<std::optional<std::string>> errors;
    errors.reserve(ops.size());
    bool any_written = false;
    for (auto& op : ops) {
      errors.push_back(write(op));
      any_written = any_written || !errors.back();
    }
    if (any_written) {
      std::optional<std::string> failure;
      try {
        failure = store_->sync(run->agent_id, run->run_id);
      } catch (const std::exception& e) {
        failure = fmt::format("store threw: {}", e.what());  // an embedder's RunStore
      }
      if (failure) {
        log_warn("run {}: store sync failed: {}", run->run_id, *failure);
        std::lock_guard lock(*lock_);
        run->sync_failure = *failure;
        for (auto& error : errors) {
          if (!error) error = fmt::format("sync failed: {}", *failure);
        }
      }
    }
    for (std::size_t i = 0; i < ops.size(); ++i) complete(ops[i], std::move(errors[i]));
  }
  if (drained) fanout_->count_store_job_hop();
  std::lock_guard lock(*lock_);
  if (run->ops.empty()) {
    run->store_busy = false;
    return;
  }
  queue_store_job_locked(run);
}

std::optional<std::string> RunLedger::write_op(const RunPtr& run, const StoreOp& op,
                                               StoreCursor& cursor) {
  {
    std::lock_guard lock(*lock_);
    if (run->removed || cursor.start_failed) return "the run could not be started";
    if (run->sync_failure) return fmt::format("an earlier sync of this run failed: {}", *run->sync_failure);
    if (op.kind == StoreOp::Kind::turns && op.base_index != cursor.written_turns) {
      // An earlier append of this run failed after these turns were stamped: writing them would
      // leave a hole in the indices.
      return "an earlier append of this run failed";
    }
  }
  std::optional<std::string> error;
  const auto began = std::chrono::steady_clock::now();
  try {
    error = store_->append(run->agent_id, run->run_id, op.records);
  } catch (const std::exception& e) {
    error = fmt::format("store threw: {}", e.what());  // an embedder's RunStore
  }
  append_latency_.observe(std::chrono::steady_clock::now() - began);
  if (error) {
    if (op.kind == StoreOp::Kind::started) cursor.start_failed = true;
  } else if (op.kind == StoreOp::Kind::turns) {
    cursor.written_turns += op.records.size();
  }
  return error;
}

void RunLedger::complete_op(const RunPtr& run, StoreOp& op, std::optional<std::string> error,
                            TraceFanout::Claimed& ready) {
  bool prune_agent = false;  // an ending was written: its agent may hold one run too many
  {
    std::lock_guard lock(*lock_);
    store_ops_ += 1;
    if (error) {
      switch (op.kind) {
        case StoreOp::Kind::started: {
          run->removed = true;
          auto it = runs_.find(run->run_id);
          if (it != runs_.end() && it->second == run) runs_.erase(it);
          break;
        }
        case StoreOp::Kind::turns:
          // Give the indices back so the next call continues without a hole.
          run->reserved_turns = run->published_turns;
          break;
        case StoreOp::Kind::ended:
          // Not ended on disk: let the writer try again.
          run->terminal = false;
          break;
      }
    } else {
      // Durable now: publish under the same lock snapshots are taken under.
      switch (op.kind) {
        case StoreOp::Kind::started:
          ++runs_started_;
          fanout_->publish_locked(run->run_id, run->agent_id, op.records.front(), 0,
                                  RunStatus::in_progress, ready);
          offer_locked(*run, 0, op.records.front());
          break;
        case StoreOp::Kind::turns:
          for (auto& record : op.records) {
            run->published_turns += 1;
            auto shared = std::make_shared<const std::string>(std::move(record));
            fanout_->publish_locked(run->run_id, run->agent_id, *shared, run->published_turns,
                                    RunStatus::in_progress, ready);
            // Turn i is record i + 1 of the stored trace (after `started`).
            if (!exports_->empty()) {
              exports_->offer_run_record(run->agent_id, run->run_id, run->published_turns, shared);
            }
            run->turns.push_back(std::move(shared));
          }
          break;
        case StoreOp::Kind::ended:
          ++runs_ended_;
          run->status = op.final_status;
          fanout_->publish_locked(run->run_id, run->agent_id, op.records.front(),
                                  run->published_turns, run->status, ready);
          offer_locked(*run, run->published_turns + 1, op.records.front());
          // The trace now lives in the store; keep only what lifecycle checks need.
          run->turns.clear();
          run->turns.shrink_to_fit();
          ended_order_.push_back(run->run_id);
          evict_locked();
          prune_agent = true;
          break;
      }
    }
  }
  if (error) log_warn("run {}: store write failed: {}", run->run_id, *error);
  if (prune_agent) queue_prune(run->agent_id);
  if (op.done) {
    try {
      op.done(std::move(error));
    } catch (const std::exception& e) {
      log_error("run {}: store completion failed: {}", run->run_id, e.what());
    }
  }
  op_finished();
}

void RunLedger::offer_locked(const Run& run, std::uint64_t offset, const std::string& record) {
  // Published means acknowledged-to-be: the append (and with StoreSync::batch the sync) is done.
  if (exports_->empty()) return;
  exports_->offer_run_record(run.agent_id, run.run_id, offset,
                             std::make_shared<const std::string>(record));
}

void RunLedger::op_finished() {
  std::vector<std::function<void()>> waiters;
  {
    std::lock_guard lock(*lock_);
    pending_ops_ -= 1;
    if (pending_ops_ == 0) waiters.swap(flush_waiters_);
  }
  for (auto& w : waiters) w();
}

// ---- runs.subscribe ----

void RunLedger::subscribe(std::shared_ptr<Connection> reader, std::string run_id,
                          Completion<TraceSnapshot> done) {
  std::unique_lock lock(*lock_);
  auto it = runs_.find(run_id);
  if (it == runs_.end() || it->second->removed || it->second->status != RunStatus::in_progress) {
    // Unknown here, or ended: its whole trace is in the store.
    lock.unlock();
    subscribe_stored(std::move(reader), std::move(run_id), std::move(done));
    return;
  }
  RunPtr run = it->second;
  if (!may_read(server_, *reader, run->agent_id, run->client_id)) {
    lock.unlock();
    done(not_authorized_run());
    return;
  }
  if (reader->closed()) {
    // Its teardown already removed its subscriptions: registering now would leak one.
    lock.unlock();
    done(Error::internal("connection closed"));
    return;
  }
  // Snapshot and registration under the lock records are published under: every record is
  // either in the snapshot or delivered as an event, never both, never neither.
  TraceSnapshot snapshot;
  snapshot.agent_id = run->agent_id;
  snapshot.turns = run->turns;
  snapshot.cursor = run->published_turns;
  snapshot.status = RunStatus::in_progress;
  snapshot.subscriber = fanout_->attach_locked(reader, run_id, snapshot.cursor);
  lock.unlock();
  bound_snapshot(snapshot, config_.max_snapshot_bytes);
  done(std::move(snapshot));
}

void RunLedger::subscribe_stored(std::shared_ptr<Connection> reader, std::string run_id,
                                 Completion<TraceSnapshot> done) {
  on_pool(server_.executor(), [self = shared_from_this(), reader = std::move(reader),
                               run_id = std::move(run_id), done = std::move(done)] {
    auto trace = self->store_->read(run_id);
    if (!trace) {
      done(unknown_run(run_id));
      return;
    }
    if (!may_read(self->server_, *reader, trace->location.agent_id, trace->location.client_id)) {
      done(not_authorized_run());
      return;
    }
    TraceSnapshot snapshot;
    snapshot.agent_id = trace->location.agent_id;
    // Ended, or its writer is gone (crash): either way no event will follow.
    snapshot.status = trace->location.ended ? trace->summary.status : RunStatus::incomplete;
    for (auto& r : trace->records) {
      if (record_kind(r) == "turn") {
        snapshot.turns.push_back(std::make_shared<const std::string>(std::move(r)));
      }
    }
    snapshot.cursor = snapshot.turns.size();
    bound_snapshot(snapshot, self->config_.max_snapshot_bytes);
    {
      std::lock_guard lock(*self->lock_);
      if (!reader->closed()) {
        // Registered all the same, so unsubscribe and stats see it like any other.
        snapshot.subscriber = self->fanout_->attach_locked(reader, run_id, snapshot.cursor);
      }
    }
    done(std::move(snapshot));
  });
}

// ---- runs.list / runs.get_trace ----

void RunLedger::list(const Connection& reader, std::string agent_id,
                     std::optional<std::size_t> limit, std::optional<std::string> before,
                     Completion<RunPage> done) {
  if (!may_read(server_, reader, agent_id, {})) {
    done(Error::internal("not authorized for agent"));  // before any storage is read
    return;
  }
  if (limit) *limit = std::min(*limit, config_.max_list_page);
  on_pool(server_.executor(),
          [self = shared_from_this(), agent_id = std::move(agent_id), limit,
           before = std::move(before), done = std::move(done)] {
            std::optional<RunPage> page;
            try {
              page = self->store_->list_page(agent_id, limit.value_or(0), before);
            } catch (const std::exception& e) {
              done(Error::internal(fmt::format("store read failed: {}", e.what())));
              return;
            }
            if (!page) {
              done(Error{ErrorCode::invalid_params,
                         fmt::format("unknown run '{}' for 'before'", before.value_or(""))});
              return;
            }
            auto& runs = page->runs;
            {
              std::lock_guard lock(*self->lock_);
              for (auto& s : runs) {
                auto it = self->runs_.find(s.run_id);
                bool live = it != self->runs_.end() && !it->second->removed &&
                            it->second->status == RunStatus::in_progress;
                if (live) {
                  s.status = RunStatus::in_progress;
                } else if (s.status == RunStatus::in_progress) {
                  s.status = RunStatus::incomplete;  // no ending and no live writer: it never will
                }
              }
            }
            done(std::move(*page));
          });
}

// ---- retention ----

bool RunLedger::is_open(std::string_view run_id) const {
  std::lock_guard lock(*lock_);
  auto it = runs_.find(std::string(run_id));
  return it != runs_.end() && !it->second->removed && it->second->status == RunStatus::in_progress;
}

void RunLedger::prune_store() { queue_prune(std::nullopt); }

void RunLedger::queue_prune(std::optional<std::string> agent_id) {
  const RetentionPolicy& policy = config_.retention;
  if (policy.max_runs_per_agent == 0 && policy.max_age_days == 0) return;
  on_pool(server_.executor(), [self = shared_from_this(), agent_id = std::move(agent_id)] {
    std::weak_ptr<RunLedger> weak = self;
    IsOpenRun is_open = [weak](std::string_view id) {
      auto ledger = weak.lock();
      return !ledger || ledger->is_open(id);  // no ledger: be safe, keep it
    };
    try {
      std::optional<std::string_view> agent;
      if (agent_id) agent = *agent_id;
      std::size_t removed = self->store_->prune(agent, self->config_.retention, is_open,
                                                std::chrono::system_clock::now());
      if (removed != 0) log_debug("run store: pruned {} run(s)", removed);
    } catch (const std::exception& e) {
      log_warn("run store: pruning failed: {}", e.what());  // an embedder's RunStore
    }
  });
}

void RunLedger::get_trace(std::shared_ptr<Connection> reader, std::string run_id,
                          std::size_t cursor, Completion<std::optional<TracePage>> done) {
  on_pool(server_.executor(), [self = shared_from_this(), reader = std::move(reader),
                               run_id = std::move(run_id), cursor, done = std::move(done)] {
    auto trace = self->store_->read(run_id);
    if (!trace) {
      done(std::optional<TracePage>{});
      return;
    }
    if (!may_read(self->server_, *reader, trace->location.agent_id, trace->location.client_id)) {
      done(not_authorized_run());
      return;
    }
    // [ext] At most max_trace_page_bytes of records, but always at least one.
    TracePage page;
    page.agent_id = trace->location.agent_id;
    page.cursor = cursor;
    std::size_t i = cursor;
    std::size_t bytes = 0;
    for (; i < trace->records.size(); ++i) {
      std::string& r = trace->records[i];
      if (i != cursor && bytes + r.size() > self->config_.max_trace_page_bytes) break;
      bytes += r.size() + 1;
      page.records.push_back(std::move(r));
    }
    if (i < trace->records.size()) page.next_cursor = i;
    done(std::optional<TracePage>(std::move(page)));
  });
}

// ---- introspection ----

RunCounters RunLedger::counters() const {
  RunCounters out;
  std::lock_guard lock(*lock_);
  fanout_->add_counters_locked(out);
  out.store_jobs = store_jobs_;
  out.store_ops = store_ops_;
  out.runs_started = runs_started_;
  out.runs_ended = runs_ended_;
  for (const ExporterStats& e : exports_->stats()) {
    out.exports_offered += e.offered;
    out.exports_delivered += e.delivered;
    out.exports_fell_behind += e.fell_behind;
    out.exports_caught_up += e.caught_up;
  }
  return out;
}

std::size_t RunLedger::runs_in_memory() const {
  std::lock_guard lock(*lock_);
  return runs_.size();
}

std::size_t RunLedger::pending_store_ops() const {
  std::lock_guard lock(*lock_);
  return pending_ops_;
}

}  // namespace car::runs::detail
