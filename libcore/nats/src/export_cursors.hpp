#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

// Private to the nats layer: the JetStream exporter's per-run export cursors on disk, one file per
// run not fully exported yet, named by the run id (encode_subject_token: only [A-Za-z0-9_%-]),
// holding the next offset to publish as decimal text. Written to a temporary file and renamed,
// so a crash leaves the old or the new cursor, never a torn one. A cursor that lags behind the
// broker only makes a restart republish records the stream's duplicate window drops; it is never
// ahead (it advances after acknowledgements).
//
// Rewriting a file after every acknowledged round would cost more than the publishes (a write
// and a rename per run and round), so an advance is written at most every `write_interval` per
// run, and always when the file is created, when the run finishes and by flush(): after a crash
// the cursor is at most that far behind, and the stream's duplicate window drops the records
// republished from it.
//
// Bounded: entries exist only for runs whose `ended` record is not acknowledged yet.
// Threads: one thread (the exporter's).
namespace car::nats::detail {

class ExportCursors {
 public:
  static constexpr std::chrono::milliseconds write_interval{250};

  // `dir` must exist.
  explicit ExportCursors(std::string dir) : dir_(std::move(dir)) {}

  // Reads every cursor file; a file that does not parse is logged and skipped. Returns the map.
  const std::map<std::string, std::uint64_t>& load();

  std::optional<std::uint64_t> next(std::string_view run_id) const;
  // Sets the run's next offset (creating its file); an error text when it cannot be written (the
  // in-memory cursor is set anyway: the export goes on, a restart republishes more).
  // `durable`: write it now, whatever the interval.
  std::optional<std::string> set(std::string_view run_id, std::uint64_t next_offset,
                                 bool durable = false);
  // Writes every advance not written yet (at shutdown).
  void flush();
  // The run is fully exported: its file goes.
  void finish(std::string_view run_id);

  std::size_t size() const { return cursors_.size(); }

 private:
  struct Cursor {
    std::uint64_t next = 0;
    std::uint64_t written = 0;  // what the file holds
    std::chrono::steady_clock::time_point written_at;
  };

  std::string path_of(std::string_view run_id) const;
  std::optional<std::string> write(const std::string& run_id, Cursor& cursor);

  std::string dir_;
  std::map<std::string, Cursor, std::less<>> cursors_;
  std::map<std::string, std::uint64_t> loaded_;
};

}  // namespace car::nats::detail
