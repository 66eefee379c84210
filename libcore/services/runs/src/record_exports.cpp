#include "record_exports.hpp"

#include <fmt/format.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <thread>

#include "car/log.hpp"

namespace car::runs::detail {
namespace {

// RecordReplay over the service's RunStore.
class StoreReplay final : public RecordReplay {
 public:
  explicit StoreReplay(std::shared_ptr<RunStore> store) : store_(std::move(store)) {}

  Result<std::vector<ExportRecord>> replay_run(std::string_view run_id,
                                               std::uint64_t from_offset) override {
    std::optional<StoredTrace> trace;
    try {
      trace = store_->read(run_id);
    } catch (const std::exception& e) {
      return Error::internal(fmt::format("store read failed: {}", e.what()));
    }
    if (!trace) return Error{ErrorCode::invalid_params, fmt::format("unknown run '{}'", run_id)};
    std::vector<ExportRecord> out;
    for (std::size_t i = from_offset; i < trace->records.size(); ++i) {
      ExportRecord r;
      r.agent_id = trace->location.agent_id;
      r.run_id = trace->location.run_id;
      r.offset = i;
      r.json = std::make_shared<const std::string>(std::move(trace->records[i]));
      r.replayed = true;
      out.push_back(std::move(r));
    }
    return out;
  }

 private:
  std::shared_ptr<RunStore> store_;
};

}  // namespace

// One exporter: its queue, its thread, its counters, all guarded by mutex_.
class ExportWorker {
 public:
  ExportWorker(std::shared_ptr<RecordExporter> exporter, ExportOptions options,
               std::shared_ptr<RunStore> store)
      : exporter_(std::move(exporter)),
        options_(options),
        replay_(std::move(store)),
        name_(safe_name()) {
    stats_.name = name_;
    thread_ = std::thread([this] { run(); });
  }

  ~ExportWorker() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }

  void offer(ExportRecord record) {
    std::size_t size = record.json ? record.json->size() : 0;
    bool wake = false;
    {
      std::lock_guard lock(mutex_);
      stats_.offered += 1;
      if (stopping_) return;
      bool fits = queue_.empty() || (queue_.size() < options_.max_queued_records &&
                                     queued_bytes_ + size <= options_.max_queued_bytes);
      if (!behind_ && fits) {
        wake = queue_.empty();
        queued_bytes_ += size;
        queue_.push_back(std::move(record));
      } else {
        // Full: from now until the catch-up, nothing is queued (so the queue never holds a
        // record of a run after a hole in it); each run's missed offsets are one range, since
        // every later offer of the run is dropped too.
        if (!behind_) {
          behind_ = true;
          stats_.fell_behind += 1;
        }
        note_missed_locked(record);
      }
    }
    if (wake) wake_.notify_one();
  }

  ExporterStats stats() const {
    std::optional<ExporterStatus> status;
    try {
      status = exporter_->status();  // outside mutex_: the exporter may take locks of its own
    } catch (...) {
      status = ExporterStatus{false, 0, "status() threw"};
    }
    std::lock_guard lock(mutex_);
    ExporterStats out = stats_;
    out.queued = queue_.size();
    out.behind = behind_;
    std::uint64_t done = out.delivered + out.lost;
    out.lag = out.offered > done ? out.offered - done : 0;
    if (status) out.lag += status->pending;
    out.status = std::move(status);
    return out;
  }

 private:
  struct Missed {
    std::string agent_id;
    std::uint64_t first = 0;  // first offset dropped
    std::uint64_t end = 0;    // one past the last offset dropped
  };

  std::string safe_name() {
    try {
      return exporter_->name();
    } catch (...) {
      return "exporter";
    }
  }

  void note_missed_locked(const ExportRecord& record) {
    if (record.source == ExportSource::host_event) {
      stats_.lost += 1;  // no store to replay host events from
      return;
    }
    auto it = missed_.find(record.run_id);
    if (it != missed_.end()) {
      it->second.end = record.offset + 1;
    } else if (missed_.size() < options_.max_missed_runs) {
      missed_.emplace(record.run_id, Missed{record.agent_id, record.offset, record.offset + 1});
    } else {
      stats_.lost += 1;  // bound of the missed table (ExportOptions::max_missed_runs)
    }
  }

  // ExportOptions::delivery_nice. A failure (e.g. a seccomp filter) only costs the priority.
  void lower_priority() {
    if (options_.delivery_nice <= 0) return;
    auto tid = static_cast<id_t>(::syscall(SYS_gettid));
    errno = 0;
    int current = ::getpriority(PRIO_PROCESS, tid);  // -1 is a valid nice value: check errno
    if (errno != 0) return;
    if (::setpriority(PRIO_PROCESS, tid, std::min(current + options_.delivery_nice, 19)) != 0) {
      log_debug("exporter {}: could not lower the delivery thread's priority", name_);
    }
  }

  void run() {
    using Clock = std::chrono::steady_clock;
    lower_priority();
    guarded("start", [&] { exporter_->start(replay_); });
    // When the exporter's idle() is due (RecordExporter::idle): right after start, after every
    // deliver, then when it asks.
    bool idle_due = true;
    Clock::time_point idle_at = Clock::now();
    auto has_work = [&] { return stopping_ || !queue_.empty() || behind_; };
    std::unique_lock lock(mutex_);
    while (true) {
      if (idle_due) {
        wake_.wait_until(lock, idle_at, has_work);
      } else {
        wake_.wait(lock, has_work);
      }
      if (stopping_) return;
      // A due idle call goes first even with work queued, so an exporter's own retries are not
      // starved by a steady stream of records.
      if (idle_due && Clock::now() >= idle_at) {
        lock.unlock();
        std::optional<std::chrono::milliseconds> next;
        guarded("idle", [&] { next = exporter_->idle(replay_); });
        lock.lock();
        idle_due = next.has_value();
        if (next) idle_at = Clock::now() + *next;
        continue;
      }
      if (queue_.empty() && !behind_) continue;  // woken early, nothing to do yet
      if (!idle_due) {
        idle_due = true;
        idle_at = Clock::now();
      }
      if (!queue_.empty()) {
        if (options_.batch_delay.count() > 0 && queue_.size() < options_.max_batch) {
          // Not on wake_: offers meanwhile find no waiter to notify (see ExportOptions).
          lock.unlock();
          std::this_thread::sleep_for(options_.batch_delay);
          lock.lock();
          if (stopping_) return;
        }
        std::vector<ExportRecord> batch;
        while (!queue_.empty() && batch.size() < options_.max_batch) {
          queued_bytes_ -= queue_.front().json ? queue_.front().json->size() : 0;
          batch.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
        lock.unlock();
        deliver(batch, false);
        lock.lock();
        continue;
      }
      // Behind with an empty queue: every record dropped so far is in the store (a record is
      // offered only after its append). Leaving `behind` in the same critical section that takes
      // the missed ranges means each later offer is either queued (behind these ranges) or
      // dropped into a new range for the next catch-up — never both, never neither.
      std::map<std::string, Missed> missed;
      missed.swap(missed_);
      behind_ = false;
      lock.unlock();
      std::uint64_t lost = 0;
      for (auto& [run_id, range] : missed) lost += catch_up(run_id, range);
      lock.lock();
      stats_.lost += lost;
      stats_.caught_up += 1;
    }
  }

  // Delivers the stored records [range.first, range.end) of `run_id`; returns how many of them
  // the store no longer has.
  std::uint64_t catch_up(const std::string& run_id, const Missed& range) {
    std::uint64_t want = range.end - range.first;
    auto records = replay_.replay_run(run_id, range.first);
    if (!records) {
      log_warn("exporter {}: cannot catch up run {}: {}", name_, run_id, records.error().message);
      return want;
    }
    std::vector<ExportRecord>& all = records.value();
    if (all.size() > want) all.resize(want);  // the rest is queued or missed anew
    std::uint64_t found = all.size();
    std::vector<ExportRecord> batch;
    for (auto& r : all) {
      batch.push_back(std::move(r));
      if (batch.size() == options_.max_batch) {
        deliver(batch, true);
        batch.clear();
      }
    }
    if (!batch.empty()) deliver(batch, true);
    return want - found;
  }

  void deliver(std::span<const ExportRecord> batch, bool replayed) {
    std::optional<std::string> error;
    guarded("deliver", [&] { error = exporter_->deliver(batch, replay_); });
    if (error) count_error("deliver", *error);
    std::lock_guard lock(mutex_);
    stats_.delivered += batch.size();
    if (replayed) stats_.replayed += batch.size();
  }

  // The boundary: nothing an exporter throws leaves its thread.
  template <typename Fn>
  void guarded(const char* what, Fn&& fn) {
    try {
      fn();
    } catch (const std::exception& e) {
      count_error(what, e.what());
    } catch (...) {
      count_error(what, "unknown exception");
    }
  }

  void count_error(const char* what, std::string_view message) {
    std::uint64_t n = 0;
    {
      std::lock_guard lock(mutex_);
      n = ++stats_.errors;
    }
    // The first error and then every 1000th: a failing exporter must not flood the log.
    if (n == 1 || n % 1000 == 0) {
      log_warn("exporter {}: {} failed ({} errors so far): {}", name_, what, n, message);
    }
  }

  const std::shared_ptr<RecordExporter> exporter_;
  const ExportOptions options_;
  StoreReplay replay_;
  const std::string name_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<ExportRecord> queue_;  // bounded: ExportOptions::max_queued_records / _bytes
  std::size_t queued_bytes_ = 0;
  bool behind_ = false;
  bool stopping_ = false;
  std::map<std::string, Missed> missed_;  // bounded: ExportOptions::max_missed_runs
  ExporterStats stats_;
  std::thread thread_;  // last: started once everything above exists
};

namespace {

// Subscribed by the embedder to HostState; send_text only queues (EventSubscriber's contract).
class HostEventTap final : public EventSubscriber {
 public:
  explicit HostEventTap(std::weak_ptr<RecordExports> exports) : exports_(std::move(exports)) {}
  void send_text(Frame frame) override {
    if (auto exports = exports_.lock()) exports->offer_host_event(std::move(frame));
  }

 private:
  std::weak_ptr<RecordExports> exports_;
};

}  // namespace

RecordExports::RecordExports(std::vector<std::shared_ptr<RecordExporter>> exporters,
                             ExportOptions options, std::shared_ptr<RunStore> store) {
  if (options.max_batch == 0) options.max_batch = 1;
  for (auto& exporter : exporters) {
    if (exporter) workers_.push_back(std::make_unique<ExportWorker>(exporter, options, store));
  }
}

RecordExports::~RecordExports() = default;

void RecordExports::offer_run_record(std::string_view agent_id, std::string_view run_id,
                                     std::uint64_t offset,
                                     std::shared_ptr<const std::string> json) {
  if (workers_.empty()) return;
  ExportRecord record;
  record.source = ExportSource::run_record;
  record.agent_id = agent_id;
  record.run_id = run_id;
  record.offset = offset;
  record.json = std::move(json);
  for (auto& worker : workers_) worker->offer(record);
}

void RecordExports::offer_host_event(std::shared_ptr<const std::string> frame) {
  if (workers_.empty()) return;
  ExportRecord record;
  record.source = ExportSource::host_event;
  record.offset = host_sequence_.fetch_add(1, std::memory_order_relaxed) + 1;
  record.json = std::move(frame);
  for (auto& worker : workers_) worker->offer(record);
}

std::shared_ptr<EventSubscriber> RecordExports::host_event_tap() {
  if (workers_.empty()) return nullptr;
  std::call_once(tap_once_, [&] { tap_ = std::make_shared<HostEventTap>(weak_from_this()); });
  return tap_;
}

std::vector<ExporterStats> RecordExports::stats() const {
  std::vector<ExporterStats> out;
  out.reserve(workers_.size());
  for (const auto& worker : workers_) out.push_back(worker->stats());
  return out;
}

}  // namespace car::runs::detail
