#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "car/export.hpp"
#include "car/json.hpp"

// The records of a run's trace (PROTOCOL.md §7.1) and the pure helpers that build them: no I/O, no
// locks, callable from any thread. Records are kept and stored as compact JSON texts whose first
// member is always "record", so a reader can classify a line by its prefix.
namespace car::runs {

// Live status of a run (PROTOCOL.md §7.1).
enum class RunStatus : std::uint8_t { in_progress, completed, incomplete };
CAR_API std::string_view to_string(RunStatus status);

// Limits applied to one recorded turn (PROTOCOL.md §7.3, §8).
struct CAR_API TurnLimits {
  std::size_t max_string_bytes = 16384;     // longer strings are cut and marked
  std::size_t max_turn_bytes = 256 * 1024;  // compact JSON of the stamped record
};

inline constexpr std::string_view truncation_marker = "\xE2\x80\xA6[truncated]";  // "…[truncated]"
// What replaces `prompt`, `parameters` and `output` of a turn still over max_turn_bytes after
// the string cut (PROTOCOL.md §7.3), for the default limit: "…[truncated: turn exceeded 256 KiB]".
inline constexpr std::string_view oversize_marker =
    "\xE2\x80\xA6[truncated: turn exceeded 256 KiB]";
// The same marker for `limits`: it states the limit in force ("<n> KiB", or "<n> bytes" when the
// limit is not a whole number of KiB), so an embedder's own limit is reported truthfully.
CAR_API std::string oversize_marker_for(const TurnLimits& limits);

// RFC 3339 UTC with milliseconds, e.g. "2026-11-24T10:00:00.123Z".
CAR_API std::string format_timestamp(std::chrono::system_clock::time_point at);

// `name:<slug>` rule of runs.start: ASCII letters and digits lower-cased, every other run of
// characters becomes one '-', '-' trimmed at both ends. Empty when nothing is left.
CAR_API std::string slugify(std::string_view name);

// One path component of the store (PROTOCOL.md §7.7): ASCII letters, digits, '_' and '-' are kept, every
// other byte (including '.', '/', '%') becomes %XX (uppercase hex). The result can never be "",
// ".", ".." or contain '/', so no id escapes its directory. decode_path_component is its inverse
// (nothing for malformed input).
CAR_API std::string encode_path_component(std::string_view id);
CAR_API std::optional<std::string> decode_path_component(std::string_view encoded);

// The longest prefix of valid UTF-8 `text` (already validated) of at most `max_bytes` bytes.
CAR_API std::string_view utf8_prefix(std::string_view text, std::size_t max_bytes);

// Builds the stamped `turn` record from a client's turn object: `record` and `index` first, then
// the client's members in their order except `record` and `index` (a client-sent index is
// ignored), then `verifier_verdict:"not_run"` when the client sent none. Strings longer than the
// limit are cut (PROTOCOL.md §7.3); if the record is still too large, `prompt`, `parameters` and
// `output` (those present) become oversize_marker_for(limits). Returns nothing when it is too
// large even then (turn_too_large).
CAR_API std::optional<std::string> make_turn_record(const json::Value& turn, std::uint64_t index,
                                            const TurnLimits& limits = {});

// The same in two steps, so the costly part runs before the caller takes its lock: the record
// without its stamp (everything after `"index":N`, starting with ',' or '}'), then the stamp.
CAR_API std::optional<std::string> make_turn_tail(const json::Value& turn, const TurnLimits& limits = {});
CAR_API std::string stamp_turn(std::string_view tail, std::uint64_t index);

struct CAR_API StartedFields {
  std::string_view run_id;
  std::string_view agent_id;
  std::string_view client_id;
  std::string_view intent;
  std::optional<std::string_view> outcome_description;
  std::string_view started_at;
};
CAR_API std::string make_started_record(const StartedFields& fields);

// `outcome_json` is the client's AgentOutcome as compact JSON (termination "outcome"), or empty
// for termination "incomplete".
CAR_API std::string make_ended_record(std::string_view outcome_json, std::string_view ended_at);

// Classifies a stored record text by its tag: "started", "turn", "ended", or "" when unknown.
CAR_API std::string_view record_kind(std::string_view record_json);

}  // namespace car::runs
