#pragma once

#include <optional>
#include <string_view>

#include "car/export.hpp"
#include "car/runs/run_store.hpp"

// The one reader of a stored run (PROTOCOL.md §7.7): runs.get_trace, runs.subscribe, runs.list and
// the store's index rebuild all see a run through it, so a run has one status everywhere.
namespace car::runs {

// Parses the text of a JSONL run file. The first valid line must be a `started` record (else:
// nothing). Lines that are torn, corrupt, not objects with a string `record`, of an unknown kind,
// or after the first `ended` record are skipped. The summary counts the kept turns and takes its
// status and `ended_at` from the kept `ended` record (in_progress without one). Pure; any thread.
CAR_API std::optional<StoredTrace> parse_trace(std::string_view text);

}  // namespace car::runs
