#pragma once

#include <uv.h>

#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "car/executor.hpp"
#include "car/export.hpp"

// Executor on a libuv loop. Construct and destroy it on the loop thread; every other member may be
// called from any thread. Work for the pool goes through uv_queue_work (the libuv thread pool, sized
// by UV_THREADPOOL_SIZE), timers are uv_timer_t handles owned here, and cross-thread posts are
// marshalled with one uv_async_t whose callback drains the whole queue (uv_async_send coalesces).
// Posts made on the loop thread itself skip the async handle (an eventfd write, an extra epoll
// wake-up and an eventfd read): they queue locally and run in this loop iteration's check phase,
// after the I/O callbacks — so every reply a read callback produced is flushed in one go. An idle
// handle is active while local tasks wait, so the loop never blocks in poll with work queued.
namespace car::uv {

class CAR_API UvExecutor final : public Executor {
 public:
  explicit UvExecutor(uv_loop_t* loop);
  ~UvExecutor() override;

  void post(Task task) override;
  void queue_work(Task work, Task after) override;
  TimerId start_timer(std::chrono::milliseconds delay, Task fn) override;
  void cancel_timer(TimerId id) override;
  Clock::time_point now() const override { return Clock::now(); }
  bool in_loop_thread() const override;

  // Closes the async handle and every timer so that uv_run can return. Loop thread only. Posts made
  // afterwards are dropped (their tasks are destroyed, not run). Pool jobs are never dropped: jobs
  // other threads queued before still run, with their `after` on this loop; a queue_work from
  // another thread after shutdown runs both parts on the calling thread.
  void shutdown();

  uv_loop_t* loop() const { return loop_; }

 private:
  struct Timer;
  struct Work;
  static void on_async(uv_async_t* handle);
  static void on_check(uv_check_t* handle);
  void run_posted();
  void run_local();
  void submit(Work* work);  // loop thread: uv_queue_work, or both parts inline if that fails
  void start_timer_on_loop(TimerId id, std::chrono::milliseconds delay, Task fn);

  uv_loop_t* loop_;
  uv_thread_t loop_thread_;
  // Heap-allocated so its memory outlives this object until libuv's close callback frees it.
  uv_async_t* async_;
  uv_check_t* check_;  // runs local_ after the poll phase
  uv_idle_t* idle_;    // active while local_ is non-empty: poll does not block
  std::vector<Task> local_;  // posts made on the loop thread (loop thread only)
  bool local_armed_ = false;
  std::mutex mutex_;
  std::vector<Task> posted_;
  std::vector<Work*> posted_work_;  // queue_work from other threads not yet handed to libuv
  bool shut_down_ = false;
  std::uint64_t next_timer_id_ = 1;
  std::unordered_map<TimerId, Timer*> timers_;  // loop thread only
};

}  // namespace car::uv
