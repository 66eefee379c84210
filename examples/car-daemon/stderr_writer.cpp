#include "stderr_writer.hpp"

#include <unistd.h>

#include <cerrno>
#include <string_view>

#include <fmt/format.h>

namespace car::daemon {
namespace {

// Writes all of `text` to fd 2, retrying short writes and EINTR. Blocks (this thread only).
void write_all(std::string_view text) {
  while (!text.empty()) {
    ssize_t n = ::write(STDERR_FILENO, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // stderr closed or broken: nothing sensible left to do
    text.remove_prefix(static_cast<std::size_t>(n));
  }
}

}  // namespace

StderrWriter::StderrWriter() : thread_([this] { run(); }) {}

StderrWriter& StderrWriter::process() {
  static StderrWriter* writer = new StderrWriter();  // leaked on purpose, see the header
  return *writer;
}

void StderrWriter::write(std::string line) { lines_.push(std::move(line)); }

void StderrWriter::flush(std::chrono::milliseconds limit) { lines_.flush(limit); }

void StderrWriter::set_drop_report(DropReport report) {
  std::lock_guard lock(report_mutex_);
  drop_report_ = std::move(report);
}

void StderrWriter::run() {
  while (true) {
    LineQueue::Item item = lines_.take();
    // Formatting a notice may throw (bad_alloc); the line is lost then, never the thread
    // (an exception leaving it would end the process).
    try {
      if (item.dropped != 0) {
        DropReport report;
        {
          std::lock_guard lock(report_mutex_);
          report = drop_report_;
        }
        write_all(report ? report(item.dropped)
                         : fmt::format("[car warn] {} stderr line(s) dropped: stderr was not being "
                                       "read\n",
                                       item.dropped));
      }
      write_all(item.line);
    } catch (...) {
    }
    lines_.done();
  }
}

}  // namespace car::daemon
