#include "car/log.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>

namespace car {
namespace {

std::atomic<LogLevel> g_level{LogLevel::info};
std::mutex g_sink_mutex;
LogSink g_sink;  // guarded by g_sink_mutex; empty = stderr

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
  std::lock_guard lock(g_sink_mutex);
  g_sink = std::move(sink);
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
  std::lock_guard lock(g_sink_mutex);
  if (g_sink) {
    g_sink(level, line);
    return;
  }
  // One fwrite per line so concurrent lines never interleave mid-line.
  std::string out = format_log_line(level, line);
  std::fwrite(out.data(), 1, out.size(), stderr);
}

}  // namespace detail
}  // namespace car
