#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "car/export.hpp"
#include "car/fleet/fleet_index.hpp"
#include "car/fleet/fleet_trace.hpp"
#include "car/runs/run_record.hpp"

// The JSON the fleet gateway answers with (docs/FLEET.md "Gateway"). Every runs.* shape is the
// local one (PROTOCOL.md §7.2, §7.4) plus a `host_id` member, so a client of one daemon reads the
// gateway unchanged. Pure functions, any thread.
namespace car::fleet {

// {"jsonrpc":"2.0","method":"runs.trace.event","params":{run_id, agent_id, record, cursor, status,
// host_id}}
CAR_API std::string trace_event_text(const StoredTrace& run, std::string_view record,
                                     std::uint64_t cursor, runs::RunStatus status);
// {"jsonrpc":"2.0","method":"runs.trace.gap","params":{run_id, from_cursor, to_cursor, dropped}}
// — exactly the local notice.
CAR_API std::string trace_gap_text(std::string_view run_id, std::uint64_t from_cursor,
                                   std::uint64_t to_cursor, std::uint64_t dropped);
// runs.list: {agent_id, host_id?, runs:[{run_id, agent_id, host_id, intent, started_at, ended_at?,
// status, turn_count}], next_before?}
CAR_API std::string list_result(std::string_view agent_id, std::optional<std::string_view> host_id,
                                const FleetRunPage& page);
// runs.get_trace: {run_id, agent_id, host_id, records, cursor, next_cursor?}
CAR_API std::string trace_page_result(const StoredTrace& run, const TracePage& page,
                                      std::size_t cursor);
// runs.get_trace of a run the stream does not hold: {run_id, not_found:true}
CAR_API std::string trace_not_found_result(std::string_view run_id);
// runs.subscribe: {run_id, agent_id, host_id, turns_so_far, turns_from?, cursor, status}
CAR_API std::string snapshot_result(const StoredTrace& run, const TraceSnapshot& snapshot);
// runs.unsubscribe: {run_id, removed}
CAR_API std::string unsubscribe_result(std::string_view run_id, bool removed);
// fleet.hosts: {hosts:[{host_id, last_record_at|null, runs_seen, records_seen, runs_evicted}],
// runs_indexed, runs_evicted, max_runs}
CAR_API std::string hosts_result(std::span<const FleetHost> hosts, std::size_t runs_indexed,
                                 std::uint64_t runs_evicted, std::size_t max_runs);
// host.subscribe on the gateway: the local snapshot's shape with the fleet's agents (one
// HostAgent per agent with indexed runs, kind "fleet", status "running" while one of its runs is
// open, else "idle") and no devices, approvals or events.
CAR_API std::string host_snapshot_result(std::span<const std::pair<std::string, bool>> agents,
                                         std::string_view version, long long pid);

// RFC 3339 UTC with milliseconds of a JetStream store time (ns since the epoch).
CAR_API std::string format_stream_time(std::int64_t ns);

}  // namespace car::fleet
