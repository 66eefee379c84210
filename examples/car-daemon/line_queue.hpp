#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>

// The bounded hand-off between the threads that log and a thread that writes (StderrWriter,
// LogFileWriter): producers never wait on I/O, the writer takes one item at a time, in order.
//
// Bound and policy: at most max_lines lines or max_bytes bytes queued. When full a new line is
// dropped and counted; the writer is told the count with the next item it takes, so it can say
// how many were lost. A control item (e.g. "reopen the file") is never dropped and coalesces:
// at most one is queued at a time, so the queue holds at most max_lines + 1 items.
//
// Thread-safety: every member may be called from any thread; take() and done() belong to the one
// writer thread.
namespace car::daemon {

class LineQueue {
 public:
  static constexpr std::size_t max_lines = 1024;
  static constexpr std::size_t max_bytes = 1024 * 1024;

  struct Item {
    std::string line;           // empty for a control item
    bool control = false;
    std::uint64_t dropped = 0;  // lines dropped since the writer last took an item
  };

  // Queues `line`; false (and counted) when the queue is full.
  bool push(std::string line);
  // Queues a control item unless one is already waiting.
  void push_control();

  // Writer thread: waits for the next item. The writer handles it outside the lock, then calls
  // done() so that flush() knows the item is finished.
  Item take();
  void done();

  // Waits until everything queued so far was handled, at most `limit` (the exit path).
  void flush(std::chrono::milliseconds limit);

 private:
  std::mutex mutex_;
  std::condition_variable wake_;     // the writer: items to handle
  std::condition_variable drained_;  // flush(): nothing queued or in hand
  std::deque<Item> items_;
  std::size_t bytes_ = 0;
  std::uint64_t dropped_unreported_ = 0;
  bool control_queued_ = false;
  bool in_hand_ = false;  // the writer holds an item outside the queue
};

}  // namespace car::daemon
