#include "car/fleet/fleet_trace.hpp"

#include <algorithm>

#include "car/json.hpp"

namespace car::fleet {

std::uint64_t event_cursor(std::string_view record_kind, std::uint64_t offset) {
  if (record_kind == "started" || offset == 0) return 0;
  if (record_kind == "ended") return offset - 1;
  return offset;
}

runs::RunStatus status_after(std::string_view record_json) {
  if (runs::record_kind(record_json) != "ended") return runs::RunStatus::in_progress;
  json::Document doc;
  if (json::parse(record_json, doc) || !doc.IsObject()) return runs::RunStatus::incomplete;
  const json::Document& record = doc;  // const iterators: clang's C++20 rewritten != is ambiguous otherwise
  auto it = record.FindMember("termination");
  bool outcome =
      it != record.MemberEnd() && it->value.IsString() && json::view(it->value) == "outcome";
  return outcome ? runs::RunStatus::completed : runs::RunStatus::incomplete;
}

bool StoredTrace::add(std::uint64_t offset, std::string json, std::uint64_t stream_sequence) {
  last_sequence = std::max(last_sequence, stream_sequence);
  if (ended || offset < records.size()) return false;  // a duplicate
  if (offset > records.size()) {
    if (ahead.size() < max_ahead) ahead.emplace(offset, std::move(json));
    return false;
  }
  auto append = [this](std::string text) {
    if (runs::record_kind(text) == "ended") ended = true;
    records.push_back(std::make_shared<const std::string>(std::move(text)));
  };
  append(std::move(json));
  while (!ended && !ahead.empty() && ahead.begin()->first <= records.size()) {
    auto held = ahead.extract(ahead.begin());
    if (held.key() == records.size()) append(std::move(held.mapped()));
  }
  return true;
}

runs::RunStatus StoredTrace::status() const {
  // Without an ending the host still has the run open (or crashed: the host's own store then
  // reads `incomplete`, which only the host can know).
  return ended ? status_after(*records.back()) : runs::RunStatus::in_progress;
}

std::uint64_t StoredTrace::turn_count() const {
  std::uint64_t n = records.size();
  if (n > 0) n -= 1;  // started
  if (ended && n > 0) n -= 1;
  return n;
}

TracePage page_of(const StoredTrace& trace, std::size_t cursor, std::size_t max_bytes) {
  TracePage page;
  std::size_t bytes = 0;
  for (std::size_t i = cursor; i < trace.records.size(); ++i) {
    const std::string& record = *trace.records[i];
    if (!page.records.empty() && bytes + record.size() > max_bytes) {
      page.next_cursor = i;
      break;
    }
    bytes += record.size();
    page.records.push_back(record);
  }
  return page;
}

TraceSnapshot snapshot_of(const StoredTrace& trace, std::size_t max_bytes) {
  TraceSnapshot snapshot;
  std::uint64_t turns = trace.turn_count();
  std::size_t bytes = 0;
  std::uint64_t first = turns;  // index of the oldest turn taken
  while (first > 0) {
    const std::string& turn = *trace.records[first];  // turn first - 1 is record `first`
    if (first != turns && bytes + turn.size() > max_bytes) break;
    bytes += turn.size();
    --first;
  }
  snapshot.turns_from = first;
  for (std::uint64_t i = first; i < turns; ++i) snapshot.turns.push_back(trace.records[i + 1]);
  return snapshot;
}

}  // namespace car::fleet
