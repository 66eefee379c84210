#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "car/executor.hpp"
#include "car/runs/run_record.hpp"
#include "car/runs/run_service.hpp"
#include "car/event_stream.hpp"

// Private to the runs layer: the live fan-out of every run's trace (PROTOCOL.md §7.4) — who is
// subscribed to which run, the publish of a durable record to them, and the drain passes a
// publish claims.
//
// The fan-out guards its subscription table with the runs lock, which it shares with the run
// ledger rather than having one of its own: the ledger publishes a record and takes a new
// subscriber's snapshot under that lock, and registering the subscriber inside the same critical
// section is what makes every record land either in the snapshot or in the subscriber's events,
// never both and never neither.
//
// Threads: members ending in _locked are called with the runs lock held (by the ledger); the
// others take it themselves and may be called from any thread. run_claimed never runs under the
// lock. Lifetime: owned by shared_ptr (the ledger, the service handle, the method bindings);
// subscribers' failure handlers hold it weakly.
namespace car {
class Connection;
}  // namespace car

namespace car::runs::detail {

class TraceFanout : public std::enable_shared_from_this<TraceFanout> {
 public:
  // Subscribers whose next drain pass a publish claimed (StreamSubscriber::push_claiming): the
  // caller owes each one a drain_claimed(), which run_claimed() does.
  using Claimed = std::vector<std::shared_ptr<StreamSubscriber>>;

  TraceFanout(Executor& executor, StreamSubscriber::Options options,
              std::shared_ptr<std::mutex> runs_lock);
  TraceFanout(const TraceFanout&) = delete;
  TraceFanout& operator=(const TraceFanout&) = delete;

  // ---- with the runs lock held ----

  // Pushes the durable `record` of `run_id` (its trace cursor `cursor`, the run's `status` after
  // it) to every subscriber of the run; those whose pass it claimed are added to `ready`.
  void publish_locked(const std::string& run_id, std::string_view agent_id, std::string_view record,
                      std::uint64_t cursor, RunStatus status, Claimed& ready);
  // Creates a paused subscriber of `run_id` for `connection`, whose snapshot ends at `cursor`,
  // and registers it (replacing that connection's previous subscription to the run). The caller
  // has checked that the connection is not closed, so its teardown is still to remove it; it
  // calls resume() once the snapshot reply is queued.
  std::shared_ptr<StreamSubscriber> attach_locked(const std::shared_ptr<Connection>& connection,
                                                 const std::string& run_id, std::uint64_t cursor);
  // Adds the fan-out's counters (drain_* events_* gaps_sent) to `out`.
  void add_counters_locked(RunCounters& out) const;

  // ---- the store job's passes (pool thread, no lock held) ----

  // Runs the passes in `ready` and empties it: here, or posted to the loop (DrainThread::loop).
  // Returns whether there were any. No lock may be held: a refused send may end a subscription,
  // which takes the runs lock.
  bool run_claimed(Claimed& ready);
  // Called once at the end of a store job that ran passes: the job counts as one drain hop (with
  // DrainThread::loop, each posted batch was counted instead).
  void count_store_job_hop();

  // ---- any thread ----

  // runs.unsubscribe: ends `client_id`'s subscription to `run_id`; false when it had none.
  bool unsubscribe(const std::string& run_id, const std::string& client_id);
  // Teardown step run_subscriptions: ends every subscription of `client_id`.
  void remove_client(const std::string& client_id);
  // Per-subscription statistics, optionally for one run only.
  std::vector<SubscriberStats> stats(std::optional<std::string_view> run_id) const;

 private:
  // Removes the subscription of `client_id` to `run_id` (only if it is `only`, when given).
  bool remove_locked(const std::string& run_id, const std::string& client_id,
                     const StreamSubscriber* only = nullptr);

  Executor& executor_;
  const StreamSubscriber::Options options_;
  const std::shared_ptr<StreamTotals> totals_;
  const std::shared_ptr<std::mutex> lock_;  // the runs lock

  // Subscriptions by run, then by client; and the runs each client is subscribed to.
  std::unordered_map<std::string, std::map<std::string, std::shared_ptr<StreamSubscriber>>> subs_;
  std::unordered_map<std::string, std::set<std::string>> subs_by_client_;
  std::uint64_t events_published_ = 0;  // records fanned out to at least one subscriber
};

}  // namespace car::runs::detail
