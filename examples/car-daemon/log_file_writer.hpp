#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <thread>

#include "line_queue.hpp"

#include "car/log_record.hpp"
#include "car/result.hpp"

// car-daemon's --log-file: the log records, appended to a file by a writer thread of their own,
// so no loop or pool thread ever waits on the disk (or on a file system that hangs).
//
// Bound and policy, LineQueue's as for StderrWriter: at most 1024 lines or 1 MiB queued; when
// full a new line is dropped and counted, and once the writer catches up it writes one warning
// saying how many were lost. Lines are written whole, in order.
//
// reopen() is logrotate's half of the contract (SIGHUP): the lines queued before it go to the
// file that is open now, which is then synced and closed, and the path is opened anew (created
// 0600 if it is gone) for every line after it. It only queues the request, so the loop may call
// it. If the path cannot be opened the writer keeps the old file and writes the error into it.
namespace car::daemon {

class LogFileWriter {
 public:
  // Formats a line the writer writes on its own (drop reports, reopen failures) in the log's
  // format. Called on the writer thread.
  using Notice = std::function<std::string(LogLevel, std::string_view message)>;

  // Opens `path` for appending (O_APPEND | O_CREAT, mode 0600, close-on-exec) on the calling
  // thread and starts the writer; an error names the path and the reason. The writer is never
  // destroyed (like StderrWriter: the exit must not wait on a stuck write; flush() first).
  static Result<LogFileWriter*> open(std::string path, Notice notice);

  LogFileWriter(const LogFileWriter&) = delete;
  LogFileWriter& operator=(const LogFileWriter&) = delete;

  // Any thread; never blocks on I/O. `line` should end with '\n'.
  void write(std::string line);
  // Any thread; never blocks on I/O. Requests coalesce: one pending reopen at a time.
  void reopen();
  // Waits until everything queued so far was written, at most `limit` (the exit path).
  void flush(std::chrono::milliseconds limit);

  const std::string& path() const { return path_; }

 private:
  LogFileWriter(std::string path, int fd, Notice notice);
  ~LogFileWriter() = default;
  void run();
  void reopen_now();  // writer thread only

  const std::string path_;
  const Notice notice_;
  int fd_;  // writer thread only, after construction

  LineQueue items_;  // lines, and a control item for each pending reopen
  std::thread thread_;
};

}  // namespace car::daemon
