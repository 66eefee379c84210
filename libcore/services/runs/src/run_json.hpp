#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "car/runs/run_record.hpp"
#include "car/runs/run_service.hpp"
#include "car/runs/run_store.hpp"
#include "car/event_stream.hpp"

// Private to the runs layer: the JSON of every runs.* result and notification (PROTOCOL.md §7.2,
// §7.4), in one place. The stored records themselves are built by run_record.hpp; here they are
// only embedded, as the compact JSON texts they already are. Pure functions, any thread.
namespace car::runs::detail {

// ---- notifications (complete JSON-RPC texts, serialized once per event) ----

// {"jsonrpc":"2.0","method":"runs.trace.event","params":{run_id, agent_id, record, cursor, status}}
std::string trace_event_text(std::string_view run_id, std::string_view agent_id,
                             std::string_view record, std::uint64_t cursor, RunStatus status);
// [ext] {"jsonrpc":"2.0","method":"runs.trace.gap",
//        "params":{run_id, from_cursor, to_cursor, dropped}}
std::string trace_gap_text(std::string_view run_id, std::uint64_t from_cursor,
                           std::uint64_t to_cursor, std::uint64_t dropped);

// ---- results ----

// runs.start: {run_id, agent_id}
std::string start_result(std::string_view run_id, std::string_view agent_id);
// runs.complete: {run_id, ok:true}
std::string complete_result(std::string_view run_id);
// runs.record_turns: {run_id, base_index, count, ok:true}
std::string turns_recorded_result(std::string_view run_id, std::uint64_t base_index,
                                  std::size_t count);
// runs.record_turns refused: {run_id, base_index:0, count:0, ok:false, dropped:<reason>}
std::string turns_refused_result(std::string_view run_id, std::string_view reason);
// runs.subscribe: {run_id, agent_id, turns_so_far, turns_from?, cursor, status} — [ext]
// `turns_from` (only when not 0) is the index of the first turn in turns_so_far: a bounded
// snapshot leaves out the oldest turns, which runs.get_trace serves (PROTOCOL.md §7.2).
std::string snapshot_result(std::string_view run_id, std::string_view agent_id,
                            std::span<const std::shared_ptr<const std::string>> turns,
                            std::uint64_t cursor, RunStatus status, std::uint64_t turns_from = 0);
// runs.unsubscribe: {run_id, removed}
std::string unsubscribe_result(std::string_view run_id, bool removed);
// runs.list: {agent_id, runs:[{run_id, agent_id, intent, started_at, ended_at?, status,
// turn_count}], next_before?}  ([ext] next_before: more runs follow; PROTOCOL.md §7.2)
std::string list_result(std::string_view agent_id, std::span<const RunSummary> runs,
                        std::optional<std::string_view> next_before = std::nullopt);
// runs.get_trace: {run_id, agent_id, records, cursor, next_cursor?}
std::string trace_page_result(std::string_view run_id, std::string_view agent_id,
                              std::span<const std::string> records, std::size_t cursor,
                              std::optional<std::size_t> next_cursor);
// runs.get_trace of a run nobody stored: {run_id, not_found:true}
std::string trace_not_found_result(std::string_view run_id);
// [ext] runs.stats: {subscribers:[{run_id, client_id, queued, dropped, frames_written,
// bytes_written, last_write_us, drain_passes, events_drained}], fanout:{drain_hops, drain_passes,
// events_drained, events_dropped, gaps_sent, events_published, store_jobs}}
std::string stats_result(std::span<const SubscriberStats> subscribers, const RunCounters& counters,
                         std::span<const ExporterStats> exporters = {});

}  // namespace car::runs::detail
