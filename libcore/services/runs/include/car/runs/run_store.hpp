#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "car/export.hpp"
#include "car/runs/run_record.hpp"

// Persistence of run traces (PROTOCOL.md §7.7). The service calls a store only from pool threads
// (Executor::queue_work) — and read() also from a record exporter's own thread while it catches
// up (car/runs/record_exporter.hpp) — never from the loop thread, and never runs two appends for
// the same run at once; appends for different runs, and reads, may run concurrently on several
// threads, so implementations must be thread-safe across runs and must not rely on running on a
// pool thread.
namespace car::runs {

// What runs.list reports for one run (PROTOCOL.md §7.2).
struct CAR_API RunSummary {
  std::string run_id;
  std::string agent_id;
  std::string intent;
  std::string started_at;
  std::optional<std::string> ended_at;
  // From the store alone: completed / incomplete after an `ended` record, otherwise in_progress
  // (the service turns that into incomplete when no live writer holds the run).
  RunStatus status = RunStatus::in_progress;
  std::size_t turn_count = 0;
};

// Where a stored run belongs: enough to authorize and to decide who may write.
struct CAR_API RunLocation {
  std::string run_id;
  std::string agent_id;
  std::string client_id;  // the connection that started it (from the `started` record)
  bool ended = false;     // only filled by read(); find() leaves it false
};

// A run's full trace as stored: every valid record in order (compact JSON texts).
struct CAR_API StoredTrace {
  RunLocation location;
  std::vector<std::string> records;
  RunSummary summary;
};

// One page of runs.list (PROTOCOL.md §7.2 [ext]): newest `started_at` first.
struct CAR_API RunPage {
  std::vector<RunSummary> runs;
  std::optional<std::string> next_before;  // set when older runs remain: pass it as `before`
};

// What the store keeps (PROTOCOL.md §7.7). 0 disables a limit. Open runs are never removed.
struct CAR_API RetentionPolicy {
  std::size_t max_runs_per_agent = 1000;  // the newest are kept
  std::uint32_t max_age_days = 30;        // by `started_at`
};

// Whether a run is still open in this process (pruning must never remove one).
using IsOpenRun = std::function<bool(std::string_view run_id)>;

class CAR_API RunStore {
 public:
  RunStore() = default;
  RunStore(const RunStore&) = delete;
  RunStore& operator=(const RunStore&) = delete;
  virtual ~RunStore() = default;

  // Appends `records` (compact JSON texts, no newline) to the run's log, in order, and returns
  // once they were handed to the OS (write(2); no fsync). On failure nothing of this call is left
  // in the log and the reason is returned (e.g. "No space left on device").
  virtual std::optional<std::string> append(std::string_view agent_id, std::string_view run_id,
                                            std::span<const std::string> records) = 0;

  // Makes everything appended to the run so far durable — on stable storage, surviving power loss
  // — and returns once it is, or the reason it is not. Called after appends, from the same pool
  // job, only when RunConfig::sync is batch. The default does nothing: for stores whose append is
  // already durable.
  virtual std::optional<std::string> sync(std::string_view agent_id, std::string_view run_id);

  // Finds a stored run by id (reads only its `started` record).
  virtual std::optional<RunLocation> find(std::string_view run_id) = 0;

  // Reads a whole run. A torn or corrupt line is skipped.
  virtual std::optional<StoredTrace> read(std::string_view run_id) = 0;

  // Every stored run of `agent_id`, in no particular order.
  virtual std::vector<RunSummary> list(std::string_view agent_id) = 0;

  // At most `limit` (0: no limit) runs of `agent_id` started strictly before the run `before`
  // (absent: from the newest). Nothing when `before` is not a stored run of this agent. The
  // default sorts list(); the JSONL store serves it from its index in O(page).
  virtual std::optional<RunPage> list_page(std::string_view agent_id, std::size_t limit,
                                           std::optional<std::string_view> before);

  // Deletes the runs `policy` does not keep (of `agent_id`, or of every agent), never one for
  // which `is_open` is true; returns how many were deleted. The default keeps everything.
  virtual std::size_t prune(std::optional<std::string_view> agent_id, const RetentionPolicy& policy,
                            const IsOpenRun& is_open, std::chrono::system_clock::time_point now);
};

// The default store: `<state_dir>/runs/<agent>/<run_id>.jsonl`, one record per line, both path
// components encoded with encode_path_component. An encoded component longer than 200 bytes (file
// names are limited to 255) keeps its first 135 bytes and ends in '~' + the SHA-256 of the id in
// hex; '~' never occurs in an encoded component, so this cannot collide with a short name.
// Directories are created on first append (0700), files with mode 0600. An index beside the files
// (`runs/.index/by-id/<run>` locations, `runs/<agent>/.summaries` logs) makes find, list_page and
// prune cost O(1)/O(page) whatever the store holds; the JSONL files stay the source of truth and
// the index is rebuilt from them when it is missing or found corrupt.
CAR_API std::shared_ptr<RunStore> make_jsonl_run_store(std::string state_dir);

// The path a JSONL store under `state_dir` uses for a run (exposed for tests and tools).
CAR_API std::string jsonl_run_path(std::string_view state_dir, std::string_view agent_id,
                           std::string_view run_id);

}  // namespace car::runs
