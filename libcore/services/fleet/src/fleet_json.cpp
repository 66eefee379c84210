#include "car/fleet/fleet_json.hpp"

#include <chrono>

#include "car/json.hpp"
#include "car/jsonrpc_text.hpp"

namespace car::fleet {

namespace {

json::Builder& uint64(json::Builder& b, std::uint64_t value) {
  b.w().Uint64(value);
  return b;
}

}  // namespace

std::string trace_event_text(const StoredTrace& run, std::string_view record, std::uint64_t cursor,
                             runs::RunStatus status) {
  json::Builder b;
  b.begin_object();
  b.key("run_id").str(run.run_id);
  b.key("agent_id").str(run.agent_id);
  b.key("record").raw(record);
  uint64(b.key("cursor"), cursor);
  b.key("status").str(runs::to_string(status));
  b.key("host_id").str(run.host_id);
  b.end_object();
  return jsonrpc::notification("runs.trace.event", b.view());
}

std::string trace_gap_text(std::string_view run_id, std::uint64_t from_cursor,
                           std::uint64_t to_cursor, std::uint64_t dropped) {
  json::Builder b;
  b.begin_object();
  b.key("run_id").str(run_id);
  uint64(b.key("from_cursor"), from_cursor);
  uint64(b.key("to_cursor"), to_cursor);
  uint64(b.key("dropped"), dropped);
  b.end_object();
  return jsonrpc::notification("runs.trace.gap", b.view());
}

std::string list_result(std::string_view agent_id, std::optional<std::string_view> host_id,
                        const FleetRunPage& page) {
  json::Builder b;
  b.begin_object();
  b.key("agent_id").str(agent_id);
  if (host_id) b.key("host_id").str(*host_id);
  b.key("runs").begin_array();
  for (const FleetRun& run : page.runs) {
    b.begin_object();
    b.key("run_id").str(run.run_id);
    b.key("agent_id").str(run.agent_id);
    b.key("host_id").str(run.host_id);
    b.key("intent").str(run.intent);
    b.key("started_at").str(run.started_at);
    if (run.ended_at) b.key("ended_at").str(*run.ended_at);
    b.key("status").str(runs::to_string(run.status));
    uint64(b.key("turn_count"), run.turn_count);
    b.end_object();
  }
  b.end_array();
  if (page.next_before) b.key("next_before").str(*page.next_before);
  b.end_object();
  return b.take();
}

std::string trace_page_result(const StoredTrace& run, const TracePage& page, std::size_t cursor) {
  json::Builder b;
  b.begin_object();
  b.key("run_id").str(run.run_id);
  b.key("agent_id").str(run.agent_id);
  b.key("host_id").str(run.host_id);
  b.key("records").begin_array();
  for (std::string_view record : page.records) b.raw(record);
  b.end_array();
  uint64(b.key("cursor"), cursor);
  if (page.next_cursor) uint64(b.key("next_cursor"), *page.next_cursor);
  b.end_object();
  return b.take();
}

std::string trace_not_found_result(std::string_view run_id) {
  json::Builder b;
  b.begin_object();
  b.key("run_id").str(run_id);
  b.key("not_found").boolean(true);
  b.end_object();
  return b.take();
}

std::string snapshot_result(const StoredTrace& run, const TraceSnapshot& snapshot) {
  json::Builder b;
  b.begin_object();
  b.key("run_id").str(run.run_id);
  b.key("agent_id").str(run.agent_id);
  b.key("host_id").str(run.host_id);
  b.key("turns_so_far").begin_array();
  for (const auto& turn : snapshot.turns) b.raw(*turn);
  b.end_array();
  if (snapshot.turns_from != 0) uint64(b.key("turns_from"), snapshot.turns_from);
  uint64(b.key("cursor"), run.turn_count());
  b.key("status").str(runs::to_string(run.status()));
  b.end_object();
  return b.take();
}

std::string unsubscribe_result(std::string_view run_id, bool removed) {
  json::Builder b;
  b.begin_object();
  b.key("run_id").str(run_id);
  b.key("removed").boolean(removed);
  b.end_object();
  return b.take();
}

std::string hosts_result(std::span<const FleetHost> hosts, std::size_t runs_indexed,
                         std::uint64_t runs_evicted, std::size_t max_runs) {
  json::Builder b;
  b.begin_object();
  b.key("hosts").begin_array();
  for (const FleetHost& host : hosts) {
    b.begin_object();
    b.key("host_id").str(host.host_id);
    if (host.last_record_ns > 0) {
      b.key("last_record_at").str(format_stream_time(host.last_record_ns));
    } else {
      b.key("last_record_at").null();
    }
    uint64(b.key("runs_seen"), host.runs_seen);
    uint64(b.key("records_seen"), host.records_seen);
    uint64(b.key("runs_evicted"), host.runs_evicted);
    b.end_object();
  }
  b.end_array();
  uint64(b.key("runs_indexed"), runs_indexed);
  uint64(b.key("runs_evicted"), runs_evicted);
  uint64(b.key("max_runs"), max_runs);
  b.end_object();
  return b.take();
}

std::string host_snapshot_result(std::span<const std::pair<std::string, bool>> agents,
                                 std::string_view version, long long pid) {
  json::Builder b;
  b.begin_object();
  b.key("subscribed").boolean(true);
  b.key("agents").begin_array();
  for (const auto& [id, open] : agents) {
    b.begin_object();
    b.key("id").str(id);
    b.key("name").str(id);
    b.key("kind").str("fleet");
    b.key("capabilities").begin_array().end_array();
    b.key("status").str(open ? "running" : "idle");
    b.key("current_task").null();
    b.key("pid").null();
    b.key("metadata").begin_object().end_object();
    b.key("session_id").str("");
    b.end_object();
  }
  b.end_array();
  b.key("devices").begin_array().end_array();
  b.key("approvals").begin_array().end_array();
  b.key("events").begin_array().end_array();
  b.key("event_sequence").integer(0);
  b.key("identity").begin_object();
  b.key("version").str(version);
  b.key("pid").integer(pid);
  b.key("manifest_path").null();
  b.key("manifest_role").str("none");
  b.end_object();
  b.end_object();
  return b.take();
}

std::string format_stream_time(std::int64_t ns) {
  using namespace std::chrono;
  return runs::format_timestamp(system_clock::time_point(
      duration_cast<system_clock::duration>(nanoseconds(ns))));
}

}  // namespace car::fleet
