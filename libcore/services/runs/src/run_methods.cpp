// The runs.* method handlers (PROTOCOL.md §7.2, §7.3, §7.5). Checks and stamping happen synchronously
// under the runs lock; everything that touches the store runs on the pool.
#include <fmt/format.h>

#include <algorithm>

#include "car/connection.hpp"
#include "car/log.hpp"
#include "car/random.hpp"
#include "car/server.hpp"
#include "car/session/session_service.hpp"
#include "run_service_detail.hpp"

namespace car::runs {
namespace detail {

std::string trace_event_text(std::string_view run_id, std::string_view agent_id,
                             std::string_view record, std::uint64_t cursor, RunStatus status) {
  std::string text;
  text.reserve(128 + run_id.size() + agent_id.size() + record.size());
  text.append(R"({"jsonrpc":"2.0","method":"runs.trace.event","params":{"run_id":)");
  json::append_quoted(text, run_id);
  text.append(R"(,"agent_id":)");
  json::append_quoted(text, agent_id);
  text.append(R"(,"record":)");
  text.append(record);
  text.append(R"(,"cursor":)");
  text.append(std::to_string(cursor));
  text.append(R"(,"status":")");
  text.append(to_string(status));
  text.append("\"}}");
  return text;
}

}  // namespace detail

namespace {

void on_pool(Executor& executor, Executor::Task work) {
  executor.queue_work(std::move(work), [] {});
}

std::size_t utf8_length(std::string_view s) {
  std::size_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80 ? 1 : 0;
  return n;
}

void add_quoted(std::string& out, std::string_view key, std::string_view value) {
  json::append_quoted(out, key);
  out.push_back(':');
  json::append_quoted(out, value);
}

Error unknown_run(std::string_view run_id) {
  return {ErrorCode::invalid_params, fmt::format("unknown run '{}'", run_id)};
}

Error store_failed(std::string_view reason) {
  return Error::internal(fmt::format("store write failed: {}", reason));
}

Error not_authorized_run() { return Error::internal("not authorized for run"); }

std::string start_result(std::string_view run_id, std::string_view agent_id) {
  std::string out = "{";
  add_quoted(out, "run_id", run_id);
  out.push_back(',');
  add_quoted(out, "agent_id", agent_id);
  out.push_back('}');
  return out;
}

std::string turns_refusal(std::string_view run_id, std::string_view why) {
  std::string out = "{";
  add_quoted(out, "run_id", run_id);
  out.append(R"(,"base_index":0,"count":0,"ok":false,)");
  add_quoted(out, "dropped", why);
  out.push_back('}');
  return out;
}

// {run_id, agent_id, turns_so_far, cursor, status}
template <typename Records>
std::string snapshot_result(std::string_view run_id, std::string_view agent_id,
                            const Records& turns, std::uint64_t cursor, RunStatus status) {
  std::size_t size = 96 + run_id.size() + agent_id.size();
  for (const auto& t : turns) size += std::string_view(*t).size() + 1;
  std::string out;
  out.reserve(size);
  out.push_back('{');
  add_quoted(out, "run_id", run_id);
  out.push_back(',');
  add_quoted(out, "agent_id", agent_id);
  out.append(R"(,"turns_so_far":[)");
  bool first = true;
  for (const auto& t : turns) {
    if (!first) out.push_back(',');
    first = false;
    out.append(*t);
  }
  out.append(R"(],"cursor":)");
  out.append(std::to_string(cursor));
  out.append(R"(,"status":")");
  out.append(to_string(status));
  out.append("\"}");
  return out;
}

void append_summary(std::string& out, const RunSummary& s) {
  out.push_back('{');
  add_quoted(out, "run_id", s.run_id);
  out.push_back(',');
  add_quoted(out, "agent_id", s.agent_id);
  out.push_back(',');
  add_quoted(out, "intent", s.intent);
  out.push_back(',');
  add_quoted(out, "started_at", s.started_at);
  if (s.ended_at) {
    out.push_back(',');
    add_quoted(out, "ended_at", *s.ended_at);
  }
  out.push_back(',');
  add_quoted(out, "status", to_string(s.status));
  out.append(R"(,"turn_count":)");
  out.append(std::to_string(s.turn_count));
  out.push_back('}');
}

}  // namespace

// ---- runs.start ----

void RunService::start(const Request& request, Reply reply) {
  const json::Value& p = request.params();
  auto connection = request.connection_ptr();
  std::string intent(*param::string(p, "intent"));
  std::optional<std::string> outcome_description;
  if (auto d = param::string(p, "outcome_description")) outcome_description = std::string(*d);
  std::optional<std::string> key;
  if (auto k = param::string(p, "idempotency_key")) {
    std::size_t n = utf8_length(*k);
    if (n < 1 || n > 128) {
      reply.error(Error::invalid_params("idempotency_key", "must be 1 to 128 characters"));
      return;
    }
    key = std::string(*k);
  }
  // Agent id resolution order (PROTOCOL.md §7.2).
  std::string agent_id;
  if (auto a = param::string(p, "agent_id")) {
    agent_id = *a;
  } else if (auto bound = session::agent_id(request.session())) {
    agent_id = *bound;
  } else if (config_.default_agent_id && !config_.default_agent_id->empty()) {
    agent_id = *config_.default_agent_id;
  } else if (auto name = param::string(p, "agent_name")) {
    std::string slug = slugify(*name);
    if (!slug.empty()) agent_id = "name:" + slug;
  }
  if (agent_id.empty()) {
    reply.error(ErrorCode::invalid_params, "cannot resolve agent id");
    return;
  }
  if (!key) {
    create_run(std::move(connection), uuid_v4(), std::move(agent_id), std::move(intent),
               std::move(outcome_description), std::move(reply));
    return;
  }
  {
    std::unique_lock lock(mutex_);
    auto it = runs_.find(*key);
    if (it != runs_.end() && !it->second->removed) {
      bool same_agent = it->second->agent_id == agent_id;
      lock.unlock();
      if (same_agent) {
        reply.ok(start_result(*key, agent_id));
      } else {
        reply.error(ErrorCode::invalid_params, "idempotency key belongs to another agent");
      }
      return;
    }
  }
  // Not in memory: the store may still hold it (evicted, or from before a restart).
  on_pool(server_.executor(), [self = shared_from_this(), connection, key = std::move(*key),
                               agent_id = std::move(agent_id), intent = std::move(intent),
                               outcome_description = std::move(outcome_description),
                               reply]() mutable {
    if (auto found = self->store_->find(key)) {
      if (found->agent_id == agent_id) {
        reply.ok(start_result(key, agent_id));
      } else {
        reply.error(ErrorCode::invalid_params, "idempotency key belongs to another agent");
      }
      return;
    }
    self->create_run(std::move(connection), std::move(key), std::move(agent_id),
                     std::move(intent), std::move(outcome_description), std::move(reply));
  });
}

void RunService::create_run(std::shared_ptr<Connection> connection, std::string run_id,
                            std::string agent_id, std::string intent,
                            std::optional<std::string> outcome_description, Reply reply) {
  std::unique_lock lock(mutex_);
  if (shutting_down_) {
    lock.unlock();
    reply.error(Error::internal("server is shutting down"));
    return;
  }
  auto existing = runs_.find(run_id);
  if (existing != runs_.end() && !existing->second->removed) {
    // Another start with the same idempotency key won the race while we read the store.
    bool same_agent = existing->second->agent_id == agent_id;
    lock.unlock();
    if (same_agent) {
      reply.ok(start_result(run_id, agent_id));
    } else {
      reply.error(ErrorCode::invalid_params, "idempotency key belongs to another agent");
    }
    return;
  }
  auto run = std::make_shared<Run>();
  run->run_id = run_id;
  run->agent_id = agent_id;
  run->client_id = connection->client_id();
  run->intent = std::move(intent);
  run->started_at = next_timestamp_locked();
  StoreOp op;
  op.kind = StoreOp::Kind::started;
  op.records.push_back(make_started_record({run->run_id, run->agent_id, run->client_id,
                                            run->intent, outcome_description, run->started_at}));
  op.done = [reply, run_id, agent_id](std::optional<std::string> error) {
    if (error) {
      reply.error(store_failed(*error));
    } else {
      reply.ok(start_result(run_id, agent_id));
    }
  };
  // Registered now, before the reply: the writer's pipelined calls find it at once.
  runs_[run_id] = run;
  enqueue_locked(run, std::move(op));
  // A writer already gone (closed while we read the store) may have missed its teardown's
  // grace step: arm the window here (arming twice is a no-op).
  if (connection->closed()) arm_grace_locked(run);
}

// ---- runs.complete ----

void RunService::complete(const Request& request, Reply reply) {
  const json::Value& p = request.params();
  std::string run_id(*param::string(p, "run_id"));
  auto connection = request.connection_ptr();
  {
    std::unique_lock lock(mutex_);
    auto it = runs_.find(run_id);
    if (it != runs_.end() && !it->second->removed) {
      RunPtr run = it->second;
      if (!is_writer(*run, *connection)) {
        lock.unlock();
        reply.error(unknown_run(run_id));
        return;
      }
      if (run->terminal) {
        lock.unlock();
        reply.error(Error::internal(fmt::format("run '{}' already ended", run_id)));
        return;
      }
      end_locked(run, RunStatus::completed, json::stringify(*param::member(p, "outcome")),
                 [reply, run_id](std::optional<std::string> error) {
                   if (error) {
                     reply.error(store_failed(*error));
                     return;
                   }
                   std::string out = "{";
                   add_quoted(out, "run_id", run_id);
                   out.append(R"(,"ok":true})");
                   reply.ok(out);
                 });
      return;
    }
  }
  // Only the store can know it: such a run has ended (or its writer is gone), so it is terminal.
  on_pool(server_.executor(), [self = shared_from_this(), connection, run_id, reply] {
    if (!self->is_stored_writer(run_id, *connection)) {
      reply.error(unknown_run(run_id));
    } else {
      reply.error(Error::internal(fmt::format("run '{}' already ended", run_id)));
    }
  });
}

// ---- runs.record_turns ----

void RunService::record_turns(const Request& request, Reply reply) {
  const json::Value& p = request.params();
  std::string run_id(*param::string(p, "run_id"));
  const json::Value& turns = *param::member(p, "turns");
  if (turns.Empty()) {
    reply.error(Error::invalid_params("turns", "must be a non-empty array"));
    return;
  }
  if (turns.Size() > config_.max_turns_per_call) {
    reply.error(Error::invalid_params(
        "turns", fmt::format("must hold at most {} turns", config_.max_turns_per_call)));
    return;
  }
  for (rapidjson::SizeType i = 0; i < turns.Size(); ++i) {
    if (!turns[i].IsObject()) {
      reply.error(Error::invalid_params(fmt::format("turns[{}]", i), "must be an object"));
      return;
    }
  }
  auto connection = request.connection_ptr();
  // The costly part (truncation, serialization) before the lock; its verdict is reported in the
  // spec's order below, after existence, terminal and limit.
  std::vector<std::string> tails;
  tails.reserve(turns.Size());
  bool too_large = false;
  for (const auto& turn : turns.GetArray()) {
    auto tail = make_turn_tail(turn, config_.turn_limits);
    if (!tail) {
      too_large = true;
      break;
    }
    tails.push_back(std::move(*tail));
  }
  std::size_t count = turns.Size();
  {
    std::unique_lock lock(mutex_);
    auto it = runs_.find(run_id);
    if (it != runs_.end() && !it->second->removed) {
      RunPtr run = it->second;
      const char* dropped = nullptr;
      if (!is_writer(*run, *connection)) {
        dropped = "run_not_found";  // indistinguishable from a missing run
      } else if (run->terminal) {
        dropped = "run_terminal";
      } else if (run->reserved_turns + count > config_.max_turns_per_run) {
        dropped = "run_turn_limit";
      } else if (too_large) {
        dropped = "turn_too_large";
      }
      if (dropped != nullptr) {
        lock.unlock();
        reply.ok(turns_refusal(run_id, dropped));
        return;
      }
      std::uint64_t base = run->reserved_turns;
      run->reserved_turns += count;
      StoreOp op;
      op.kind = StoreOp::Kind::turns;
      op.base_index = base;
      op.records.reserve(count);
      for (std::size_t i = 0; i < count; ++i) op.records.push_back(stamp_turn(tails[i], base + i));
      op.done = [reply, run_id, base, count](std::optional<std::string> error) {
        if (error) {
          reply.error(store_failed(*error));
          return;
        }
        std::string out = "{";
        add_quoted(out, "run_id", run_id);
        out.append(fmt::format(R"(,"base_index":{},"count":{},"ok":true}})", base, count));
        reply.ok(out);
      };
      enqueue_locked(run, std::move(op));
      return;
    }
  }
  on_pool(server_.executor(), [self = shared_from_this(), connection, run_id, reply] {
    // Runs found only in the store are terminal; for a non-writer they do not exist.
    bool writer = self->is_stored_writer(run_id, *connection);
    reply.ok(turns_refusal(run_id, writer ? "run_terminal" : "run_not_found"));
  });
}

// ---- runs.subscribe / runs.unsubscribe ----

void RunService::subscribe(const Request& request, Reply reply) {
  std::string run_id(*param::string(request.params(), "run_id"));
  auto connection = request.connection_ptr();
  std::unique_lock lock(mutex_);
  auto it = runs_.find(run_id);
  if (it == runs_.end() || it->second->removed || it->second->status != RunStatus::in_progress) {
    // Unknown here, or ended: its whole trace is in the store.
    lock.unlock();
    subscribe_stored(std::move(connection), std::move(run_id), std::move(reply));
    return;
  }
  RunPtr run = it->second;
  if (!may_read(*connection, run->agent_id, run->client_id)) {
    lock.unlock();
    reply.error(not_authorized_run());
    return;
  }
  if (connection->closed()) {
    // Its teardown already removed its subscriptions: registering now would leak one.
    lock.unlock();
    reply.error(Error::internal("connection closed"));
    return;
  }
  // Snapshot and registration under the lock the recorder publishes under: every record is
  // either in the snapshot or delivered as an event, never both, never neither.
  std::vector<std::shared_ptr<const std::string>> snapshot = run->turns;
  std::uint64_t cursor = run->published_turns;
  auto subscriber = make_subscriber(connection, run_id, cursor);
  register_subscriber_locked(subscriber);
  std::string agent_id = run->agent_id;
  lock.unlock();
  // The reply is queued on the sink before the subscription may deliver anything.
  reply.ok(snapshot_result(run_id, agent_id, snapshot, cursor, RunStatus::in_progress),
           [subscriber] { subscriber->resume(); });
}

void RunService::subscribe_stored(std::shared_ptr<Connection> connection, std::string run_id,
                                  Reply reply) {
  on_pool(server_.executor(), [self = shared_from_this(), connection, run_id, reply] {
    auto trace = self->store_->read(run_id);
    if (!trace) {
      reply.error(unknown_run(run_id));
      return;
    }
    if (!self->may_read(*connection, trace->location.agent_id, trace->location.client_id)) {
      reply.error(not_authorized_run());
      return;
    }
    // Ended, or its writer is gone (crash): either way no event will follow.
    RunStatus status = trace->location.ended ? trace->summary.status : RunStatus::incomplete;
    std::vector<const std::string*> turns;
    for (const auto& r : trace->records) {
      if (record_kind(r) == "turn") turns.push_back(&r);
    }
    std::shared_ptr<TraceSubscriber> subscriber;
    {
      std::lock_guard lock(self->mutex_);
      if (!connection->closed()) {
        // Registered all the same, so unsubscribe and stats see it like any other.
        subscriber = self->make_subscriber(connection, run_id, turns.size());
        self->register_subscriber_locked(subscriber);
      }
    }
    reply.ok(snapshot_result(run_id, trace->location.agent_id, turns, turns.size(), status),
             [subscriber] {
               if (subscriber) subscriber->resume();
             });
  });
}

void RunService::unsubscribe(const Request& request, Reply reply) {
  std::string run_id(*param::string(request.params(), "run_id"));
  bool removed = false;
  {
    std::lock_guard lock(mutex_);
    removed = remove_subscriber_locked(run_id, request.connection().client_id());
  }
  std::string out = "{";
  add_quoted(out, "run_id", run_id);
  out.append(removed ? R"(,"removed":true})" : R"(,"removed":false})");
  reply.ok(out);
}

// ---- runs.list / runs.get_trace ----

void RunService::list(const Request& request, Reply reply) {
  std::string agent_id(*param::string(request.params(), "agent_id"));
  if (!may_read(request.connection(), agent_id, {})) {
    reply.error(Error::internal("not authorized for agent"));  // before any storage is read
    return;
  }
  on_pool(server_.executor(), [self = shared_from_this(), agent_id, reply] {
    auto runs = self->store_->list(agent_id);
    {
      std::lock_guard lock(self->mutex_);
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
    std::sort(runs.begin(), runs.end(), [](const RunSummary& a, const RunSummary& b) {
      if (a.started_at != b.started_at) return a.started_at > b.started_at;
      return a.run_id > b.run_id;
    });
    std::string out = "{";
    add_quoted(out, "agent_id", agent_id);
    out.append(R"(,"runs":[)");
    for (std::size_t i = 0; i < runs.size(); ++i) {
      if (i != 0) out.push_back(',');
      append_summary(out, runs[i]);
    }
    out.append("]}");
    reply.ok(out);
  });
}

void RunService::get_trace(const Request& request, Reply reply) {
  const json::Value& p = request.params();
  std::string run_id(*param::string(p, "run_id"));
  auto offset = static_cast<std::size_t>(param::integer(p, "cursor").value_or(0));
  auto connection = request.connection_ptr();
  on_pool(server_.executor(), [self = shared_from_this(), connection, run_id, offset, reply] {
    auto trace = self->store_->read(run_id);
    if (!trace) {
      std::string out = "{";
      add_quoted(out, "run_id", run_id);
      out.append(R"(,"not_found":true})");
      reply.ok(out);
      return;
    }
    if (!self->may_read(*connection, trace->location.agent_id, trace->location.client_id)) {
      reply.error(not_authorized_run());
      return;
    }
    std::string out = "{";
    add_quoted(out, "run_id", run_id);
    out.push_back(',');
    add_quoted(out, "agent_id", trace->location.agent_id);
    out.append(R"(,"records":[)");
    std::size_t i = offset;
    std::size_t bytes = 0;
    for (; i < trace->records.size(); ++i) {
      const std::string& r = trace->records[i];
      if (i != offset && bytes + r.size() > self->config_.max_trace_page_bytes) break;
      if (i != offset) out.push_back(',');
      out.append(r);
      bytes += r.size() + 1;
    }
    out.append(R"(],"cursor":)");
    out.append(std::to_string(offset));
    if (i < trace->records.size()) {
      out.append(R"(,"next_cursor":)");
      out.append(std::to_string(i));
    }
    out.push_back('}');
    reply.ok(out);
  });
}

// ---- runs.stats [ext] ----

void RunService::stats(const Request& request, Reply reply) {
  if (server_.config().require_auth && !session::is_host(request.session())) {
    reply.error(Error::internal("not authorized for stats"));
    return;
  }
  std::optional<std::string_view> filter;
  if (auto r = param::string(request.params(), "run_id"); r && !r->empty()) filter = *r;
  auto stats = subscriber_stats(filter);
  std::string out = R"({"subscribers":[)";
  for (std::size_t i = 0; i < stats.size(); ++i) {
    const auto& s = stats[i];
    if (i != 0) out.push_back(',');
    out.push_back('{');
    add_quoted(out, "run_id", s.run_id);
    out.push_back(',');
    add_quoted(out, "client_id", s.client_id);
    out.append(fmt::format(
        R"(,"queued":{},"dropped":{},"frames_written":{},"bytes_written":{},"last_write_us":{},)"
        R"("drain_passes":{},"events_drained":{}}})",
        s.queued, s.dropped, s.frames_written, s.bytes_written, s.last_write_us, s.drain_passes,
        s.events_drained));
  }
  // Service-wide fan-out counters (monotonic since start): a caller computes events per hop
  // from the difference of two readings.
  RunCounters c = counters();
  out.append(fmt::format(
      R"(],"fanout":{{"drain_hops":{},"drain_passes":{},"events_drained":{},"events_dropped":{},)"
      R"("gaps_sent":{},"events_published":{},"store_jobs":{}}}}})",
      c.drain_hops, c.drain_passes, c.events_drained, c.events_dropped, c.gaps_sent,
      c.events_published, c.store_jobs));
  reply.ok(out);
}

}  // namespace car::runs
