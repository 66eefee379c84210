#include "daemon_log.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "car/log.hpp"
#include "log_file_writer.hpp"
#include "stderr_writer.hpp"

namespace car::daemon {
namespace {

// Set once by install_daemon_log, before any other thread logs; read-only afterwards.
LogFileWriter* g_file = nullptr;

}  // namespace

std::optional<Error> install_daemon_log(LogLineFormat format,
                                        const std::optional<std::string>& file) {
  auto& err = StderrWriter::process();
  // The writers' own lines (drop reports, a failed reopen) look like every other line.
  auto notice = [format](LogLevel level, std::string_view message) {
    LogRecord record;
    record.level = level;
    record.message = message;
    return format_log_line(format, std::chrono::system_clock::now(), record);
  };
  err.set_drop_report([notice](std::uint64_t lost) {
    return notice(LogLevel::warn,
                  fmt::format("{} stderr line(s) dropped: stderr was not being read", lost));
  });
  if (file) {
    auto opened = LogFileWriter::open(*file, notice);
    if (!opened) return opened.error();
    g_file = opened.value();
  }
  LogFileWriter* to_file = g_file;
  set_log_record_sink([format, to_file, &err](const LogRecord& record) {
    // The time is taken here, where the line is made: one clock for every line.
    std::string line = format_log_line(format, std::chrono::system_clock::now(), record);
    if (to_file == nullptr) {
      err.write(std::move(line));
      return;
    }
    if (record.level >= LogLevel::error) err.write(line);
    to_file->write(std::move(line));
  });
  return std::nullopt;
}

void hangup_daemon_log() {
  if (g_file != nullptr) {
    g_file->reopen();
    // Queued after the request: the first line of the new file.
    log_info("SIGHUP: reopened the log file {}", g_file->path());
  } else {
    log_info("SIGHUP: logs flushed (no --log-file to reopen)");
  }
}

void flush_daemon_log(std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  if (g_file != nullptr) g_file->flush(limit);
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  StderrWriter::process().flush(std::max(left, std::chrono::milliseconds(0)));
}

}  // namespace car::daemon
