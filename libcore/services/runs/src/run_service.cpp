#include "car/runs/run_service.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "car/connection.hpp"
#include "car/log.hpp"
#include "car/random.hpp"
#include "car/server.hpp"
#include "car/session/session_service.hpp"
#include "run_service_detail.hpp"

namespace car::runs {

RunService::RunService(Server& server, RunConfig config)
    : server_(server),
      config_(std::move(config)),
      store_(config_.store ? config_.store : make_jsonl_run_store(config_.state_dir)),
      totals_(std::make_shared<FanoutTotals>()) {}

RunService::~RunService() = default;

std::shared_ptr<RunService> install_run_services(Server& server, RunConfig config) {
  auto service = std::make_shared<RunService>(server, std::move(config));
  auto& methods = server.methods();
  auto bind = [&service](void (RunService::*fn)(const Request&, Reply)) {
    return [service, fn](const Request& request, Reply reply) {
      ((*service).*fn)(request, std::move(reply));
    };
  };
  methods.add("runs.start",
              {required("intent", ParamType::string), optional("agent_id", ParamType::non_empty_string),
               optional("agent_name", ParamType::string),
               optional("outcome_description", ParamType::string),
               optional("idempotency_key", ParamType::string)},
              bind(&RunService::start));
  methods.add("runs.complete",
              {required("run_id", ParamType::non_empty_string), required("outcome", ParamType::object)},
              bind(&RunService::complete));
  methods.add("runs.record_turns",
              {required("run_id", ParamType::non_empty_string), required("turns", ParamType::array)},
              bind(&RunService::record_turns));
  methods.add("runs.subscribe", {required("run_id", ParamType::non_empty_string)},
              bind(&RunService::subscribe));
  methods.add("runs.unsubscribe", {required("run_id", ParamType::non_empty_string)},
              bind(&RunService::unsubscribe));
  methods.add("runs.list", {required("agent_id", ParamType::non_empty_string)},
              bind(&RunService::list));
  methods.add("runs.get_trace",
              {required("run_id", ParamType::non_empty_string),
               optional("cursor", ParamType::non_negative_integer)},
              bind(&RunService::get_trace));
  methods.add("runs.stats", {optional("run_id", ParamType::string)}, bind(&RunService::stats));

  // Hooks hold the service weakly: a hook must not keep it alive past the method table.
  std::weak_ptr<RunService> weak = service;
  server.add_teardown_step(teardown_order::run_subscriptions, [weak](Connection& c) {
    if (auto s = weak.lock()) s->remove_subscriptions(c.client_id());
  });
  server.add_teardown_step(teardown_order::run_grace, [weak](Connection& c) {
    if (auto s = weak.lock()) s->start_grace(c.client_id());
  });
  return service;
}

// ---- authorization (PROTOCOL.md §7.5) ----

bool RunService::may_read(const Connection& connection, std::string_view agent_id,
                          std::string_view starter_client_id) const {
  if (!server_.config().require_auth) return true;
  const Session& session = connection.session();
  if (session::is_host(session)) return true;
  auto bound = session::agent_id(session);
  if (bound && *bound == agent_id) return true;
  return !starter_client_id.empty() && connection.client_id() == starter_client_id;
}

bool RunService::is_writer(std::string_view starter_client_id, std::string_view agent_id,
                           const Connection& connection) {
  if (connection.client_id() == starter_client_id) return true;
  auto bound = session::agent_id(connection.session());
  return bound && *bound == agent_id;
}

bool RunService::is_writer(const Run& run, const Connection& connection) {
  return is_writer(run.client_id, run.agent_id, connection);
}

bool RunService::is_stored_writer(std::string_view run_id, const Connection& connection) {
  auto found = store_->find(run_id);
  return found && is_writer(found->client_id, found->agent_id, connection);
}

// ---- the store actor ----

void RunService::enqueue_locked(const RunPtr& run, StoreOp op) {
  pending_ops_ += 1;
  run->ops.push_back(std::move(op));
  if (run->store_busy) return;  // the running job picks it up
  run->store_busy = true;
  store_jobs_ += 1;
  auto self = shared_from_this();
  server_.executor().queue_work([self, run] { self->run_store_job(run); }, [] {});
}

void RunService::run_store_job(const RunPtr& run) {
  // Pool thread. Everything queued so far, in order; then hand the thread back to the pool and
  // come again if more arrived (another run's writes may be waiting for a thread).
  std::deque<StoreOp> ops;
  {
    std::lock_guard lock(mutex_);
    ops.swap(run->ops);
  }
  // After each op (its producer answered first) the passes its publish claimed run right here,
  // so a subscriber's events never wait for later appends, and a claimed queue — empty when it
  // was claimed — cannot fill up behind a pass that has not run yet. The whole job is one pool
  // hop however many passes ride it.
  Subscribers ready;
  bool drained = false;
  for (auto& op : ops) {
    try {
      process_op(run, op, ready);
    } catch (const std::exception& e) {
      // Only our own allocations can throw here (store and done errors are caught inside);
      // keep the job's bookkeeping intact so the run and its subscribers are not wedged.
      log_error("run {}: store op failed: {}", run->run_id, e.what());
    }
    drained = drain_ready(ready) || drained;
  }
  if (drained && config_.drain_thread == DrainThread::pool) {
    totals_->drain_hops.fetch_add(1, std::memory_order_relaxed);
  }
  std::lock_guard lock(mutex_);
  if (run->ops.empty()) {
    run->store_busy = false;
    return;
  }
  store_jobs_ += 1;
  auto self = shared_from_this();
  server_.executor().queue_work([self, run] { self->run_store_job(run); }, [] {});
}

void RunService::process_op(const RunPtr& run, StoreOp& op, Subscribers& ready) {
  std::optional<std::string> error;
  {
    std::lock_guard lock(mutex_);
    if (run->removed) {
      error = "the run could not be started";
    } else if (op.kind == StoreOp::Kind::turns && op.base_index != run->published_turns) {
      // An earlier append of this run failed after these turns were stamped: writing them would
      // leave a hole in the indices.
      error = "an earlier append of this run failed";
    }
  }
  if (!error) {
    try {
      error = store_->append(run->agent_id, run->run_id, op.records);
    } catch (const std::exception& e) {
      error = fmt::format("store threw: {}", e.what());  // an embedder's RunStore
    }
  }
  {
    std::lock_guard lock(mutex_);
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
      switch (op.kind) {
        case StoreOp::Kind::started:
          run->start_published = true;
          publish_locked(*run, op.records.front(), 0, RunStatus::in_progress, ready);
          break;
        case StoreOp::Kind::turns:
          for (auto& record : op.records) {
            run->published_turns += 1;
            auto shared = std::make_shared<const std::string>(std::move(record));
            publish_locked(*run, *shared, run->published_turns, RunStatus::in_progress, ready);
            run->turns.push_back(std::move(shared));
          }
          break;
        case StoreOp::Kind::ended:
          run->status = op.final_status;
          run->ended_at = op.ended_at;
          publish_locked(*run, op.records.front(), run->published_turns, run->status, ready);
          // The trace now lives in the store; keep only what lifecycle checks need.
          run->turns.clear();
          run->turns.shrink_to_fit();
          ended_order_.push_back(run->run_id);
          evict_locked();
          break;
      }
    }
  }
  if (error) log_warn("run {}: store write failed: {}", run->run_id, *error);
  if (op.done) {
    try {
      op.done(std::move(error));
    } catch (const std::exception& e) {
      log_error("run {}: store completion failed: {}", run->run_id, e.what());
    }
  }
  op_finished();
}

void RunService::op_finished() {
  std::vector<std::function<void()>> waiters;
  {
    std::lock_guard lock(mutex_);
    pending_ops_ -= 1;
    if (pending_ops_ == 0) waiters.swap(flush_waiters_);
  }
  for (auto& w : waiters) w();
}

void RunService::publish_locked(const Run& run, const std::string& record, std::uint64_t cursor,
                                RunStatus status, Subscribers& ready) {
  auto it = subs_.find(run.run_id);
  if (it == subs_.end() || it->second.empty()) return;
  // Serialized once; every subscriber's queue holds the same Frame.
  TraceEvent event{make_frame(detail::trace_event_text(run.run_id, run.agent_id, record, cursor,
                                                       status)),
                   cursor};
  events_published_ += 1;
  for (auto& [client, subscriber] : it->second) {
    if (subscriber->push_claiming(event)) ready.push_back(subscriber);
  }
}

bool RunService::drain_ready(Subscribers& ready) {
  // Pool thread, no lock held (a refused send may end a subscription, which takes the lock).
  if (ready.empty()) return false;
  if (config_.drain_thread == DrainThread::loop) {
    totals_->drain_hops.fetch_add(1, std::memory_order_relaxed);  // one loop task per call
    server_.executor().post([batch = std::move(ready)] {
      for (const auto& subscriber : batch) subscriber->drain_claimed();
    });
    ready = {};
    return true;
  }
  for (const auto& subscriber : ready) subscriber->drain_claimed();
  ready.clear();
  return true;
}

void RunService::evict_locked() {
  while (ended_order_.size() > config_.max_ended_runs) {
    std::string id = std::move(ended_order_.front());
    ended_order_.pop_front();
    auto it = runs_.find(id);
    if (it != runs_.end() && it->second->status != RunStatus::in_progress) runs_.erase(it);
  }
}

std::string RunService::next_timestamp_locked() {
  // Strictly increasing start times keep "newest first" well defined for runs started within
  // the same millisecond.
  auto now = std::chrono::time_point_cast<std::chrono::milliseconds>(
      std::chrono::system_clock::now());
  std::int64_t ms = now.time_since_epoch().count();
  if (ms <= last_started_ms_) ms = last_started_ms_ + 1;
  last_started_ms_ = ms;
  return format_timestamp(std::chrono::system_clock::time_point(std::chrono::milliseconds(ms)));
}

// ---- lifecycle ----

void RunService::end_locked(const RunPtr& run, RunStatus status, std::string_view outcome_json,
                            StoreDone done) {
  run->terminal = true;
  if (run->grace_timer != 0) {
    server_.executor().cancel_timer(run->grace_timer);
    run->grace_timer = 0;
  }
  StoreOp op;
  op.kind = StoreOp::Kind::ended;
  op.final_status = status;
  op.ended_at = format_timestamp(std::chrono::system_clock::now());
  op.records.push_back(make_ended_record(outcome_json, op.ended_at));
  op.done = std::move(done);
  enqueue_locked(run, std::move(op));
}

void RunService::end_incomplete_locked(const RunPtr& run) {
  if (run->terminal || run->removed) return;
  end_locked(run, RunStatus::incomplete, {}, [id = run->run_id](std::optional<std::string> error) {
    if (error) log_warn("run {}: could not record its incomplete ending", id);
  });
}

void RunService::arm_grace_locked(const RunPtr& run) {
  if (run->terminal || run->removed || run->grace_timer != 0) return;
  std::weak_ptr<RunService> weak = shared_from_this();
  std::weak_ptr<Run> weak_run = run;
  run->grace_timer = server_.executor().start_timer(config_.grace, [weak, weak_run] {
    auto self = weak.lock();
    auto r = weak_run.lock();
    if (!self || !r) return;
    std::lock_guard lock(self->mutex_);
    r->grace_timer = 0;
    // A runs.complete inside the window made it terminal; other appends do not count.
    self->end_incomplete_locked(r);
  });
}

void RunService::start_grace(const std::string& client_id) {
  std::lock_guard lock(mutex_);
  for (auto& [id, run] : runs_) {
    if (run->client_id == client_id) arm_grace_locked(run);
  }
}

void RunService::shutdown(std::function<void()> flushed) {
  bool now = false;
  {
    std::lock_guard lock(mutex_);
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

// ---- subscriptions ----

std::shared_ptr<TraceSubscriber> RunService::make_subscriber(
    const std::shared_ptr<Connection>& connection, const std::string& run_id,
    std::uint64_t cursor) {
  std::weak_ptr<RunService> weak = shared_from_this();
  TraceSubscriber::Options options{config_.subscriber_queue, config_.drain_timeout,
                                   config_.drain_thread};
  std::weak_ptr<Connection> weak_connection = connection;
  return std::make_shared<TraceSubscriber>(
      server_.executor(), run_id, connection->client_id(), connection, cursor, options, totals_,
      [weak, weak_connection](TraceSubscriber& subscriber, SinkError) {
        if (auto self = weak.lock()) {
          std::lock_guard lock(self->mutex_);
          self->remove_subscriber_locked(subscriber.run_id(), subscriber.client_id(), &subscriber);
        }
        // The sink has failed, so the core is already ending the connection; make sure of it
        // (idempotent), from the loop rather than inside the sink's completion.
        if (auto c = weak_connection.lock()) {
          c->server().executor().post([weak_connection] {
            if (auto conn = weak_connection.lock()) conn->end();
          });
        }
      });
}

void RunService::register_subscriber_locked(const std::shared_ptr<TraceSubscriber>& subscriber) {
  auto& by_client = subs_[subscriber->run_id()];
  auto [it, inserted] = by_client.try_emplace(subscriber->client_id(), subscriber);
  if (!inserted) {
    it->second->stop();  // re-subscribe replaces
    it->second = subscriber;
  }
  subs_by_client_[subscriber->client_id()].insert(subscriber->run_id());
}

bool RunService::remove_subscriber_locked(const std::string& run_id, const std::string& client_id,
                                          const TraceSubscriber* only) {
  auto it = subs_.find(run_id);
  if (it == subs_.end()) return false;
  auto sub = it->second.find(client_id);
  if (sub == it->second.end()) return false;
  if (only != nullptr && sub->second.get() != only) return false;  // already replaced
  sub->second->stop();
  it->second.erase(sub);
  if (it->second.empty()) subs_.erase(it);
  auto c = subs_by_client_.find(client_id);
  if (c != subs_by_client_.end()) {
    c->second.erase(run_id);
    if (c->second.empty()) subs_by_client_.erase(c);
  }
  return true;
}

void RunService::remove_subscriptions(const std::string& client_id) {
  std::lock_guard lock(mutex_);
  auto c = subs_by_client_.find(client_id);
  if (c == subs_by_client_.end()) return;
  std::set<std::string> run_ids = std::move(c->second);
  subs_by_client_.erase(c);
  for (const auto& run_id : run_ids) {
    auto it = subs_.find(run_id);
    if (it == subs_.end()) continue;
    auto sub = it->second.find(client_id);
    if (sub != it->second.end()) {
      sub->second->stop();
      it->second.erase(sub);
    }
    if (it->second.empty()) subs_.erase(it);
  }
}

// ---- introspection ----

RunCounters RunService::counters() const {
  RunCounters out;
  out.drain_hops = totals_->drain_hops.load(std::memory_order_relaxed);
  out.drain_passes = totals_->drain_passes.load(std::memory_order_relaxed);
  out.events_drained = totals_->events_drained.load(std::memory_order_relaxed);
  out.events_dropped = totals_->events_dropped.load(std::memory_order_relaxed);
  out.gaps_sent = totals_->gaps_sent.load(std::memory_order_relaxed);
  std::lock_guard lock(mutex_);
  out.events_published = events_published_;
  out.store_jobs = store_jobs_;
  out.store_ops = store_ops_;
  return out;
}

std::vector<SubscriberStats> RunService::subscriber_stats(
    std::optional<std::string_view> run_id) const {
  std::vector<std::shared_ptr<TraceSubscriber>> subs;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [id, by_client] : subs_) {
      if (run_id && id != *run_id) continue;
      for (const auto& [client, sub] : by_client) subs.push_back(sub);
    }
  }
  std::vector<SubscriberStats> out;
  out.reserve(subs.size());
  for (const auto& s : subs) out.push_back(s->stats());
  return out;
}

std::size_t RunService::runs_in_memory() const {
  std::lock_guard lock(mutex_);
  return runs_.size();
}

std::size_t RunService::pending_store_ops() const {
  std::lock_guard lock(mutex_);
  return pending_ops_;
}

}  // namespace car::runs
