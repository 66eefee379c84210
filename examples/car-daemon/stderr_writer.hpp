#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

// Everything car-daemon prints to stderr while it serves — log records and the plain
// `listening ...` / `auth token file: ...` lines — goes through one writer thread, so no loop or
// pool thread ever blocks on stderr. Without it a stderr pipe that nobody reads (a supervisor
// that only waits for `listening`) fills up after 64 KiB and freezes the whole daemon inside a
// log call, SIGTERM included.
//
// Bound: 1024 lines or 1 MiB queued. When full, a new line is dropped and counted; once the
// writer catches up it reports how many were lost. Lines are written whole, in order.
namespace car::daemon {

class StderrWriter {
 public:
  static constexpr std::size_t max_lines = 1024;
  static constexpr std::size_t max_bytes = 1024 * 1024;

  // The process's writer, started on first use. Never destroyed: at exit its thread may be stuck
  // in write() on a stderr nobody reads, and the exit must not wait for it (flush() first).
  static StderrWriter& process();

  StderrWriter(const StderrWriter&) = delete;
  StderrWriter& operator=(const StderrWriter&) = delete;

  // Any thread; never blocks on I/O. `line` should end with '\n'.
  void write(std::string line);
  // Waits until everything queued so far was written, at most `limit` (the exit path).
  void flush(std::chrono::milliseconds limit);
  // How the drop report reads (default "[car warn] N stderr line(s) dropped: ..."): the log's
  // format (daemon_log.cpp). Any thread; called on the writer thread.
  using DropReport = std::function<std::string(std::uint64_t lost)>;
  void set_drop_report(DropReport report);

 private:
  StderrWriter();
  ~StderrWriter() = default;
  void run();

  std::mutex mutex_;
  std::condition_variable wake_;     // the writer: lines to write
  std::condition_variable drained_;  // flush(): the queue became empty
  std::deque<std::string> lines_;
  std::size_t bytes_ = 0;
  std::uint64_t dropped_unreported_ = 0;  // dropped since the writer last reported
  DropReport drop_report_;                // guarded by mutex_; empty = the default wording
  bool writing_ = false;  // the writer holds a line outside the queue
  std::thread thread_;
};

}  // namespace car::daemon
