#pragma once

#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "car/executor.hpp"
#include "car/export.hpp"

// A deterministic Executor for tests: a fake clock, and a "loop" that runs only when the test
// drives it. Posts, pool jobs and timers may be issued from any thread (they queue under a mutex);
// driving functions must be called on the thread that constructed it (its "loop thread").
namespace car::testing {

class CAR_API ManualExecutor final : public Executor {
 public:
  ManualExecutor();

  void post(Task task) override;
  void queue_work(Task work, Task after) override;
  TimerId start_timer(std::chrono::milliseconds delay, Task fn) override;
  void cancel_timer(TimerId id) override;
  Clock::time_point now() const override;
  bool in_loop_thread() const override;

  // When true (the default), run_until_idle() also runs queued pool jobs. Turn it off to hold pool
  // jobs and inspect batching (then call run_pool_jobs()).
  void set_auto_pool(bool on) { auto_pool_ = on; }

  // Runs posted tasks, including those they post, until none is left. Returns how many ran.
  std::size_t run_ready();
  // Runs every queued pool job's work on this thread and posts its `after`. Returns the count.
  std::size_t run_pool_jobs();
  // run_ready and (with auto pool) run_pool_jobs until nothing moves. Returns tasks + jobs run.
  std::size_t run_until_idle();
  // Moves the fake clock forward, firing due timers in deadline order (running ready tasks between
  // them), then runs until idle.
  void advance(std::chrono::milliseconds delta);

  std::size_t pending_pool_jobs() const;
  std::size_t pending_timers() const;

 private:
  struct Job {
    Task work;
    Task after;
  };
  std::thread::id loop_thread_;
  mutable std::mutex mutex_;
  std::deque<Task> posted_;
  std::deque<Job> pool_;
  // Ordered by (deadline, id) so equal deadlines fire in start order.
  std::map<std::pair<Clock::time_point, TimerId>, Task> timers_;
  Clock::time_point now_;
  TimerId next_timer_id_ = 1;
  bool auto_pool_ = true;
};

}  // namespace car::testing
