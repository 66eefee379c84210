#include "car/testing/manual_executor.hpp"

#include <vector>

namespace car::testing {

ManualExecutor::ManualExecutor()
    : loop_thread_(std::this_thread::get_id()), now_(Clock::time_point{} + std::chrono::hours(1)) {}

void ManualExecutor::post(Task task) {
  std::lock_guard lock(mutex_);
  posted_.push_back(std::move(task));
}

void ManualExecutor::queue_work(Task work, Task after) {
  std::lock_guard lock(mutex_);
  pool_.push_back({std::move(work), std::move(after)});
}

Executor::TimerId ManualExecutor::start_timer(std::chrono::milliseconds delay, Task fn) {
  std::lock_guard lock(mutex_);
  TimerId id = next_timer_id_++;
  timers_.emplace(std::make_pair(now_ + delay, id), std::move(fn));
  return id;
}

void ManualExecutor::cancel_timer(TimerId id) {
  std::lock_guard lock(mutex_);
  for (auto it = timers_.begin(); it != timers_.end(); ++it) {
    if (it->first.second == id) {
      timers_.erase(it);
      return;
    }
  }
}

Executor::Clock::time_point ManualExecutor::now() const {
  std::lock_guard lock(mutex_);
  return now_;
}

bool ManualExecutor::in_loop_thread() const { return std::this_thread::get_id() == loop_thread_; }

std::size_t ManualExecutor::run_ready() {
  std::size_t ran = 0;
  for (;;) {
    Task task;
    {
      std::lock_guard lock(mutex_);
      if (posted_.empty()) return ran;
      task = std::move(posted_.front());
      posted_.pop_front();
    }
    task();
    ++ran;
  }
}

std::size_t ManualExecutor::run_pool_jobs() {
  std::deque<Job> jobs;
  {
    std::lock_guard lock(mutex_);
    jobs.swap(pool_);
  }
  for (auto& job : jobs) {
    job.work();
    post(std::move(job.after));
  }
  return jobs.size();
}

std::size_t ManualExecutor::run_until_idle() {
  std::size_t total = 0;
  for (;;) {
    std::size_t moved = run_ready();
    if (auto_pool_) moved += run_pool_jobs();
    total += moved;
    if (moved == 0) return total;
  }
}

void ManualExecutor::advance(std::chrono::milliseconds delta) {
  Clock::time_point target;
  {
    std::lock_guard lock(mutex_);
    target = now_ + delta;
  }
  for (;;) {
    run_until_idle();
    Task due;
    {
      std::lock_guard lock(mutex_);
      if (timers_.empty() || timers_.begin()->first.first > target) break;
      auto it = timers_.begin();
      now_ = it->first.first;
      due = std::move(it->second);
      timers_.erase(it);
    }
    due();
  }
  {
    std::lock_guard lock(mutex_);
    now_ = target;
  }
  run_until_idle();
}

std::size_t ManualExecutor::pending_pool_jobs() const {
  std::lock_guard lock(mutex_);
  return pool_.size();
}

std::size_t ManualExecutor::pending_timers() const {
  std::lock_guard lock(mutex_);
  return timers_.size();
}

}  // namespace car::testing
