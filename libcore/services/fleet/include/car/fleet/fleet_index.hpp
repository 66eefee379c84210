#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "car/export.hpp"
#include "car/result.hpp"
#include "car/runs/run_record.hpp"

// The fleet gateway's index (docs/FLEET.md "Gateway"): what runs.list and fleet.hosts answer from,
// built from every run record the hosts exported to JetStream, in stream order. Pure: no I/O and
// no lock of its own (the gateway holds one around it), callable from any thread.
//
// Bound and policy: at most `max_runs` runs are indexed; past it the run whose first record is
// oldest in the stream is evicted (its host keeps counting it in runs_seen). runs.list then simply
// no longer lists it, and says so through `evicted` in fleet.hosts; runs.get_trace still reads it
// from the stream. At most `max_hosts` hosts are tracked; records of further hosts are counted in
// `records_ignored` and not indexed.
namespace car::fleet {

// One run record as the exporter stored it (car/nats/subjects.hpp): its ids, its runs.get_trace
// offset, its stream sequence, when JetStream stored it (ns since the epoch) and the stored JSON.
struct CAR_API FleetRecord {
  std::string_view host_id;
  std::string_view agent_id;
  std::string_view run_id;
  std::uint64_t offset = 0;
  std::uint64_t stream_sequence = 0;
  std::int64_t stored_at_ns = 0;
  std::string_view json;
};

// What the index knows of one run: the runs.list summary plus where it lies in the stream.
struct CAR_API FleetRun {
  std::string host_id;
  std::string agent_id;
  std::string run_id;
  std::string intent;      // "" until the `started` record is seen
  std::string started_at;  // likewise
  std::optional<std::string> ended_at;
  runs::RunStatus status = runs::RunStatus::in_progress;
  std::uint64_t turn_count = 0;
  std::uint64_t records = 0;          // distinct offsets seen
  std::uint64_t next_offset = 0;      // records with a lower offset were applied
  std::uint64_t first_sequence = 0;   // stream sequence of its first record seen
  std::uint64_t last_sequence = 0;    // and of its last
};

struct CAR_API FleetHost {
  std::string host_id;
  std::int64_t last_record_ns = 0;  // JetStream's store time of its newest record
  std::uint64_t runs_seen = 0;      // distinct runs ever indexed for it (evicted ones included)
  std::uint64_t records_seen = 0;
  std::uint64_t runs_evicted = 0;   // of those, evicted by the max_runs bound
};

struct CAR_API FleetIndexLimits {
  std::size_t max_runs = 100000;
  std::size_t max_hosts = 4096;
};

// One runs.list page: newest started_at first; `next_before` (a run id) when more remain.
struct CAR_API FleetRunPage {
  std::vector<FleetRun> runs;
  std::optional<std::string> next_before;
};

class CAR_API FleetIndex {
 public:
  explicit FleetIndex(FleetIndexLimits limits = {});

  // Applies one record. Records of a run are expected in offset order; one at an offset already
  // applied (a duplicate publish past JetStream's duplicate window) is ignored. A record whose
  // offset skips ahead is applied all the same (the stream lost some: limits, purge) and counts
  // in `offset_gaps`. Returns whether the index changed.
  bool apply(const FleetRecord& record);

  // Runs of `agent_id` (on `host_id` only, when given), newest started_at first, at most `limit`,
  // started strictly before the run `before` (a run id of that agent). Errors: -32602 `unknown run
  // '<id>' for 'before'` when `before` names no indexed run of the agent.
  Result<FleetRunPage> list(std::string_view agent_id, std::optional<std::string_view> host_id,
                            std::optional<std::size_t> limit,
                            std::optional<std::string_view> before) const;
  // Every indexed run with this id (on `host_id` only, when given): one normally, several when
  // two hosts used the same id.
  std::vector<FleetRun> find(std::string_view run_id,
                             std::optional<std::string_view> host_id = std::nullopt) const;
  // Hosts seen, by host id.
  std::vector<FleetHost> hosts() const;
  // Agent ids with at least one indexed run, sorted, each with whether one of its runs is open.
  std::vector<std::pair<std::string, bool>> agents() const;

  std::size_t run_count() const { return runs_.size(); }
  std::uint64_t records_applied() const { return records_applied_; }
  std::uint64_t records_ignored() const { return records_ignored_; }
  std::uint64_t offset_gaps() const { return offset_gaps_; }
  std::uint64_t runs_evicted() const { return runs_evicted_; }

 private:
  // "<length of host id>:<host id><run id>": one key per (host, run), whatever bytes the ids hold.
  using RunKey = std::string;
  static RunKey key_of(std::string_view host_id, std::string_view run_id);
  // Removes the run first seen earliest; false when there was none to remove.
  bool evict_oldest();
  void evict(std::unordered_map<RunKey, FleetRun>::iterator it);
  void unlink(const RunKey& key, const FleetRun& run);

  FleetIndexLimits limits_;
  std::unordered_map<RunKey, FleetRun> runs_;
  // Eviction order: first stream sequence -> run.
  // A multimap: a stream deleted and recreated restarts its sequences, so two runs may share one.
  std::multimap<std::uint64_t, RunKey> by_first_sequence_;
  // Per agent: (started_at, run key), iterated backwards for newest first.
  std::unordered_map<std::string, std::set<std::pair<std::string, RunKey>>> by_agent_;
  // Per run id: the keys holding it (several hosts may reuse an id).
  std::unordered_map<std::string, std::set<RunKey>> by_run_id_;
  std::map<std::string, FleetHost> hosts_;
  std::uint64_t records_applied_ = 0;
  std::uint64_t records_ignored_ = 0;
  std::uint64_t offset_gaps_ = 0;
  std::uint64_t runs_evicted_ = 0;
};

}  // namespace car::fleet
