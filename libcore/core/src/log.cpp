#include "car/log.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <iterator>
#include <mutex>

namespace car {
namespace {

std::atomic<LogLevel> g_level{LogLevel::info};
std::mutex g_sink_mutex;
LogRecordSink g_sink;  // guarded by g_sink_mutex; empty = stderr

}  // namespace

std::string_view to_string(LogLevel level) {
  switch (level) {
    case LogLevel::trace: return "trace";
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warn: return "warn";
    case LogLevel::error: return "error";
    case LogLevel::off: return "off";
  }
  return "?";
}

std::optional<LogLevel> parse_log_level(std::string_view text) {
  for (auto level : {LogLevel::trace, LogLevel::debug, LogLevel::info, LogLevel::warn,
                     LogLevel::error, LogLevel::off}) {
    if (to_string(level) == text) return level;
  }
  return std::nullopt;
}

void set_log_level(LogLevel level) { g_level.store(level, std::memory_order_relaxed); }
LogLevel log_level() { return g_level.load(std::memory_order_relaxed); }

void set_log_sink(LogSink sink) {
  if (!sink) {
    set_log_record_sink({});
    return;
  }
  // The older sink sees each record as one line of text, request fields included.
  set_log_record_sink([sink = std::move(sink)](const LogRecord& record) {
    if (record.has_fields()) {
      sink(record.level, describe_log_record(record));
    } else {
      sink(record.level, record.message);
    }
  });
}

void set_log_record_sink(LogRecordSink sink) {
  std::lock_guard lock(g_sink_mutex);
  g_sink = std::move(sink);
}

std::string describe_log_record(const LogRecord& record) {
  std::string out(record.message);
  auto add = [&out](std::string_view key, const auto& value) {
    fmt::format_to(std::back_inserter(out), " {}={}", key, value);
  };
  if (!record.connection.empty()) add("connection", record.connection);
  if (!record.method.empty()) add("method", record.method);
  if (!record.id_json.empty()) add("id", record.id_json);
  if (record.duration_us) add("duration_us", *record.duration_us);
  if (record.error_code) add("error_code", *record.error_code);
  return out;
}

std::string format_log_line(LogLevel level, std::string_view line) {
  return fmt::format("[car {}] {}\n", to_string(level), line);
}

namespace detail {

bool log_enabled(LogLevel level) {
  return level >= g_level.load(std::memory_order_relaxed) && level != LogLevel::off;
}

void log_write(LogLevel level, fmt::string_view format, fmt::format_args args) {
  std::string line;
  try {
    line = fmt::vformat(format, args);
  } catch (const std::exception& e) {
    line = fmt::format("(bad log format: {})", e.what());
  }
  LogRecord record;
  record.level = level;
  record.message = line;
  log_record(record);
}

void log_record(const LogRecord& record) {
  std::lock_guard lock(g_sink_mutex);
  if (g_sink) {
    g_sink(record);
    return;
  }
  // One fwrite per line so concurrent lines never interleave mid-line.
  std::string out =
      format_log_line(record.level, record.has_fields() ? describe_log_record(record)
                                                        : std::string(record.message));
  std::fwrite(out.data(), 1, out.size(), stderr);
}

}  // namespace detail
}  // namespace car
