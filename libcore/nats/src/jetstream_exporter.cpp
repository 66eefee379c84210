#include "car/nats/jetstream_exporter.hpp"

#include <fmt/format.h>
#include <nats/nats.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <system_error>

#include "car/log.hpp"
#include "car/nats/subjects.hpp"
#include "export_cursors.hpp"

namespace car::nats {
namespace {

using std::chrono::milliseconds;

constexpr std::size_t max_pending_events = 1024;  // host events kept while unacknowledged
constexpr std::size_t max_replay_per_idle = 4096;  // records re-read per idle call
constexpr std::size_t records_per_round = 512;     // publishes awaited together
constexpr const char* msg_id_header = "Nats-Msg-Id";
constexpr int64_t connect_timeout_ms = 2000;  // per server and attempt

// One message to publish.
struct Item {
  std::string subject;
  std::string msg_id;
  std::string run_id;  // empty for a host event
  std::string agent_id;
  std::uint64_t offset = 0;
  bool host_event = false;
  bool ends_run = false;
  std::shared_ptr<const std::string> json;
};

bool is_ended_record(const std::string& json) {
  static constexpr std::string_view tag = R"({"record":"ended")";
  return json.compare(0, tag.size(), tag) == 0;
}

std::string random_boot_id() {
  std::random_device rd;
  std::uint64_t high = (static_cast<std::uint64_t>(rd()) << 32) | rd();
  auto now = std::chrono::system_clock::now().time_since_epoch().count();
  return fmt::format("{:016x}", high ^ static_cast<std::uint64_t>(now));
}

std::string status_text(natsStatus s) {
  const char* last = nats_GetLastError(nullptr);
  return fmt::format("{}{}{}", natsStatus_GetText(s), last && *last ? ": " : "",
                     last ? last : "");
}

// Per run, the state of a run the exporter has seen and not finished.
struct RunState {
  std::string agent_id;
  std::string subject;          // run_subject(), once known
  std::uint64_t known_end = 0;  // one past the highest offset offered or read
  bool dirty = false;           // records from the cursor on must be read back from the store
};

class NatsJetStreamExporter final : public JetStreamExporter {
 public:
  explicit NatsJetStreamExporter(JetStreamConfig config)
      : config_(std::move(config)),
        boot_id_(random_boot_id()),
        cursors_(config_.cursor_dir),
        backoff_(config_.backoff_min) {}

  ~NatsJetStreamExporter() override {
    stop();
    cursors_.flush();  // the delivery thread is gone: no call of ours runs any more
    drop_connection();
    if (opts_ != nullptr) natsOptions_Destroy(opts_);
  }

  std::string name() const override { return "nats"; }

  void start(runs::RecordReplay& replay) override {
    (void)replay;
    for (const auto& [run_id, next] : cursors_.load()) {
      RunState& run = runs_[run_id];
      run.known_end = next;
      run.dirty = true;
    }
    if (!runs_.empty()) {
      log_info("nats exporter: resuming {} run(s) from their export cursors", runs_.size());
    }
    update_pending();
    if (auto error = make_options()) {
      set_error(*error);
      return;
    }
    ensure_connected();
  }

  std::optional<std::string> deliver(std::span<const runs::ExportRecord> batch,
                                     runs::RecordReplay& replay) override {
    (void)replay;
    std::vector<Item> items;
    items.reserve(batch.size());
    std::map<std::string, std::uint64_t, std::less<>> expect;  // per run: next offset in `items`
    for (const runs::ExportRecord& r : batch) {
      if (r.source == runs::ExportSource::host_event) {
        Item item = host_event_item(r);
        if (!pending_events_.empty()) {
          queue_event(std::move(item));  // behind older unacknowledged ones, in order
        } else {
          items.push_back(std::move(item));
        }
        continue;
      }
      auto next = cursors_.next(r.run_id);
      RunState& run = runs_[r.run_id];
      run.known_end = std::max(run.known_end, r.offset + 1);
      if (next && r.offset < *next) continue;  // acknowledged before (a restart, a replay)
      if (!next) {
        if (auto error = cursors_.set(r.run_id, r.offset)) set_error(*error);
        next = r.offset;
      }
      // A dirty run is read back from the store from its cursor; so is one whose record at the
      // cursor (or right after its last one in this batch) this exporter never saw.
      auto expected = expect.find(r.run_id);
      std::uint64_t want = expected != expect.end() ? expected->second : *next;
      if (run.dirty || r.offset != want) {
        run.dirty = true;
        continue;
      }
      items.push_back(run_item(r));
      expect[r.run_id] = r.offset + 1;
    }
    std::optional<std::string> error;
    if (!items.empty()) error = publish(std::move(items));
    update_pending();
    return error;
  }

  std::optional<milliseconds> idle(runs::RecordReplay& replay) override {
    if (stopped_.load()) return std::nullopt;
    bool any = !pending_events_.empty() ||
               std::any_of(runs_.begin(), runs_.end(), [](const auto& r) { return r.second.dirty; });
    if (!any) return std::nullopt;
    if (!ensure_connected()) return backoff_;
    bool progress = retry(replay);
    update_pending();
    if (progress) {
      backoff_ = config_.backoff_min;
      return milliseconds(0);
    }
    milliseconds wait = backoff_;
    backoff_ = std::min(backoff_ * 2, config_.backoff_max);
    return wait;
  }

  std::optional<runs::ExporterStatus> status() const override {
    runs::ExporterStatus s;
    s.connected = connected_.load();
    s.pending = pending_.load();
    std::lock_guard lock(mutex_);
    s.last_error = last_error_;
    return s;
  }

  void stop() override {
    stopped_.store(true);
    wake_.notify_all();
  }

 private:
  // ---- connection ----

  // Reconnecting is ours, not libnats': with libnats' automatic reconnect, publishes buffered in
  // the client when a connection broke are sent on the next one, after records of their run that
  // were lost with the old one — out of order. A connection here is never reused after it broke:
  // what the broker stored of a round is a prefix of what was sent on one connection (TCP keeps
  // order), so republishing from the first unacknowledged record restores order, and the message
  // ids make the republished prefix a no-op.
  std::optional<std::string> make_options() {
    std::string urls;
    std::vector<const char*> servers;
    for (const auto& u : config_.servers) {
      urls += (urls.empty() ? "" : ",") + u;
      servers.push_back(u.c_str());
    }
    natsStatus s = natsOptions_Create(&opts_);
    if (s == NATS_OK) {
      s = natsOptions_SetServers(opts_, servers.data(), static_cast<int>(servers.size()));
    }
    if (s == NATS_OK) {
      s = natsOptions_SetName(opts_, fmt::format("car-daemon {}", config_.host_id).c_str());
    }
    if (s == NATS_OK) s = natsOptions_SetAllowReconnect(opts_, false);
    if (s == NATS_OK) s = natsOptions_SetTimeout(opts_, connect_timeout_ms);
    if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(opts_, &on_disconnected, this);
    if (s == NATS_OK) s = natsOptions_SetClosedCB(opts_, &on_closed, this);
    if (s != NATS_OK) return fmt::format("nats options: {}", status_text(s));
    urls_ = urls;
    return std::nullopt;
  }

  // True with a live connection; otherwise, once the backoff allows, one connection attempt (to
  // each server of the list; bounded by connect_timeout_ms each).
  bool ensure_connected() {
    if (opts_ == nullptr || stopped_.load()) return false;
    if (nc_ != nullptr && natsConnection_Status(nc_) == NATS_CONN_STATUS_CONNECTED) return true;
    auto now = std::chrono::steady_clock::now();
    if (now < next_connect_at_) return false;
    drop_connection();
    {
      std::lock_guard lock(mutex_);
      closed_ = false;
      stream_ready_ = false;
    }
    natsConnection* nc = nullptr;
    natsStatus s = natsConnection_Connect(&nc, opts_);
    jsCtx* js = nullptr;
    if (s == NATS_OK) {
      jsOptions jo;
      jsOptions_Init(&jo);
      jo.Wait = config_.publish_timeout.count();
      jo.PublishAsync.MaxPending = static_cast<int64_t>(records_per_round * 2);
      jo.PublishAsync.AckHandler = &on_ack;
      jo.PublishAsync.AckHandlerClosure = this;
      s = natsConnection_JetStream(&js, nc, &jo);
    }
    if (s != NATS_OK) {
      std::string error = fmt::format("cannot connect to {}: {}", urls_, status_text(s));
      if (nc != nullptr) {
        nc_ = nc;
        drop_connection();
      }
      connect_failures_ += 1;
      std::int64_t delay = config_.backoff_min.count();
      for (std::uint64_t i = 1; i < connect_failures_ && delay < config_.backoff_max.count(); ++i) {
        delay *= 2;
      }
      next_connect_at_ = now + milliseconds(std::min<std::int64_t>(delay, config_.backoff_max.count()));
      if (connect_failures_ == 1 || connect_failures_ % 100 == 0) set_error(error);
      return false;
    }
    nc_ = nc;
    js_ = js;
    connect_failures_ = 0;
    connected_.store(true);
    connections_ += 1;
    log_info("nats exporter: connected to {}", urls_);
    return true;
  }

  // Closes and frees the connection, if any. libnats calls the closed callback on a thread of its
  // own: wait for it (bounded), after which no callback of that connection names `this`.
  void drop_connection() {
    if (js_ != nullptr) {
      jsCtx_Destroy(js_);
      js_ = nullptr;
    }
    if (nc_ == nullptr) return;
    natsConnection_Close(nc_);
    {
      std::unique_lock lock(mutex_);
      wake_.wait_for(lock, std::chrono::seconds(2), [&] { return closed_; });
    }
    natsConnection_Destroy(nc_);
    nc_ = nullptr;
    connected_.store(false);
  }

  // libnats' callbacks are C: nothing may be thrown through them (a log line's or a set's
  // allocation could), so each body is caught whole.
  static void on_disconnected(natsConnection*, void* closure) {
    auto* self = static_cast<NatsJetStreamExporter*>(closure);
    if (!self->connected_.exchange(false)) return;
    try {
      log_warn("nats exporter: disconnected from the broker");
    } catch (...) {
    }
  }

  static void on_closed(natsConnection*, void* closure) {
    auto* self = static_cast<NatsJetStreamExporter*>(closure);
    self->connected_.store(false);
    std::lock_guard lock(self->mutex_);
    self->closed_ = true;
    self->wake_.notify_all();
  }

  // Runs on libnats' thread for every publish of a round, acknowledged or failed.
  static void on_ack(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure) {
    auto* self = static_cast<NatsJetStreamExporter*>(closure);
    const char* id = nullptr;
    if (natsMsgHeader_Get(msg, msg_id_header, &id) == NATS_OK && id != nullptr) {
      std::lock_guard lock(self->mutex_);
      try {
        if (pa != nullptr) {
          self->acked_.insert(id);
        } else if (pae != nullptr && self->round_error_.empty()) {
          self->round_error_ = pae->ErrText != nullptr && *pae->ErrText
                                   ? std::string(pae->ErrText)
                                   : std::string(natsStatus_GetText(pae->Err));
          if (pae->Err == NATS_NO_RESPONDERS) self->stream_ready_ = false;
        }
      } catch (...) {
        // Out of memory: the ack goes unrecorded, so its record counts as unacknowledged and is
        // published again (its message id makes that a no-op for the broker).
      }
    }
    natsMsg_Destroy(msg);  // nobody waits on wake_ for acks: js_PublishAsyncComplete does
  }

  // ---- the stream ----

  std::optional<std::string> ensure_stream() {
    {
      std::lock_guard lock(mutex_);
      if (stream_ready_) return std::nullopt;
    }
    jsStreamInfo* si = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    natsStatus s = js_GetStreamInfo(&si, js_, config_.stream.c_str(), nullptr, &jerr);
    if (s == NATS_OK) {
      if (si->Config != nullptr && si->Config->Replicas != config_.replicas) {
        log_info("nats exporter: stream {} exists with {} replica(s), not {}: used as it is",
                 config_.stream, si->Config->Replicas, config_.replicas);
      }
      jsStreamInfo_Destroy(si);
    } else if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
      std::string runs = fmt::format("{}.runs.>", config_.prefix);
      std::string host = fmt::format("{}.host.>", config_.prefix);
      const char* subjects[] = {runs.c_str(), host.c_str()};
      jsStreamConfig sc;
      jsStreamConfig_Init(&sc);
      sc.Name = config_.stream.c_str();
      sc.Subjects = subjects;
      sc.SubjectsLen = 2;
      sc.Storage = js_FileStorage;
      sc.Retention = js_LimitsPolicy;
      sc.Replicas = config_.replicas;
      sc.MaxBytes = config_.max_bytes;
      sc.MaxMsgs = config_.max_messages;
      sc.MaxAge = std::chrono::nanoseconds(config_.max_age).count();
      sc.Duplicates = std::chrono::nanoseconds(config_.duplicate_window).count();
      s = js_AddStream(&si, js_, &sc, nullptr, &jerr);
      if (s != NATS_OK && jerr != JSStreamNameExistErr) {
        return fmt::format("cannot create stream {}: {}", config_.stream, status_text(s));
      }
      if (si != nullptr) jsStreamInfo_Destroy(si);
      log_info("nats exporter: created stream {} ({} replica(s))", config_.stream,
               config_.replicas);
    } else {
      return fmt::format("stream {}: {}", config_.stream, status_text(s));
    }
    std::lock_guard lock(mutex_);
    stream_ready_ = true;
    return std::nullopt;
  }

  // ---- publishing ----

  Item run_item(const runs::ExportRecord& r) {
    Item item;
    // The subject is the same for every record of a run: encoded once per run.
    RunState& run = runs_[r.run_id];
    if (run.subject.empty() || run.agent_id != r.agent_id) {
      run.agent_id = r.agent_id;
      run.subject = run_subject(config_.prefix, config_.host_id, r.agent_id, r.run_id);
    }
    item.subject = run.subject;
    item.msg_id = record_message_id(config_.host_id, r.run_id, r.offset);
    item.run_id = r.run_id;
    item.agent_id = r.agent_id;
    item.offset = r.offset;
    item.ends_run = r.json && is_ended_record(*r.json);
    item.json = r.json;
    return item;
  }

  Item host_event_item(const runs::ExportRecord& r) const {
    Item item;
    item.subject = host_events_subject(config_.prefix, config_.host_id);
    item.msg_id = host_event_message_id(config_.host_id, boot_id_, r.offset);
    item.offset = r.offset;
    item.host_event = true;
    item.json = r.json;
    return item;
  }

  void queue_event(Item item) {
    if (pending_events_.size() < max_pending_events) {
      pending_events_.push_back(std::move(item));
      return;
    }
    events_lost_ += 1;
    if (events_lost_ == 1 || events_lost_ % 1000 == 0) {
      set_error(fmt::format("{} host event(s) lost while the broker did not acknowledge",
                            events_lost_));
    }
  }

  // Publishes `items` (per run in offset order, each run's first at its cursor) in rounds;
  // advances the cursors over what was acknowledged; a run with records left unacknowledged
  // becomes dirty, host events left over wait in pending_events_. Returns the first failure.
  std::optional<std::string> publish(std::vector<Item> items) {
    std::optional<std::string> failure;
    std::size_t start = 0;
    while (start < items.size()) {
      std::size_t end = std::min(items.size(), start + records_per_round);
      std::span<Item> round(items.data() + start, end - start);
      std::set<std::string> acked;
      auto error = publish_round(round, acked);
      settle(round, acked);
      start = end;
      if (error) {
        failure = std::move(error);
        // Later rounds would land behind the records this one left unacknowledged: their runs
        // are read back from the store from the cursors instead, their host events wait.
        for (std::size_t i = start; i < items.size(); ++i) {
          if (items[i].host_event) {
            queue_event(std::move(items[i]));
          } else {
            runs_[items[i].run_id].dirty = true;
          }
        }
        break;
      }
    }
    if (failure) {
      set_error(*failure);
    } else {
      clear_error();
    }
    return failure;
  }

  // Publishes one round and waits (bounded) for its acknowledgements; `acked` gets the ids.
  std::optional<std::string> publish_round(std::span<Item> round, std::set<std::string>& acked) {
    if (stopped_.load()) return std::string("stopped");
    if (!ensure_connected()) return std::string("not connected to the broker");
    if (auto error = ensure_stream()) return error;
    {
      std::lock_guard lock(mutex_);
      acked_.clear();
      round_error_.clear();
    }
    std::optional<std::string> error;
    std::size_t sent = 0;
    for (Item& item : round) {
      natsMsg* msg = nullptr;
      const std::string& body = *item.json;
      natsStatus s = natsMsg_Create(&msg, item.subject.c_str(), nullptr, body.data(),
                                    static_cast<int>(body.size()));
      if (s == NATS_OK) s = natsMsgHeader_Set(msg, msg_id_header, item.msg_id.c_str());
      if (s == NATS_OK) s = natsMsgHeader_Set(msg, header_host, config_.host_id.c_str());
      if (s == NATS_OK && !item.host_event) {
        s = natsMsgHeader_Set(msg, header_agent, item.agent_id.c_str());
        if (s == NATS_OK) s = natsMsgHeader_Set(msg, header_run, item.run_id.c_str());
      }
      if (s == NATS_OK) {
        s = natsMsgHeader_Set(msg, header_offset, fmt::format("{}", item.offset).c_str());
      }
      if (s == NATS_OK) s = js_PublishMsgAsync(js_, &msg, nullptr);
      natsMsg_Destroy(msg);  // null once the library took it
      if (s != NATS_OK) {
        error = fmt::format("publish to {}: {}", item.subject, status_text(s));
        break;  // the rest of the round would only fail the same way, or land out of order
      }
      ++sent;
    }
    // Wait for the acknowledgements in slices, so stop() is noticed promptly.
    auto deadline = std::chrono::steady_clock::now() + config_.publish_timeout;
    while (sent > 0) {
      jsPubOptions po;
      jsPubOptions_Init(&po);
      po.MaxWait = 100;
      natsStatus s = js_PublishAsyncComplete(js_, &po);
      if (s == NATS_OK) break;
      bool broken = !connected_.load();  // acks of a broken connection never come
      if (broken || stopped_.load() || std::chrono::steady_clock::now() >= deadline) {
        natsMsgList unacked{};
        if (js_PublishAsyncGetPendingList(&unacked, js_) == NATS_OK) natsMsgList_Destroy(&unacked);
        if (!error) {
          error = stopped_.load() ? "stopped"
                  : broken        ? "connection lost before the acknowledgements"
                                  : "acknowledgements timed out";
        }
        break;
      }
    }
    std::lock_guard lock(mutex_);
    acked.swap(acked_);
    if (!error && acked.size() < sent) {
      error = round_error_.empty() ? std::string("publish not acknowledged") : round_error_;
    }
    return error;
  }

  // After a round: per run, the acknowledged prefix advances its cursor (a run whose `ended` is
  // acknowledged is finished); the rest makes the run dirty. Host events left over are kept.
  void settle(std::span<Item> round, const std::set<std::string>& acked) {
    std::set<std::string> broken;  // runs with an unacknowledged record in this round
    std::map<std::string, std::uint64_t> advanced;  // run -> next offset, written once per round
    std::deque<Item> events_left;
    bool events_broken = false;
    for (Item& item : round) {
      bool ok = acked.count(item.msg_id) != 0;
      if (item.host_event) {
        if (ok && !events_broken) continue;
        events_broken = true;
        events_left.push_back(std::move(item));
        continue;
      }
      if (broken.count(item.run_id) != 0) continue;
      if (!ok) {
        broken.insert(item.run_id);
        runs_[item.run_id].dirty = true;
        continue;
      }
      if (item.ends_run) {
        advanced.erase(item.run_id);
        cursors_.finish(item.run_id);
        runs_.erase(item.run_id);
      } else {
        advanced[item.run_id] = item.offset + 1;
      }
    }
    for (const auto& [run_id, next] : advanced) {
      if (auto error = cursors_.set(run_id, next)) set_error(*error);
    }
    for (auto it = events_left.rbegin(); it != events_left.rend(); ++it) {
      if (pending_events_.size() < max_pending_events) {
        pending_events_.push_front(std::move(*it));
      } else {
        queue_event(std::move(*it));  // counts it lost
      }
    }
  }

  // An idle call: host events kept, then dirty runs read back from their cursors. True when
  // something was acknowledged.
  bool retry(runs::RecordReplay& replay) {
    bool progress = false;
    if (!pending_events_.empty()) {
      std::vector<Item> items(std::make_move_iterator(pending_events_.begin()),
                              std::make_move_iterator(pending_events_.end()));
      pending_events_.clear();
      std::size_t before = items.size();
      publish(std::move(items));
      if (pending_events_.size() < before) progress = true;
      if (!pending_events_.empty()) return progress;
    }
    std::size_t budget = max_replay_per_idle;
    std::vector<std::string> dirty;
    for (const auto& [run_id, run] : runs_) {
      if (run.dirty) dirty.push_back(run_id);
    }
    for (const std::string& run_id : dirty) {
      if (budget == 0 || stopped_.load()) break;
      auto next = cursors_.next(run_id);
      std::uint64_t from = next.value_or(0);
      auto records = replay.replay_run(run_id, from);
      if (!records) {
        log_warn("nats exporter: cannot read run {} back from the store: {}", run_id,
                 records.error().message);
        if (records.error().code == static_cast<int>(ErrorCode::invalid_params)) {
          cursors_.finish(run_id);  // the store no longer has it: nothing left to export
          runs_.erase(run_id);
        }
        continue;
      }
      RunState& run = runs_[run_id];
      run.dirty = false;  // publish() marks it again if a record stays unacknowledged
      std::vector<Item> items;
      for (const runs::ExportRecord& r : records.value()) {
        if (items.size() == budget) {
          run.dirty = true;  // the rest next time
          break;
        }
        run.known_end = std::max(run.known_end, r.offset + 1);
        items.push_back(run_item(r));
      }
      if (items.empty()) continue;
      budget -= items.size();
      std::uint64_t before = cursors_.next(run_id).value_or(0);
      bool failed = publish(std::move(items)).has_value();
      auto after = cursors_.next(run_id);
      if (!after || *after > before) progress = true;
      if (failed) break;  // the broker is not answering: back off
    }
    return progress;
  }

  void update_pending() {
    std::uint64_t pending = pending_events_.size();
    for (const auto& [run_id, run] : runs_) {
      if (!run.dirty) continue;
      std::uint64_t next = cursors_.next(run_id).value_or(0);
      pending += run.known_end > next ? run.known_end - next : 0;
    }
    pending_.store(pending);
  }

  void set_error(const std::string& error) {
    std::lock_guard lock(mutex_);
    if (error != last_error_) log_warn("nats exporter: {}", error);
    last_error_ = error;
  }

  void clear_error() {
    std::lock_guard lock(mutex_);
    last_error_.clear();
  }

  const JetStreamConfig config_;
  const std::string boot_id_;

  // Delivery thread only.
  detail::ExportCursors cursors_;
  std::map<std::string, RunState> runs_;  // bounded: runs with a cursor (not finished)
  std::deque<Item> pending_events_;       // bounded: max_pending_events
  std::uint64_t events_lost_ = 0;
  milliseconds backoff_;
  natsOptions* opts_ = nullptr;
  std::string urls_;
  std::chrono::steady_clock::time_point next_connect_at_{};
  std::uint64_t connect_failures_ = 0;
  std::uint64_t connections_ = 0;
  natsConnection* nc_ = nullptr;
  jsCtx* js_ = nullptr;

  // Shared with libnats' threads and status().
  std::atomic<bool> connected_{false};
  std::atomic<bool> stopped_{false};
  std::atomic<std::uint64_t> pending_{0};
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool closed_ = false;
  bool stream_ready_ = false;
  std::set<std::string> acked_;  // bounded: one round's ids
  std::string round_error_;
  std::string last_error_;
};

}  // namespace

Result<std::shared_ptr<JetStreamExporter>> make_jetstream_exporter(JetStreamConfig config) {
  if (config.servers.empty()) return Error::invalid_params("servers", "must name a NATS URL");
  if (config.host_id.empty()) return Error::invalid_params("host_id", "must not be empty");
  if (config.replicas < 1 || config.replicas > 5) {
    return Error::invalid_params("replicas", "must be 1..5");
  }
  if (config.stream.empty() ||
      config.stream.find_first_of(" \t.*>") != std::string::npos) {
    return Error::invalid_params("stream", "must be a NATS stream name (no spaces, '.', '*', '>')");
  }
  if (config.cursor_dir.empty()) return Error::invalid_params("cursor_dir", "must not be empty");
  if (config.backoff_min.count() <= 0) config.backoff_min = milliseconds(1);
  if (config.backoff_max < config.backoff_min) config.backoff_max = config.backoff_min;
  std::error_code ec;
  std::filesystem::create_directories(config.cursor_dir, ec);
  if (ec) {
    return Error::internal(fmt::format("cannot create {}: {}", config.cursor_dir, ec.message()));
  }
  return std::shared_ptr<JetStreamExporter>(
      std::make_shared<NatsJetStreamExporter>(std::move(config)));
}

}  // namespace car::nats
