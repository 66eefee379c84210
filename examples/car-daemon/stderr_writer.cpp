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

void StderrWriter::write(std::string line) {
  {
    std::lock_guard lock(mutex_);
    if (lines_.size() >= max_lines || bytes_ + line.size() > max_bytes) {
      dropped_unreported_ += 1;
      return;
    }
    bytes_ += line.size();
    lines_.push_back(std::move(line));
  }
  wake_.notify_one();
}

void StderrWriter::flush(std::chrono::milliseconds limit) {
  std::unique_lock lock(mutex_);
  drained_.wait_for(lock, limit, [this] { return lines_.empty() && !writing_; });
}

void StderrWriter::set_drop_report(DropReport report) {
  std::lock_guard lock(mutex_);
  drop_report_ = std::move(report);
}

void StderrWriter::run() {
  std::unique_lock lock(mutex_);
  while (true) {
    wake_.wait(lock, [this] { return !lines_.empty(); });
    std::string line = std::move(lines_.front());
    lines_.pop_front();
    bytes_ -= line.size();
    std::uint64_t lost = dropped_unreported_;
    dropped_unreported_ = 0;
    DropReport report = lost != 0 ? drop_report_ : DropReport();
    writing_ = true;
    lock.unlock();
    if (lost != 0 && report) {
      write_all(report(lost));
    } else if (lost != 0) {
      write_all(fmt::format("[car warn] {} stderr line(s) dropped: stderr was not being read\n",
                            lost));
    }
    write_all(line);
    lock.lock();
    writing_ = false;
    if (lines_.empty()) drained_.notify_all();
  }
}

}  // namespace car::daemon
