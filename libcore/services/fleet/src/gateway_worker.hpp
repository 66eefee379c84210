#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

// Private to the fleet layer: the gateway's own thread for the work that waits on the broker
// (trace reads, starting and stopping consumers), so neither the loop nor the pool ever blocks on
// a socket. Jobs run one at a time in submission order.
//
// Bound and policy: at most `max_jobs` jobs wait; post() refuses the next one (returns false) and
// the caller answers busy. Threads: post/stop/queued from any thread but the worker's own for
// stop. Lifetime: stop() (or the destructor) drops the jobs not started and joins the thread.
namespace car::fleet::detail {

class GatewayWorker {
 public:
  explicit GatewayWorker(std::size_t max_jobs);
  GatewayWorker(const GatewayWorker&) = delete;
  GatewayWorker& operator=(const GatewayWorker&) = delete;
  ~GatewayWorker();

  // Queues `job`; false when the queue is full or the worker stopped (the job is dropped).
  bool post(std::function<void()> job);
  // Waits up to `delay` or until stop(): for a job that retries; false once stopping.
  bool pause(std::chrono::milliseconds delay);
  void stop();
  std::size_t queued() const;

 private:
  void run();

  const std::size_t max_jobs_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace car::fleet::detail
