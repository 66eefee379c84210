#include "log_file_writer.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace car::daemon {
namespace {

int open_for_append(const std::string& path) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

// Writes all of `text` to `fd`, retrying short writes and EINTR. Blocks (the writer thread only).
void write_all(int fd, std::string_view text) {
  while (!text.empty()) {
    ssize_t n = ::write(fd, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // a full or broken disk: the line is lost, the daemon carries on
    text.remove_prefix(static_cast<std::size_t>(n));
  }
}

}  // namespace

Result<LogFileWriter*> LogFileWriter::open(std::string path, Notice notice) {
  int fd = open_for_append(path);
  if (fd < 0) return Error::internal(fmt::format("--log-file {}: {}", path, std::strerror(errno)));
  return new LogFileWriter(std::move(path), fd, std::move(notice));  // never freed, see the header
}

LogFileWriter::LogFileWriter(std::string path, int fd, Notice notice)
    : path_(std::move(path)), notice_(std::move(notice)), fd_(fd), thread_([this] { run(); }) {}

void LogFileWriter::write(std::string line) { items_.push(std::move(line)); }

// A reopen is a control item: never dropped, and one pending request covers any number of
// signals, so the queue stays bounded.
void LogFileWriter::reopen() { items_.push_control(); }

void LogFileWriter::flush(std::chrono::milliseconds limit) { items_.flush(limit); }

void LogFileWriter::reopen_now() {
  // The lines before the request are on their way to the old file: make them durable before it
  // is let go (logrotate may compress it next).
  ::fdatasync(fd_);
  int fd = open_for_append(path_);
  if (fd < 0) {
    write_all(fd_, notice_(LogLevel::error,
                           fmt::format("cannot reopen the log file {}: {}; still writing here",
                                       path_, std::strerror(errno))));
    return;
  }
  ::close(fd_);
  fd_ = fd;
}

void LogFileWriter::run() {
  while (true) {
    LineQueue::Item item = items_.take();
    // Formatting a notice may throw (bad_alloc); the line is lost then, never the thread
    // (an exception leaving it would end the process).
    try {
      if (item.dropped != 0) {
        write_all(fd_, notice_(LogLevel::warn,
                               fmt::format("{} log line(s) dropped: the log file could not keep up",
                                           item.dropped)));
      }
      if (item.control) {
        reopen_now();
      } else {
        write_all(fd_, item.line);
      }
    } catch (...) {
    }
    items_.done();
  }
}

}  // namespace car::daemon
