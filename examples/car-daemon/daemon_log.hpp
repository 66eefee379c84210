#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "car/error.hpp"
#include "log_format.hpp"

// Where car-daemon's log records go and how they look (--log-format, --log-file; the sections
// "Logs" of docs/OPERATIONS.md). One per process: main() installs it before the daemon starts.
//
// The library formats nothing: it hands each record (with the per-request fields) to the sink
// installed here, which takes the time stamp, formats the line (log_format.hpp) and queues it on a
// writer thread — StderrWriter, or LogFileWriter with --log-file — so logging never blocks the
// loop. With --log-file, error records are also copied to stderr (in the same format), so a
// daemon that fails to start still says why where it was started.
//
// The plain `listening ...` and `... token file: ...` lines are not log records: they stay plain
// text on stderr in both formats and with --log-file (PROTOCOL.md §9: scripts read them).
namespace car::daemon {

// Installs the sink. With a file, opens it first (append, created 0600); the error says why it
// cannot be opened (nothing is installed then).
std::optional<Error> install_daemon_log(LogLineFormat format,
                                        const std::optional<std::string>& file);

// SIGHUP, on the loop thread; never blocks. With --log-file the lines logged so far go to the
// file open now, which is synced and closed, and the path is opened anew; without, there is
// nothing to reopen (stderr is written as lines come). Logs one info line saying which.
void hangup_daemon_log();

// Waits, at most `limit`, until every line queued so far was written (the exit path).
void flush_daemon_log(std::chrono::milliseconds limit);

}  // namespace car::daemon
