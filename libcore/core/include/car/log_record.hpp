#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "car/export.hpp"

// One log record as the library hands it to a record sink (car/log.hpp: set_log_record_sink):
// the level, the message, and — on the per-request line only — structured fields a formatter may
// print as it likes (key=value, JSON members, ...). The record carries no time stamp: whoever
// formats it takes the time, so one sink decides one clock and one format for every line.
namespace car {

enum class LogLevel : std::uint8_t { trace, debug, info, warn, error, off };

// A record's views are valid only during the sink call that receives it; copy what you keep.
struct LogRecord {
  LogLevel level = LogLevel::info;
  std::string_view message;

  // Per-request fields (the debug line the dispatcher writes when a request or notification is
  // finished; message "request" or "notification"). Empty / nullopt = absent. Never a token and
  // never params: only what is listed here.
  std::string_view connection;             // Connection::client_id() of the caller
  std::string_view method;                 // at most 256 bytes (longer names are cut)
  std::string_view id_json;                // the request id as JSON text; empty for a notification
  std::optional<std::int64_t> duration_us; // from dispatch to the reply being queued
  std::optional<int> error_code;           // the JSON-RPC error answered, if any

  bool has_fields() const {
    return !connection.empty() || !method.empty() || !id_json.empty() || duration_us ||
           error_code;
  }
};

// Receives every record that passes the level; called under the library's log lock (one call at
// a time, from whichever thread logged), so it must not log itself and should not block: hand the
// line to a writer thread (car-daemon's StderrWriter is one way).
using LogRecordSink = std::function<void(const LogRecord&)>;

// The message followed by the fields present as ` key=value` (connection, method, id,
// duration_us, error_code, in that order): how the record reads as one line of plain text. The
// stderr sink and sinks installed with the older set_log_sink() get this text.
CAR_API std::string describe_log_record(const LogRecord& record);

}  // namespace car
