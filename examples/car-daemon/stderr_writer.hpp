#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "line_queue.hpp"

// Everything car-daemon prints to stderr while it serves — log records and the plain
// `listening ...` / `auth token file: ...` lines — goes through one writer thread, so no loop or
// pool thread ever blocks on stderr. Without it a stderr pipe that nobody reads (a supervisor
// that only waits for `listening`) fills up after 64 KiB and freezes the whole daemon inside a
// log call, SIGTERM included.
//
// Bound and policy: LineQueue's (1024 lines or 1 MiB; when full a new line is dropped and
// counted, and once the writer catches up it reports how many were lost). Lines are written
// whole, in order.
namespace car::daemon {

class StderrWriter {
 public:
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

  LineQueue lines_;
  std::mutex report_mutex_;
  DropReport drop_report_;  // guarded by report_mutex_; empty = the default wording
  std::thread thread_;
};

}  // namespace car::daemon
