// libFuzzer target for the run-record reader, car::runs::parse_trace, and the JSONL store's index
// built from what it reads (PROTOCOL.md §7.7).
//
// Input: the bytes of one JSONL run file. Invariants checked:
// - parse_trace never crashes; when it finds a run, record 0 is its `started`, every record is a
//   JSON object with a string `record`, `ended` occurs at most once and only last, turn_count is
//   the number of `turn` records, and the status is completed/incomplete exactly when it ended;
// - reading what it kept (the records joined by '\n') gives the same run: the reader is a fixpoint;
// - one reader, one status: the file stored where its ids say, read through a store whose index
//   must first be rebuilt from it, has that same status, turn count and `ended_at` in read(),
//   list() and list_page(), and find() locates it.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "car/json.hpp"
#include "car/runs/run_record.hpp"
#include "car/runs/run_store.hpp"
#include "car/runs/run_trace_reader.hpp"

namespace {

using namespace car::runs;

void check(bool ok) {
  if (!ok) std::abort();
}

bool same(const StoredTrace& a, const StoredTrace& b) {
  return a.records == b.records && a.location.run_id == b.location.run_id &&
         a.location.agent_id == b.location.agent_id &&
         a.location.client_id == b.location.client_id && a.location.ended == b.location.ended &&
         a.summary.status == b.summary.status && a.summary.turn_count == b.summary.turn_count &&
         a.summary.ended_at == b.summary.ended_at && a.summary.started_at == b.summary.started_at &&
         a.summary.intent == b.summary.intent;
}

bool same_summary(const RunSummary& a, const RunSummary& b) {
  return a.run_id == b.run_id && a.status == b.status && a.turn_count == b.turn_count &&
         a.ended_at == b.ended_at && a.started_at == b.started_at && a.intent == b.intent;
}

void check_invariants(const StoredTrace& trace) {
  check(!trace.records.empty());
  check(!trace.location.run_id.empty() && trace.summary.run_id == trace.location.run_id);
  std::size_t turns = 0;
  bool saw_ended = false;
  for (std::size_t i = 0; i < trace.records.size(); ++i) {
    car::json::Document doc;
    check(!car::json::parse(trace.records[i], doc));
    check(doc.IsObject() && doc.HasMember("record") && doc["record"].IsString());
    std::string_view kind = car::json::view(doc["record"]);
    check((i == 0) == (kind == "started"));
    if (kind == "turn") turns += 1;
    if (kind == "ended") {
      check(i + 1 == trace.records.size());
      saw_ended = true;
    }
    check(kind == "started" || kind == "turn" || kind == "ended");
  }
  check(trace.summary.turn_count == turns);
  check(trace.location.ended == saw_ended);
  check(trace.location.ended == (trace.summary.status != RunStatus::in_progress));
  check(trace.location.ended == trace.summary.ended_at.has_value());
}

const std::filesystem::path& work_dir() {
  static const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("carcore-fuzz-run-record-" + std::to_string(::getpid()));
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto trace = parse_trace(text);
  if (!trace) return 0;
  check_invariants(*trace);
  std::string kept;
  for (const auto& r : trace->records) kept += r + "\n";
  auto again = parse_trace(kept);
  check(again && same(*trace, *again));
  if (trace->location.agent_id.empty()) return 0;  // the store never writes such a run

  // Through the store, with an index that has to be rebuilt from this one file.
  const auto& dir = work_dir();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  std::string path = jsonl_run_path(dir.string(), trace->location.agent_id, trace->location.run_id);
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  {
    std::ofstream out(path, std::ios::binary);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
  }
  auto store = make_jsonl_run_store(dir.string());
  auto read = store->read(trace->location.run_id);
  check(read && same(*trace, *read));
  auto found = store->find(trace->location.run_id);
  check(found && found->agent_id == trace->location.agent_id);
  auto listed = store->list(trace->location.agent_id);
  check(listed.size() == 1 && same_summary(listed[0], trace->summary));
  auto page = store->list_page(trace->location.agent_id, 1, std::nullopt);
  check(page && page->runs.size() == 1 && same_summary(page->runs[0], trace->summary));
  check(!page->next_before);
  return 0;
}
