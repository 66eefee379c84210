#include "fleet_gateway.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <unistd.h>

#include "car/connection.hpp"
#include "car/fleet/fleet_json.hpp"
#include "car/json.hpp"
#include "car/log.hpp"
#include "car/nats/subjects.hpp"
#include "car/server.hpp"
#include "car/session/session_service.hpp"
#include "car/version.hpp"

namespace car::fleet::detail {

struct FleetGateway::Live {
  StoredTrace ids;  // host, agent and run ids only: what every event names
  std::string client_id;
  std::shared_ptr<StreamSubscriber> subscriber;
  std::unique_ptr<Consumer> consumer;  // subs_mutex_; null once the run ended (or it never ran)
  std::uint64_t next_offset = 0;       // the consumer's delivery thread only
};

namespace {

Error busy(std::size_t queued) {
  return Error(ErrorCode::server_busy,
               fmt::format("server busy: fleet gateway has {} reads queued", queued));
}

Error unknown_run(std::string_view run_id) {
  return Error(ErrorCode::invalid_params, fmt::format("unknown run '{}'", run_id));
}

Error not_authorized_run() { return Error::internal("not authorized for run"); }

}  // namespace

FleetGateway::FleetGateway(Server& server, FleetConfig config,
                           std::unique_ptr<JetStreamReader> reader)
    : server_(server),
      config_(std::move(config)),
      reader_(std::move(reader)),
      worker_(config_.max_queued_jobs),
      index_(config_.index) {}

FleetGateway::~FleetGateway() { shutdown(); }

// ---- the index ----

void FleetGateway::start_index() {
  std::weak_ptr<FleetGateway> weak = shared_from_this();
  worker_.post([weak] {
    if (auto self = weak.lock()) self->index_job();
  });
}

void FleetGateway::index_job() {
  std::weak_ptr<FleetGateway> weak = shared_from_this();
  bool logged = false;
  for (;;) {
    auto consumer = reader_->consume(reader_->all_runs_filter(), 0, [weak](StreamMessage m) {
      auto self = weak.lock();
      if (!self) return;
      FleetRecord record{m.host_id, m.agent_id, m.run_id, m.offset, m.sequence, m.stored_at_ns,
                         m.json};
      std::lock_guard lock(self->index_mutex_);
      self->index_.apply(record);
    });
    if (consumer) {
      index_consumer_ = std::move(consumer.value());
      log_info("fleet gateway: indexing stream {}", config_.stream);
      return;
    }
    // Most often the stream does not exist yet: no exporter has run. Retry, logging once.
    if (!logged) {
      log_warn("fleet gateway: {}; retrying every second", consumer.error().message);
      logged = true;
    }
    if (!worker_.pause(std::chrono::milliseconds(1000))) return;
  }
}

Result<std::optional<StoredTrace>> FleetGateway::fetch(const std::string& run_id,
                                                      const std::optional<std::string>& host_id) {
  trace_reads_.fetch_add(1, std::memory_order_relaxed);
  for (int attempt = 1;; ++attempt) {
    auto trace = reader_->fetch_run(run_id, host_id);
    // -32602 (a run on several hosts) is an answer, not a broker failure.
    if (trace || trace.error().code == static_cast<int>(ErrorCode::invalid_params)) return trace;
    read_errors_.fetch_add(1, std::memory_order_relaxed);
    if (attempt == 3 || !worker_.pause(std::chrono::milliseconds(300))) return trace;
    log_debug("fleet gateway: {} (attempt {}), retrying", trace.error().message, attempt);
  }
}

// ---- authorization (PROTOCOL.md §7.5, without the starter rule: no run starts here) ----

bool FleetGateway::may_read(const Connection& reader, std::string_view agent_id) const {
  if (!server_.config().require_auth) return true;
  const Session& session = reader.session();
  if (session::is_host(session)) return true;
  auto bound = session::agent_id(session);
  return bound && *bound == agent_id;
}

Result<std::optional<FleetRun>> FleetGateway::locate(
    const Connection& reader, const std::string& run_id,
    const std::optional<std::string>& host_id) const {
  std::vector<FleetRun> found;
  {
    std::lock_guard lock(index_mutex_);
    found = index_.find(run_id, host_id);
  }
  if (found.empty()) return std::optional<FleetRun>();
  if (found.size() > 1) {
    std::vector<std::string> hosts;
    for (const auto& run : found) hosts.push_back(run.host_id);
    return Error(ErrorCode::invalid_params,
                 fmt::format("run '{}' is on several hosts ({}): give host_id", run_id,
                             fmt::join(hosts, ", ")));
  }
  if (!may_read(reader, found.front().agent_id)) return not_authorized_run();
  return std::optional<FleetRun>(std::move(found.front()));
}

// ---- runs.list ----

void FleetGateway::list(const Connection& reader, std::string agent_id,
                        std::optional<std::string> host_id, std::optional<std::size_t> limit,
                        std::optional<std::string> before, Reply reply) {
  if (!may_read(reader, agent_id)) {
    reply.error(Error::internal("not authorized for agent"));
    return;
  }
  if (limit) *limit = std::min(*limit, config_.max_list_page);
  Result<FleetRunPage> page = [&] {
    std::lock_guard lock(index_mutex_);
    std::optional<std::string_view> before_view;
    if (before) before_view = *before;
    std::optional<std::string_view> host_view;
    if (host_id) host_view = *host_id;
    return index_.list(agent_id, host_view, limit, before_view);
  }();
  if (!page) {
    reply.error(page.error());
    return;
  }
  std::optional<std::string_view> host_view;
  if (host_id) host_view = *host_id;
  reply.ok(list_result(agent_id, host_view, page.value()));
}

// ---- runs.get_trace ----

void FleetGateway::get_trace(std::shared_ptr<Connection> reader, std::string run_id,
                             std::optional<std::string> host_id, std::size_t cursor,
                             Reply reply) {
  auto located = locate(*reader, run_id, host_id);
  if (!located) {
    reply.error(located.error());
    return;
  }
  // An indexed run is read on its own host; one the index does not hold (evicted, or not reached
  // yet) is looked for on every host (or the one asked for).
  if (located.value()) host_id = located.value()->host_id;
  std::weak_ptr<FleetGateway> weak = shared_from_this();
  bool queued = worker_.post([weak, reader, run_id, host_id, cursor, reply] {
    auto self = weak.lock();
    if (!self) return;
    auto trace = self->fetch(run_id, host_id);
    if (!trace) {
      reply.error(trace.error());
      return;
    }
    if (!trace.value()) {
      reply.ok(trace_not_found_result(run_id));
      return;
    }
    const StoredTrace& found = *trace.value();
    if (!self->may_read(*reader, found.agent_id)) {
      reply.error(not_authorized_run());
      return;
    }
    reply.ok(trace_page_result(found, page_of(found, cursor, self->config_.max_trace_page_bytes),
                               cursor));
  });
  if (!queued) reply.error(busy(worker_.queued()));
}

// ---- runs.subscribe / runs.unsubscribe ----

void FleetGateway::subscribe(std::shared_ptr<Connection> reader, std::string run_id,
                             std::optional<std::string> host_id, Reply reply) {
  auto located = locate(*reader, run_id, host_id);
  if (!located) {
    reply.error(located.error());
    return;
  }
  if (located.value()) host_id = located.value()->host_id;
  std::weak_ptr<FleetGateway> weak = shared_from_this();
  bool queued = worker_.post([weak, reader, run_id, host_id, reply]() mutable {
    if (auto self = weak.lock()) {
      self->subscribe_job(std::move(reader), std::move(run_id), std::move(host_id),
                          std::move(reply));
    }
  });
  if (!queued) reply.error(busy(worker_.queued()));
}

void FleetGateway::subscribe_job(std::shared_ptr<Connection> reader, std::string run_id,
                                 std::optional<std::string> host_id, Reply reply) {
  auto fetched = fetch(run_id, host_id);
  if (!fetched) {
    reply.error(fetched.error());
    return;
  }
  if (!fetched.value()) {
    reply.error(unknown_run(run_id));
    return;
  }
  const StoredTrace& trace = *fetched.value();
  if (!may_read(*reader, trace.agent_id)) {
    reply.error(not_authorized_run());
    return;
  }
  auto live = std::make_shared<Live>();
  live->ids.host_id = trace.host_id;
  live->ids.agent_id = trace.agent_id;
  live->ids.run_id = trace.run_id;
  live->client_id = reader->client_id();
  live->next_offset = trace.records.size();

  StreamSubscriber::Options options;
  options.capacity = config_.subscriber_queue;
  options.deadline = config_.drain_timeout;
  options.overflow = OverflowPolicy::drop_with_gap;
  std::weak_ptr<FleetGateway> weak = shared_from_this();
  std::weak_ptr<Connection> weak_connection = reader;
  auto gap_notice = [run_id](const StreamGap& gap) {
    return make_frame(trace_gap_text(run_id, gap.from, gap.to, gap.dropped));
  };
  live->subscriber = std::make_shared<StreamSubscriber>(
      server_.executor(), reader->sink_ptr(), trace.turn_count(), options, totals_,
      std::move(gap_notice),
      [weak, weak_connection, run_id, client_id = live->client_id](StreamSubscriber&, SinkError) {
        // A write failed or passed its deadline: as for local runs, the subscription ends and so
        // does the connection (PROTOCOL.md §7.4).
        if (auto self = weak.lock()) self->unsubscribe(run_id, client_id);
        if (auto c = weak_connection.lock()) {
          c->server().executor().post([weak_connection] {
            if (auto conn = weak_connection.lock()) conn->end();
          });
        }
      });

  if (!trace.ended) {
    {
      std::lock_guard lock(subs_mutex_);
      if (live_consumers_ >= config_.max_live_subscriptions) {
        reply.error(Error(ErrorCode::server_busy,
                          fmt::format("server busy: fleet gateway has {} live subscriptions",
                                      live_consumers_)));
        return;
      }
    }
    std::string subject = car::nats::run_subject(reader_->options().prefix, trace.host_id,
                                                 trace.agent_id, trace.run_id);
    auto start_consumer = [&] {
      // 16 MiB: a live consumer's callback only queues (StreamSubscriber), so little waits here;
      // 1024 of them stay within 16 GiB at worst rather than the index consumer's 256 MiB each.
      return reader_->consume(
          subject, trace.last_sequence + 1,
          [weak, live](StreamMessage m) {
            if (auto self = weak.lock()) self->on_live_message(live, std::move(m));
          },
          16 * 1024 * 1024);
    };
    auto consumer = start_consumer();
    // As for reads: a fail-over refuses consumer creation for a moment.
    for (int attempt = 1; !consumer && attempt < 3; ++attempt) {
      read_errors_.fetch_add(1, std::memory_order_relaxed);
      if (!worker_.pause(std::chrono::milliseconds(300))) break;
      consumer = start_consumer();
    }
    if (!consumer) {
      reply.error(consumer.error());
      return;
    }
    live->consumer = std::move(consumer.value());
  }

  std::vector<std::unique_ptr<Consumer>> retired;
  bool registered = false;
  {
    std::lock_guard lock(subs_mutex_);
    // Registered only while the connection is open: its teardown (which takes this lock after
    // marking the session closed) then removes it; a closed one would leak it.
    if (!reader->closed() && !shut_down_) {
      auto& runs = subs_[live->client_id];
      if (auto old = runs.find(run_id); old != runs.end()) remove_locked(runs, old, retired);
      runs.emplace(run_id, live);
      if (live->consumer) ++live_consumers_;
      registered = true;
    }
  }
  for (auto& c : retired) retire(std::move(c));
  if (!registered) {
    live->subscriber->stop();
    if (live->consumer) live->consumer->stop();  // on the worker already
    reply.error(Error::internal("connection closed"));
    return;
  }
  TraceSnapshot snapshot = snapshot_of(trace, config_.max_snapshot_bytes);
  reply.ok(snapshot_result(trace, snapshot), [subscriber = live->subscriber] { subscriber->resume(); });
}

void FleetGateway::on_live_message(const std::shared_ptr<Live>& live, StreamMessage message) {
  // libnats' delivery thread, one message at a time for this consumer.
  if (message.offset < live->next_offset) return;  // already in the snapshot, or a duplicate
  live->next_offset = message.offset + 1;
  std::string_view kind = runs::record_kind(message.json);
  std::uint64_t cursor = event_cursor(kind, message.offset);
  runs::RunStatus status = status_after(message.json);
  live->subscriber->push(
      {make_frame(trace_event_text(live->ids, message.json, cursor, status)), cursor});
  live_events_.fetch_add(1, std::memory_order_relaxed);
  if (kind == "ended") {
    // Nothing follows an ending: free the consumer (the subscription stays, as locally).
    std::unique_ptr<Consumer> consumer;
    {
      std::lock_guard lock(subs_mutex_);
      if (live->consumer) {
        consumer = std::move(live->consumer);
        --live_consumers_;
      }
    }
    if (consumer) retire(std::move(consumer));
  }
}

void FleetGateway::remove_locked(std::map<std::string, std::shared_ptr<Live>>& runs,
                                 std::map<std::string, std::shared_ptr<Live>>::iterator it,
                                 std::vector<std::unique_ptr<Consumer>>& retired) {
  it->second->subscriber->stop();
  if (it->second->consumer) {
    retired.push_back(std::move(it->second->consumer));
    --live_consumers_;
  }
  runs.erase(it);
}

bool FleetGateway::unsubscribe(const std::string& run_id, const std::string& client_id) {
  std::vector<std::unique_ptr<Consumer>> retired;
  bool removed = false;
  {
    std::lock_guard lock(subs_mutex_);
    auto c = subs_.find(client_id);
    if (c != subs_.end()) {
      auto it = c->second.find(run_id);
      if (it != c->second.end()) {
        remove_locked(c->second, it, retired);
        removed = true;
      }
      if (c->second.empty()) subs_.erase(c);
    }
  }
  for (auto& consumer : retired) retire(std::move(consumer));
  return removed;
}

void FleetGateway::remove_client(const std::string& client_id) {
  std::vector<std::unique_ptr<Consumer>> retired;
  {
    std::lock_guard lock(subs_mutex_);
    auto c = subs_.find(client_id);
    if (c == subs_.end()) return;
    while (!c->second.empty()) remove_locked(c->second, c->second.begin(), retired);
    subs_.erase(c);
  }
  for (auto& consumer : retired) retire(std::move(consumer));
}

void FleetGateway::retire(std::unique_ptr<Consumer> consumer) {
  {
    std::lock_guard lock(subs_mutex_);
    // After shutdown no consumer is left to retire (shutdown took them all); one arriving anyway
    // is stopped by its destructor here.
    if (shut_down_) return;
    retired_.push_back(std::move(consumer));
  }
  // If the queue is full the next stop_retired (after any job) takes it along.
  std::weak_ptr<FleetGateway> weak = weak_from_this();
  worker_.post([weak] {
    if (auto self = weak.lock()) self->stop_retired();
  });
}

void FleetGateway::stop_retired() {
  std::vector<std::unique_ptr<Consumer>> batch;
  {
    std::lock_guard lock(subs_mutex_);
    batch.swap(retired_);
  }
  for (auto& consumer : batch) consumer->stop();
}

// ---- fleet.hosts, host.subscribe, runs.stats ----

std::string FleetGateway::hosts_json() const {
  std::lock_guard lock(index_mutex_);
  auto hosts = index_.hosts();
  return hosts_result(hosts, index_.run_count(), index_.runs_evicted(), config_.index.max_runs);
}

std::string FleetGateway::host_snapshot_json() const {
  std::vector<std::pair<std::string, bool>> agents;
  {
    std::lock_guard lock(index_mutex_);
    agents = index_.agents();
  }
  return host_snapshot_result(agents, version_string, static_cast<long long>(::getpid()));
}

FleetStats FleetGateway::stats() const {
  FleetStats out;
  {
    std::lock_guard lock(index_mutex_);
    out.records_indexed = index_.records_applied();
    out.runs_indexed = index_.run_count();
    out.runs_evicted = index_.runs_evicted();
  }
  {
    std::lock_guard lock(subs_mutex_);
    out.live_subscriptions = live_consumers_;
  }
  out.trace_reads = trace_reads_.load(std::memory_order_relaxed);
  out.read_errors = read_errors_.load(std::memory_order_relaxed);
  out.live_events = live_events_.load(std::memory_order_relaxed);
  out.queued_jobs = worker_.queued();
  {
    std::lock_guard lock(reader_mutex_);
    out.connected = reader_ && reader_->connected();
    if (out.connected) out.server = reader_->connected_url();
  }
  return out;
}

std::string FleetGateway::stats_json() const {
  struct Listed {
    std::string run_id;
    std::string client_id;
    std::shared_ptr<StreamSubscriber> subscriber;
  };
  std::vector<Listed> listed;
  {
    std::lock_guard lock(subs_mutex_);
    for (const auto& [client, runs] : subs_) {
      for (const auto& [run_id, live] : runs) listed.push_back({run_id, client, live->subscriber});
    }
  }
  FleetStats s = stats();
  json::Builder b;
  auto u64 = [&b](std::string_view key, std::uint64_t value) { b.key(key).w().Uint64(value); };
  b.begin_object();
  b.key("subscribers").begin_array();
  for (const auto& l : listed) {
    StreamStats st = l.subscriber->stats();
    b.begin_object();
    b.key("run_id").str(l.run_id);
    b.key("client_id").str(l.client_id);
    u64("queued", st.queued);
    u64("dropped", st.dropped);
    u64("frames_written", st.frames_written);
    u64("bytes_written", st.bytes_written);
    u64("last_write_us", st.last_write_us);
    u64("drain_passes", st.drain_passes);
    u64("events_drained", st.events_drained);
    b.end_object();
  }
  b.end_array();
  b.key("fanout").begin_object();
  u64("drain_hops", totals_->drain_hops.load(std::memory_order_relaxed));
  u64("drain_passes", totals_->drain_passes.load(std::memory_order_relaxed));
  u64("events_drained", totals_->events_drained.load(std::memory_order_relaxed));
  u64("events_dropped", totals_->events_dropped.load(std::memory_order_relaxed));
  u64("gaps_sent", totals_->gaps_sent.load(std::memory_order_relaxed));
  u64("events_published", s.live_events);
  u64("store_jobs", 0);
  b.end_object();
  b.key("exporters").begin_array().end_array();
  b.key("gateway").begin_object();
  u64("records_indexed", s.records_indexed);
  u64("runs_indexed", s.runs_indexed);
  u64("runs_evicted", s.runs_evicted);
  u64("trace_reads", s.trace_reads);
  u64("read_errors", s.read_errors);
  u64("live_events", s.live_events);
  u64("live_subscriptions", s.live_subscriptions);
  u64("queued_jobs", s.queued_jobs);
  b.key("connected").boolean(s.connected);
  b.key("server").str(s.server);
  b.end_object();
  b.end_object();
  return b.take();
}

// ---- shutdown ----

void FleetGateway::shutdown() {
  std::vector<std::unique_ptr<Consumer>> consumers;
  std::vector<std::shared_ptr<StreamSubscriber>> subscribers;
  {
    std::lock_guard lock(subs_mutex_);
    if (shut_down_) return;
    shut_down_ = true;
    for (auto& [client, runs] : subs_) {
      for (auto& [run_id, live] : runs) {
        subscribers.push_back(live->subscriber);
        if (live->consumer) consumers.push_back(std::move(live->consumer));
      }
    }
    subs_.clear();
    live_consumers_ = 0;
    for (auto& c : retired_) consumers.push_back(std::move(c));
    retired_.clear();
  }
  worker_.stop();  // the job in progress finishes (bounded by request_timeout); the rest is dropped
  for (auto& s : subscribers) s->stop();
  for (auto& c : consumers) c->stop();
  index_consumer_.reset();
  std::unique_ptr<JetStreamReader> reader;
  {
    std::lock_guard lock(reader_mutex_);
    reader = std::move(reader_);
  }
  reader.reset();  // closes the NATS connection
}

}  // namespace car::fleet::detail
