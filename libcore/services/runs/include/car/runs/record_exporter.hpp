#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "car/export.hpp"
#include "car/result.hpp"

// The record sink seam: every record the run store has accepted (started, turn, ended) and every
// host event is offered, after the local append, to optional exporters (a message bus, a remote
// archive, a counter). The local store stays the source of truth and the point of
// acknowledgement: a record is offered only once its call is acknowledged (after the append, and
// after the sync with StoreSync::batch), and nothing an exporter does — being slow, blocking,
// failing, throwing — reaches a producer.
//
// Each exporter has its own bounded queue and its own delivery thread. Policy when the queue is
// full: the record is not queued, the exporter is marked *behind* and the service remembers, per
// run, the range of offsets it missed. Once the exporter has worked through its queue, its thread
// reads exactly those ranges back from the RunStore (RunStore::read) and delivers them, then goes
// on with the queue. Per run, an exporter therefore sees every acknowledged record exactly once
// and in offset order, however far behind it fell (records pruned from the store meanwhile are
// counted as lost). Host events have no store to come back from: those missed while behind are
// counted as lost (ExporterStats::lost).
//
// Installation: put exporters in RunConfig::exporters before install_run_services; for host
// events, subscribe RunService::host_event_exporter() to the HostState (docs/EMBEDDING.md §8).
namespace car::runs {

enum class ExportSource : std::uint8_t {
  run_record,  // a stored record of a run's trace
  host_event,  // a host.event notification (PROTOCOL.md §4)
};

// One offered record. Immutable once offered; `json` is serialized once and shared by every
// exporter (and, for turns, with the run's in-memory trace).
struct CAR_API ExportRecord {
  ExportSource source = ExportSource::run_record;
  std::string agent_id;  // run records: the run's agent; host events: empty
  std::string run_id;    // host events: empty
  // Run records: the record's index in the run's stored trace, the runs.get_trace cursor
  // (`started` 0, turn i at i + 1, `ended` last), so `<host-id>/<run_id>/<offset>` names a record
  // uniquely and stably. Host events: the event's sequence in offer order, from 1 (equal to the
  // host's event `sequence` when the exporter was subscribed before the first event).
  std::uint64_t offset = 0;
  // Run records: the stored record (compact JSON, first member "record"). Host events: the whole
  // host.event notification text.
  std::shared_ptr<const std::string> json;
  bool replayed = false;  // read back from the store while catching up (else offered live)
};

// Read access to the store for an exporter, e.g. to resume from its own on-disk cursor after a
// restart. Threads: call it only from the exporter's own thread (inside start or deliver); it
// reads files and may take as long as the store does.
class CAR_API RecordReplay {
 public:
  RecordReplay() = default;
  RecordReplay(const RecordReplay&) = delete;
  RecordReplay& operator=(const RecordReplay&) = delete;
  virtual ~RecordReplay() = default;

  // Every stored record of `run_id` at `from_offset` or later, in order, each with
  // `replayed = true`. Only records whose calls were acknowledged are promised to be there; with
  // StoreSync::batch a record written but not yet synced may also be returned. Errors: -32602
  // "unknown run" when the store has no such run; -32603 when the store threw.
  virtual Result<std::vector<ExportRecord>> replay_run(std::string_view run_id,
                                                       std::uint64_t from_offset) = 0;
};

// What an exporter with a link of its own (a broker connection) reports about it, for runs.stats
// and the metrics. Optional: exporters without a link report nothing (RecordExporter::status).
struct CAR_API ExporterStatus {
  bool connected = false;
  // Records the exporter holds that its destination has not acknowledged yet, beyond those the
  // service still queues for it (e.g. a backlog it resumes from its own cursor after a restart).
  std::uint64_t pending = 0;
  std::string last_error;  // empty when none since the last success
};

// An exporter. Threads: every member except status() is called on the exporter's own delivery thread, one call at
// a time, never on the loop thread or a pool thread, never with a lock of the service held. A call
// may block (a network round trip): only this exporter waits. Exceptions are caught at the
// boundary and count as errors. Lifetime: owned by the service from install_run_services until the
// RunService and its Server are gone; the service's destruction waits for the call in progress,
// so a call should return within a bounded time.
class CAR_API RecordExporter {
 public:
  RecordExporter() = default;
  RecordExporter(const RecordExporter&) = delete;
  RecordExporter& operator=(const RecordExporter&) = delete;
  virtual ~RecordExporter() = default;

  // A short name for logs and runs.stats.
  virtual std::string name() const = 0;

  // Once, before the first deliver: the place to resume from a cursor of one's own.
  virtual void start(RecordReplay& replay) { (void)replay; }

  // A batch of at most ExportOptions::max_batch records; per run (and for host events) in offset
  // order, every offset once. Return an error to have it counted and logged; the records count
  // as delivered either way — retrying (e.g. through `replay`) is the exporter's business.
  virtual std::optional<std::string> deliver(std::span<const ExportRecord> batch,
                                             RecordReplay& replay) = 0;

  // For an exporter that keeps work of its own to retry (records its destination has not
  // acknowledged yet, to re-read through `replay`): called on the delivery thread when the queue
  // is empty and the delay it last returned has passed — first right after start(), then after
  // each deliver. Returns the delay before the next call, or nullopt when it has nothing left to
  // do (it is called again after the next deliver). The default does nothing.
  virtual std::optional<std::chrono::milliseconds> idle(RecordReplay& replay) {
    (void)replay;
    return std::nullopt;
  }

  // The exception to the threading rule above: called from any thread (a runs.stats request, a
  // metrics scrape), concurrently with start/deliver, so it must be thread-safe and must not
  // block. Never called after the service is gone.
  virtual std::optional<ExporterStatus> status() const { return std::nullopt; }
};

// Bounds of each exporter's queue (RunConfig::export_options).
struct CAR_API ExportOptions {
  // Records queued per exporter; beyond it the exporter is behind (see above).
  std::size_t max_queued_records = 4096;
  // Bytes of record JSON those hold (a record alone in the queue is always accepted).
  std::size_t max_queued_bytes = 16 * 1024 * 1024;
  // Records handed to one deliver call.
  std::size_t max_batch = 256;
  // Runs whose missed ranges are remembered while behind; records of further runs are lost.
  std::size_t max_missed_runs = 4096;
  // Woken by a record, the delivery thread waits this long for more before it delivers (unless
  // a whole batch is there already): a producer's offer then rarely has a sleeping thread to wake
  // (a futex call and a context switch per record_turns otherwise), at the cost of this much
  // export latency. Zero: deliver at once.
  std::chrono::microseconds batch_delay{1000};
  // The delivery thread lowers its own scheduling priority by this much (Linux: setpriority on
  // the thread, relative to its nice value, capped at 19), and threads the exporter creates from it — a client
  // library's I/O threads — inherit it. Export is background work: on a machine whose cores are
  // busy, the loop and the pool that answer producers get the CPU first. 0 keeps the priority.
  int delivery_nice = 10;
};

// One exporter's counters (monotonic since start, except `queued` and `behind`).
struct CAR_API ExporterStats {
  std::string name;
  std::uint64_t offered = 0;      // records offered to it, queued or not
  std::uint64_t delivered = 0;    // records handed to deliver (live and replayed)
  std::uint64_t replayed = 0;     // of those, read back from the store while catching up
  std::uint64_t fell_behind = 0;  // times its queue was full
  std::uint64_t caught_up = 0;    // catch-ups from the store completed
  std::uint64_t lost = 0;         // records it will never see (host events, pruned, table full)
  std::uint64_t errors = 0;       // deliver calls that returned an error or threw
  std::size_t queued = 0;         // records in its queue now
  bool behind = false;            // missed records wait for a catch-up
  // Records offered to it and not delivered yet — queued, missed while behind (to catch up), or
  // in the deliver call in progress — plus its own status' `pending`.
  std::uint64_t lag = 0;
  std::optional<ExporterStatus> status;  // RecordExporter::status(), when it reports one
};

}  // namespace car::runs
