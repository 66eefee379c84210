#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "car/log_record.hpp"

// How car-daemon writes one log record (--log-format, docs/OPERATIONS.md "Logs"). Pure functions
// (no I/O, no clock: the caller passes the time) so the unit tests pin every byte.
//
//   text: 2026-12-03T08:10:00.123Z [car debug] request connection=… method=host.agents id=1 …
//   json: {"time":"2026-12-03T08:10:00.123Z","level":"debug","message":"request",…}
//
// Every record is exactly one line ending in '\n': in text, control characters of the message are
// written as escapes (\n, \t, \u001b, …); in JSON, strings are escaped by the JSON writer and
// bytes that are not UTF-8 become U+FFFD, so every line parses.
namespace car::daemon {

enum class LogLineFormat { text, json };

using LogTime = std::chrono::system_clock::time_point;

std::string format_text_log_line(LogTime time, const LogRecord& record);
std::string format_json_log_line(LogTime time, const LogRecord& record);
std::string format_log_line(LogLineFormat format, LogTime time, const LogRecord& record);

// `text` with every byte that does not belong to a valid UTF-8 sequence replaced by U+FFFD.
std::string repair_utf8(std::string_view text);

}  // namespace car::daemon
