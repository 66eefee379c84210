#pragma once

#include <chrono>
#include <cstddef>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "car/runs/run_store.hpp"

// Private to the runs layer: the on-disk index of the JSONL store (PROTOCOL.md §7.7), so that
// locating a run, an idempotency lookup and a runs.list page cost O(1)/O(page) however many runs
// and agents are stored. The JSONL files stay the source of truth; the index is derived from them:
//
// - `runs/.index/by-id/<run>`: the run's agent and client, written before its `started` line, so
//   find() is one open (a miss is one failed open) plus a read of the run's first line to verify.
// - `runs/<agent>/.summaries`: an append-only log of `start`, `end` and `drop` lines per agent, so
//   a page is read from memory once the log is loaded; parsed logs of at most 64 agents are kept
//   (least recently used dropped first). A log is compacted when it holds more than twice the
//   lines it needs.
// - `runs/.index/format`: written once the index covers every file. Missing (a state directory
//   from before the index, or a deleted index) ⇒ the whole index is rebuilt from the files on the
//   first store call; a corrupt by-id entry is repaired by a one-off scan for that run; a corrupt
//   or missing agent log is rebuilt from that agent's directory.
//
// Threads: every member may be called from any pool thread; one mutex guards the logs and the
// cache (file reads of a page's open runs happen outside it).
namespace car::runs::detail {

class RunIndex {
 public:
  explicit RunIndex(std::string runs_root);

  // Before the run's `started` record is appended.
  std::optional<std::string> note_started(const RunLocation& location, const RunSummary& summary);
  // After turns were appended.
  void note_turns(std::string_view run_id, std::size_t count);
  // After the run's `ended` record was appended.
  void note_ended(std::string_view agent_id, std::string_view run_id, RunStatus status,
                  std::string_view ended_at);
  // The run's `started` could not be written: forget it.
  void note_removed(std::string_view agent_id, std::string_view run_id);

  // The run's location, verified against its file.
  std::optional<RunLocation> find(std::string_view run_id);
  // See RunStore::list_page.
  std::optional<RunPage> page(std::string_view agent_id, std::size_t limit,
                              std::optional<std::string_view> before);
  // See RunStore::prune.
  std::size_t prune(std::optional<std::string_view> agent_id, const RetentionPolicy& policy,
                    const IsOpenRun& is_open, std::chrono::system_clock::time_point now);

  // Where the run's by-id entry lives (a sync of the run covers it: without it, a run whose file
  // survived a power loss could not be found).
  std::string entry_path(std::string_view run_id) const { return by_id_path(run_id); }

  // Counters for tests and the benchmark.
  std::size_t full_rebuilds() const;
  std::size_t agent_rebuilds() const;

  static constexpr std::size_t max_cached_agents = 64;

 private:
  struct Entry {
    RunSummary summary;
    bool ended = false;
  };
  using StartKey = std::pair<std::string, std::string>;  // (started_at, run_id)
  struct AgentRuns {
    std::map<StartKey, Entry> by_start;
    std::unordered_map<std::string, std::string> started_at_of;  // run_id -> started_at
    std::size_t lines = 0;                                       // in the log
  };
  struct Cached {
    AgentRuns runs;
    std::list<std::string>::iterator lru;
  };

  void ensure_ready_locked();
  void rebuild_all_locked();
  // Reads (or rebuilds) the log of the agent directory `key` (its path component).
  AgentRuns load_agent_locked(const std::string& key);
  AgentRuns rebuild_agent_locked(const std::string& key);
  AgentRuns* cached_locked(const std::string& key);  // loads and caches
  void compact_locked(const std::string& key, AgentRuns& runs);
  void drop_locked(const std::string& key, AgentRuns& runs, const std::string& run_id);
  std::optional<RunLocation> scan_for(std::string_view run_id);
  std::optional<RunLocation> verify(std::string_view run_id, std::string_view agent_id);
  std::size_t prune_agent(const std::string& key, const RetentionPolicy& policy,
                          const IsOpenRun& is_open, std::chrono::system_clock::time_point now);

  std::string agent_dir(const std::string& key) const;
  std::string log_path(const std::string& key) const;
  std::string by_id_path(std::string_view run_id) const;

  const std::string root_;
  mutable std::mutex mutex_;
  bool ready_ = false;
  std::list<std::string> lru_;  // most recent first
  std::unordered_map<std::string, Cached> agents_;
  std::unordered_map<std::string, std::size_t> open_turns_;  // turns of runs started here, open
  std::size_t full_rebuilds_ = 0;
  std::size_t agent_rebuilds_ = 0;
};

}  // namespace car::runs::detail
