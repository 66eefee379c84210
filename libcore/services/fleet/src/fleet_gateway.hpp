#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "car/event_stream.hpp"
#include "car/fleet/fleet_index.hpp"
#include "car/fleet/fleet_service.hpp"
#include "car/reply.hpp"
#include "gateway_worker.hpp"
#include "jetstream_reader.hpp"

// Private to the fleet layer: the gateway's state behind the methods (fleet_methods.cpp) — the
// index fed by one ordered consumer over every run subject, the worker for broker reads, and the
// live subscriptions, each a paused-then-resumed StreamSubscriber fed by an ordered consumer on
// its run's subject that starts right after the snapshot's last stream sequence (so the snapshot
// and the events neither overlap nor leave a hole; offsets already delivered are skipped, which
// also absorbs a duplicate publish).
//
// Locks: index_mutex_ guards the index (taken by libnats' delivery thread per record and by the
// loop for runs.list, briefly); subs_mutex_ guards the subscription table. Neither is held while
// calling into libnats or a sink.
namespace car {
class Connection;
class Server;
}  // namespace car

namespace car::fleet::detail {

class FleetGateway : public std::enable_shared_from_this<FleetGateway> {
 public:
  FleetGateway(Server& server, FleetConfig config, std::unique_ptr<JetStreamReader> reader);
  FleetGateway(const FleetGateway&) = delete;
  FleetGateway& operator=(const FleetGateway&) = delete;
  ~FleetGateway();

  // Starts the index consumer on the worker (retried every second until the stream exists).
  void start_index();

  // ---- the methods (called on the thread that fed the request; they never block) ----
  void list(const Connection& reader, std::string agent_id, std::optional<std::string> host_id,
            std::optional<std::size_t> limit, std::optional<std::string> before, Reply reply);
  void get_trace(std::shared_ptr<Connection> reader, std::string run_id,
                 std::optional<std::string> host_id, std::size_t cursor, Reply reply);
  void subscribe(std::shared_ptr<Connection> reader, std::string run_id,
                 std::optional<std::string> host_id, Reply reply);
  bool unsubscribe(const std::string& run_id, const std::string& client_id);
  void remove_client(const std::string& client_id);
  std::string hosts_json() const;
  std::string host_snapshot_json() const;
  std::string stats_json() const;

  FleetStats stats() const;
  void shutdown();
  const FleetConfig& config() const { return config_; }

 private:
  struct Live;
  // Checks the index before any read: the run's one candidate (nullopt: not indexed), or an error
  // (on several hosts without host_id; not authorized).
  Result<std::optional<FleetRun>> locate(const Connection& reader, const std::string& run_id,
                                         const std::optional<std::string>& host_id) const;
  bool may_read(const Connection& reader, std::string_view agent_id) const;
  void index_job();
  // reader_->fetch_run, tried again (up to 3 times, 300 ms apart) after a broker error: during a
  // cluster fail-over consumer creation times out until a new leader is elected. Worker only.
  Result<std::optional<StoredTrace>> fetch(const std::string& run_id,
                                           const std::optional<std::string>& host_id);
  void subscribe_job(std::shared_ptr<Connection> reader, std::string run_id,
                     std::optional<std::string> host_id, Reply reply);
  // Hands a consumer to the worker to stop (a round trip to the broker).
  void retire(std::unique_ptr<Consumer> consumer);
  void stop_retired();
  void remove_locked(std::map<std::string, std::shared_ptr<Live>>& runs,
                     std::map<std::string, std::shared_ptr<Live>>::iterator it,
                     std::vector<std::unique_ptr<Consumer>>& retired);
  void on_live_message(const std::shared_ptr<Live>& live, StreamMessage message);

  Server& server_;
  const FleetConfig config_;
  std::unique_ptr<JetStreamReader> reader_;
  // Guards reader_ against shutdown for stats() (any thread); the worker and the consumers use
  // reader_ only while it lives, which shutdown ensures by stopping them first.
  mutable std::mutex reader_mutex_;
  GatewayWorker worker_;
  const std::shared_ptr<StreamTotals> totals_ = std::make_shared<StreamTotals>();

  mutable std::mutex index_mutex_;
  FleetIndex index_;
  std::unique_ptr<Consumer> index_consumer_;  // worker thread only (then shutdown)

  mutable std::mutex subs_mutex_;
  // client id -> run id -> subscription
  std::map<std::string, std::map<std::string, std::shared_ptr<Live>>> subs_;
  std::size_t live_consumers_ = 0;
  std::vector<std::unique_ptr<Consumer>> retired_;  // at most one per live subscription
  bool shut_down_ = false;

  std::atomic<std::uint64_t> trace_reads_{0};
  std::atomic<std::uint64_t> read_errors_{0};
  std::atomic<std::uint64_t> live_events_{0};
};

}  // namespace car::fleet::detail
