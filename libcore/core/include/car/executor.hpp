#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include "car/export.hpp"

// Executor is how the core reaches an event loop without depending on one: post work to the loop
// thread, run work on a thread pool, and keep timers. UvExecutor implements it on libuv;
// ManualExecutor implements it deterministically (fake clock) for tests.
namespace car {

class CAR_API Executor {
 public:
  using Task = std::function<void()>;
  using TimerId = std::uint64_t;
  using Clock = std::chrono::steady_clock;

  Executor() = default;
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;
  virtual ~Executor() = default;

  // Runs `task` on the loop thread, after the current callback. Any thread. Tasks posted from one
  // thread run in the order they were posted.
  virtual void post(Task task) = 0;

  // Runs `work` on a pool thread, then `after` on the loop thread. Any thread. `after` always runs
  // (also when the executor is shutting down), so owners can release what `work` used.
  virtual void queue_work(Task work, Task after) = 0;

  // Calls `fn` on the loop thread once `delay` has passed. Any thread. Returns an id for cancel.
  virtual TimerId start_timer(std::chrono::milliseconds delay, Task fn) = 0;

  // Cancels a timer. Any thread. Called on the loop thread before the timer fired, the callback is
  // guaranteed not to run; from another thread it may race with a firing timer, so callbacks must
  // check their own state.
  virtual void cancel_timer(TimerId id) = 0;

  virtual Clock::time_point now() const = 0;

  // True when called on the loop thread.
  virtual bool in_loop_thread() const = 0;
};

}  // namespace car
