#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string_view>
#include <vector>

#include "car/event_subscriber.hpp"
#include "car/runs/record_exporter.hpp"
#include "car/runs/run_store.hpp"

// Private to the runs layer: the fan-out of accepted records to the embedder's exporters
// (car/runs/record_exporter.hpp) — one bounded queue and one delivery thread per exporter, and
// the catch-up from the store of what an exporter missed while its queue was full.
//
// Why a thread of its own per exporter rather than the loop or the libuv pool: an exporter may
// block (a publish waiting for its ack, a test latch). On the loop that would stall every
// connection; on the pool (4 threads by default) it would occupy the threads the run store
// actors need, so a slow exporter would slow record_turns — exactly what the seam must prevent.
// A dedicated thread costs one stack per exporter and isolates each exporter from the producers
// and from the others.
//
// Threads: offer_run_record / offer_host_event may be called from any thread (the ledger calls
// them under the runs lock; they take only the worker's own mutex, briefly, and never wait for an
// exporter). Lifetime: owned by shared_ptr (the run ledger); the host event tap holds it weakly; destruction stops and joins every delivery thread
// (waiting for a deliver call in progress).
namespace car::runs::detail {

class ExportWorker;

class RecordExports : public std::enable_shared_from_this<RecordExports> {
 public:
  RecordExports(std::vector<std::shared_ptr<RecordExporter>> exporters, ExportOptions options,
                std::shared_ptr<RunStore> store);
  ~RecordExports();
  RecordExports(const RecordExports&) = delete;
  RecordExports& operator=(const RecordExports&) = delete;

  bool empty() const { return workers_.empty(); }

  // A record the store accepted and whose call is acknowledged, at `offset` in its run. Offers of
  // one run must come in offset order (the run's serial store actor guarantees it).
  void offer_run_record(std::string_view agent_id, std::string_view run_id, std::uint64_t offset,
                        std::shared_ptr<const std::string> json);
  // A host.event notification; numbered here, in call order, from 1.
  void offer_host_event(std::shared_ptr<const std::string> frame);

  // The EventSubscriber an embedder subscribes to HostState (null when there is no exporter).
  std::shared_ptr<EventSubscriber> host_event_tap();

  std::vector<ExporterStats> stats() const;

 private:
  std::vector<std::unique_ptr<ExportWorker>> workers_;
  std::once_flag tap_once_;
  std::shared_ptr<EventSubscriber> tap_;
  std::atomic<std::uint64_t> host_sequence_{0};
};

}  // namespace car::runs::detail
