#include "run_json.hpp"

#include "car/json.hpp"
#include "car/jsonrpc_text.hpp"

namespace car::runs::detail {

namespace {

json::Builder& uint64(json::Builder& b, std::uint64_t value) {
  b.w().Uint64(value);
  return b;
}

// The notification `method` whose params object `write_params` fills in.
template <typename WriteParams>
std::string notification(std::string_view method, WriteParams&& write_params) {
  json::Builder params;
  params.begin_object();
  write_params(params);
  params.end_object();
  return jsonrpc::notification(method, params.view());
}

}  // namespace

std::string trace_event_text(std::string_view run_id, std::string_view agent_id,
                             std::string_view record, std::uint64_t cursor, RunStatus status) {
  return notification("runs.trace.event", [&](json::Builder& b) {
    b.key("run_id").str(run_id);
    b.key("agent_id").str(agent_id);
    b.key("record").raw(record);
    uint64(b.key("cursor"), cursor);
    b.key("status").str(to_string(status));
  });
}

std::string trace_gap_text(std::string_view run_id, std::uint64_t from_cursor,
                           std::uint64_t to_cursor, std::uint64_t dropped) {
  return notification("runs.trace.gap", [&](json::Builder& b) {
    b.key("run_id").str(run_id);
    uint64(b.key("from_cursor"), from_cursor);
    uint64(b.key("to_cursor"), to_cursor);
    uint64(b.key("dropped"), dropped);
  });
}

std::string start_result(std::string_view run_id, std::string_view agent_id) {
  json::Builder b;
  b.begin_object();
  b.key("run_id").str(run_id);
  b.key("agent_id").str(agent_id);
  b.end_object();
  return b.take();
}

std::string complete_result(std::string_view run_id) {
  json::Builder b;
  b.begin_object();
  b.key("run_id").str(run_id);
  b.key("ok").boolean(true);
  b.end_object();
  return b.take();
}

std::string turns_recorded_result(std::string_view run_id, std::uint64_t base_index,
                                  std::size_t count) {
  json::Builder b;
  b.begin_object();
  b.key("run_id").str(run_id);
  uint64(b.key("base_index"), base_index);
  uint64(b.key("count"), count);
  b.key("ok").boolean(true);
  b.end_object();
  return b.take();
}

std::string turns_refused_result(std::string_view run_id, std::string_view reason) {
  json::Builder b;
  b.begin_object();
  b.key("run_id").str(run_id);
  uint64(b.key("base_index"), 0);
  uint64(b.key("count"), 0);
  b.key("ok").boolean(false);
  b.key("dropped").str(reason);
  b.end_object();
  return b.take();
}

std::string snapshot_result(std::string_view run_id, std::string_view agent_id,
                            std::span<const std::shared_ptr<const std::string>> turns,
                            std::uint64_t cursor, RunStatus status, std::uint64_t turns_from) {
  json::Builder b;
  b.begin_object();
  b.key("run_id").str(run_id);
  b.key("agent_id").str(agent_id);
  b.key("turns_so_far").begin_array();
  for (const auto& turn : turns) b.raw(*turn);
  b.end_array();
  if (turns_from != 0) uint64(b.key("turns_from"), turns_from);
  uint64(b.key("cursor"), cursor);
  b.key("status").str(to_string(status));
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

std::string list_result(std::string_view agent_id, std::span<const RunSummary> runs,
                        std::optional<std::string_view> next_before) {
  json::Builder b;
  b.begin_object();
  b.key("agent_id").str(agent_id);
  b.key("runs").begin_array();
  for (const RunSummary& s : runs) {
    b.begin_object();
    b.key("run_id").str(s.run_id);
    b.key("agent_id").str(s.agent_id);
    b.key("intent").str(s.intent);
    b.key("started_at").str(s.started_at);
    if (s.ended_at) b.key("ended_at").str(*s.ended_at);
    b.key("status").str(to_string(s.status));
    uint64(b.key("turn_count"), s.turn_count);
    b.end_object();
  }
  b.end_array();
  if (next_before) b.key("next_before").str(*next_before);
  b.end_object();
  return b.take();
}

std::string trace_page_result(std::string_view run_id, std::string_view agent_id,
                              std::span<const std::string> records, std::size_t cursor,
                              std::optional<std::size_t> next_cursor) {
  json::Builder b;
  b.begin_object();
  b.key("run_id").str(run_id);
  b.key("agent_id").str(agent_id);
  b.key("records").begin_array();
  for (const std::string& record : records) b.raw(record);
  b.end_array();
  uint64(b.key("cursor"), cursor);
  if (next_cursor) uint64(b.key("next_cursor"), *next_cursor);
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

std::string stats_result(std::span<const SubscriberStats> subscribers,
                         const RunCounters& counters, std::span<const ExporterStats> exporters) {
  json::Builder b;
  b.begin_object();
  b.key("subscribers").begin_array();
  for (const SubscriberStats& s : subscribers) {
    b.begin_object();
    b.key("run_id").str(s.run_id);
    b.key("client_id").str(s.client_id);
    uint64(b.key("queued"), s.queued);
    uint64(b.key("dropped"), s.dropped);
    uint64(b.key("frames_written"), s.frames_written);
    uint64(b.key("bytes_written"), s.bytes_written);
    uint64(b.key("last_write_us"), s.last_write_us);
    uint64(b.key("drain_passes"), s.drain_passes);
    uint64(b.key("events_drained"), s.events_drained);
    b.end_object();
  }
  b.end_array();
  // Service-wide fan-out counters (monotonic since start): a caller computes events per hop from
  // the difference of two readings.
  b.key("fanout").begin_object();
  uint64(b.key("drain_hops"), counters.drain_hops);
  uint64(b.key("drain_passes"), counters.drain_passes);
  uint64(b.key("events_drained"), counters.events_drained);
  uint64(b.key("events_dropped"), counters.events_dropped);
  uint64(b.key("gaps_sent"), counters.gaps_sent);
  uint64(b.key("events_published"), counters.events_published);
  uint64(b.key("store_jobs"), counters.store_jobs);
  b.end_object();
  // [ext] Record exporters (car/runs/record_exporter.hpp), in installation order.
  b.key("exporters").begin_array();
  for (const ExporterStats& e : exporters) {
    b.begin_object();
    b.key("name").str(e.name);
    uint64(b.key("offered"), e.offered);
    uint64(b.key("delivered"), e.delivered);
    uint64(b.key("replayed"), e.replayed);
    uint64(b.key("fell_behind"), e.fell_behind);
    uint64(b.key("caught_up"), e.caught_up);
    uint64(b.key("lost"), e.lost);
    uint64(b.key("errors"), e.errors);
    uint64(b.key("queued"), e.queued);
    b.key("behind").boolean(e.behind);
    uint64(b.key("lag"), e.lag);
    if (e.status) {  // only exporters with a link of their own (ExporterStatus)
      b.key("connected").boolean(e.status->connected);
      if (e.status->last_error.empty()) {
        b.key("last_error").null();
      } else {
        b.key("last_error").str(e.status->last_error);
      }
    }
    b.end_object();
  }
  b.end_array();
  b.end_object();
  return b.take();
}

}  // namespace car::runs::detail
