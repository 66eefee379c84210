#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include "car/export.hpp"
#include "car/log_record.hpp"

// Levelled logging through fmt. By default lines go to stderr (never stdout: the stdio transport
// owns it). An embedder may install its own sink: a LogRecordSink (car/log_record.hpp) receives
// each record with its structured fields and formats it itself (time stamp included); the older
// LogSink receives the level and the record as one line of text. Thread-safe.
namespace car {

CAR_API std::string_view to_string(LogLevel level);
CAR_API std::optional<LogLevel> parse_log_level(std::string_view text);

using LogSink = std::function<void(LogLevel, std::string_view line)>;

CAR_API void set_log_level(LogLevel level);
CAR_API LogLevel log_level();
// Replaces the sink (an empty function restores the stderr sink). Call before starting work.
// `line` is describe_log_record(record): the message, then any request fields as ` key=value`.
CAR_API void set_log_sink(LogSink sink);
// The same for a sink that takes whole records (its fields unformatted). Installing either kind
// replaces the other; an empty function restores the stderr sink.
CAR_API void set_log_record_sink(LogRecordSink sink);
// The stderr sink's line for a record: "[car LEVEL] line\n" (for sinks that write it elsewhere).
CAR_API std::string format_log_line(LogLevel level, std::string_view line);

namespace detail {
CAR_API bool log_enabled(LogLevel level);
CAR_API void log_write(LogLevel level, fmt::string_view format, fmt::format_args args);
// Hands a finished record to the sink (no level check: callers check log_enabled first, before
// building anything).
CAR_API void log_record(const LogRecord& record);
}  // namespace detail

template <typename... Args>
void log(LogLevel level, fmt::format_string<Args...> format, Args&&... args) {
  if (!detail::log_enabled(level)) return;
  detail::log_write(level, format, fmt::make_format_args(args...));
}

template <typename... Args>
void log_debug(fmt::format_string<Args...> f, Args&&... a) { log(LogLevel::debug, f, std::forward<Args>(a)...); }
template <typename... Args>
void log_info(fmt::format_string<Args...> f, Args&&... a) { log(LogLevel::info, f, std::forward<Args>(a)...); }
template <typename... Args>
void log_warn(fmt::format_string<Args...> f, Args&&... a) { log(LogLevel::warn, f, std::forward<Args>(a)...); }
template <typename... Args>
void log_error(fmt::format_string<Args...> f, Args&&... a) { log(LogLevel::error, f, std::forward<Args>(a)...); }

}  // namespace car
