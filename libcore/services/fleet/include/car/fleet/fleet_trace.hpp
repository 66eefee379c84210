#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "car/export.hpp"
#include "car/runs/run_record.hpp"

// One run's trace as the gateway reads it back from JetStream (docs/FLEET.md "Gateway"): the
// stored records by offset, and the pure rules that turn them into the replies and events the
// local runs service gives (PROTOCOL.md §7.1, §7.2, §7.4). No I/O; any thread.
namespace car::fleet {

// The runs.trace.event cursor of a record at `offset` (its runs.get_trace offset): `started` 0,
// turn i (offset i + 1) i + 1, `ended` the final turn count (offset - 1).
CAR_API std::uint64_t event_cursor(std::string_view record_kind, std::uint64_t offset);
// The run's status after `record` (an `ended` record: completed for termination "outcome", else
// incomplete; any other record: in_progress).
CAR_API runs::RunStatus status_after(std::string_view record_json);

struct CAR_API StoredTrace {
  std::string host_id;
  std::string agent_id;
  std::string run_id;
  // records[i] is the record at offset i. Only the contiguous prefix from offset 0 is served: a
  // record after a hole (the stream lost one) ends what is served, as a store would.
  std::vector<std::shared_ptr<const std::string>> records;
  // Records read ahead of a hole, by offset: a republished record may be stored after later ones
  // (the broker refused it, then took the next ones of the same round), so the hole may still
  // fill. At most max_ahead are held; beyond that, later ones are dropped (the prefix ends).
  static constexpr std::size_t max_ahead = 4096;
  std::map<std::uint64_t, std::string> ahead;
  std::uint64_t last_sequence = 0;  // highest stream sequence read
  bool ended = false;

  // Adds the record at `offset` (in stream order): appended when it is the next one (with any
  // held records it unblocks), held when it is ahead of a hole; false when nothing was appended.
  bool add(std::uint64_t offset, std::string json, std::uint64_t stream_sequence);
  runs::RunStatus status() const;
  std::uint64_t turn_count() const;
};

// One runs.get_trace page: the records from `cursor`, at most `max_bytes` of them (at least one),
// and `next_cursor` when more remain.
struct CAR_API TracePage {
  std::vector<std::string_view> records;
  std::optional<std::size_t> next_cursor;
};
CAR_API TracePage page_of(const StoredTrace& trace, std::size_t cursor, std::size_t max_bytes);

// A runs.subscribe snapshot: the newest turns of at most `max_bytes` (at least one) and the index
// of the first (`turns_from`); cursor = turn_count().
struct CAR_API TraceSnapshot {
  std::vector<std::shared_ptr<const std::string>> turns;
  std::uint64_t turns_from = 0;
};
CAR_API TraceSnapshot snapshot_of(const StoredTrace& trace, std::size_t max_bytes);

}  // namespace car::fleet
