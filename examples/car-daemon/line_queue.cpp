#include "line_queue.hpp"

#include <utility>

namespace car::daemon {

bool LineQueue::push(std::string line) {
  {
    std::lock_guard lock(mutex_);
    if (items_.size() >= max_lines || bytes_ + line.size() > max_bytes) {
      dropped_unreported_ += 1;
      return false;
    }
    bytes_ += line.size();
    items_.push_back({std::move(line), false, 0});
  }
  wake_.notify_one();
  return true;
}

void LineQueue::push_control() {
  {
    std::lock_guard lock(mutex_);
    if (control_queued_) return;  // one waiting request covers any number of callers
    control_queued_ = true;
    items_.push_back({{}, true, 0});
  }
  wake_.notify_one();
}

LineQueue::Item LineQueue::take() {
  std::unique_lock lock(mutex_);
  wake_.wait(lock, [this] { return !items_.empty(); });
  Item item = std::move(items_.front());
  items_.pop_front();
  bytes_ -= item.line.size();
  if (item.control) control_queued_ = false;
  item.dropped = std::exchange(dropped_unreported_, 0);
  in_hand_ = true;
  return item;
}

void LineQueue::done() {
  std::lock_guard lock(mutex_);
  in_hand_ = false;
  if (items_.empty()) drained_.notify_all();
}

void LineQueue::flush(std::chrono::milliseconds limit) {
  std::unique_lock lock(mutex_);
  drained_.wait_for(lock, limit, [this] { return items_.empty() && !in_hand_; });
}

}  // namespace car::daemon
