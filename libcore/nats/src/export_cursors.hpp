#pragma once

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
// Bounded: entries exist only for runs whose `ended` record is not acknowledged yet.
// Threads: one thread (the exporter's).
namespace car::nats::detail {

class ExportCursors {
 public:
  // `dir` must exist.
  explicit ExportCursors(std::string dir) : dir_(std::move(dir)) {}

  // Reads every cursor file; a file that does not parse is logged and skipped. Returns the map.
  const std::map<std::string, std::uint64_t>& load();

  std::optional<std::uint64_t> next(std::string_view run_id) const;
  // Sets the run's next offset (creating its file); an error text when it cannot be written (the
  // in-memory cursor is set anyway: the export goes on, a restart republishes more).
  std::optional<std::string> set(std::string_view run_id, std::uint64_t next_offset);
  // The run is fully exported: its file goes.
  void finish(std::string_view run_id);

  std::size_t size() const { return cursors_.size(); }

 private:
  std::string path_of(std::string_view run_id) const;

  std::string dir_;
  std::map<std::string, std::uint64_t, std::less<>> cursors_;
  std::map<std::string, std::uint64_t> loaded_;
};

}  // namespace car::nats::detail
