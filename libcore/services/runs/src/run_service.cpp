// RunService: the embedder's handle on the run ledger and the trace fan-out of one Server.
#include "car/runs/run_service.hpp"

#include <mutex>

#include "car/server.hpp"
#include "run_ledger.hpp"
#include "trace_fanout.hpp"

namespace car::runs {

RunService::RunService(Server& server, RunConfig config) {
  // One mutex, "the runs lock", shared by the two: see trace_fanout.hpp for why.
  auto runs_lock = std::make_shared<std::mutex>();
  StreamSubscriber::Options options;
  options.capacity = config.subscriber_queue;
  options.deadline = config.drain_timeout;
  options.drain_thread = config.drain_thread;
  // A trace may have holes; the subscriber is told where (runs.trace.gap, PROTOCOL.md §7.4).
  options.overflow = OverflowPolicy::drop_with_gap;
  fanout_ = std::make_shared<detail::TraceFanout>(server.executor(), options, runs_lock);
  ledger_ =
      std::make_shared<detail::RunLedger>(server, std::move(config), std::move(runs_lock), fanout_);
}

RunService::~RunService() = default;

void RunService::shutdown(std::function<void()> flushed) { ledger_->shutdown(std::move(flushed)); }

RunCounters RunService::counters() const { return ledger_->counters(); }

LatencyHistogram::Snapshot RunService::store_append_latency() const {
  return ledger_->append_latency().snapshot();
}

std::vector<SubscriberStats> RunService::subscriber_stats(
    std::optional<std::string_view> run_id) const {
  return fanout_->stats(run_id);
}

std::size_t RunService::runs_in_memory() const { return ledger_->runs_in_memory(); }

std::size_t RunService::pending_store_ops() const { return ledger_->pending_store_ops(); }

const RunConfig& RunService::config() const { return ledger_->config(); }

std::vector<ExporterStats> RunService::exporter_stats() const {
  return ledger_->exports().stats();
}

std::shared_ptr<EventSubscriber> RunService::host_event_exporter() const {
  return ledger_->exports().host_event_tap();
}

}  // namespace car::runs
