#include "gateway_worker.hpp"

#include "car/log.hpp"

namespace car::fleet::detail {

GatewayWorker::GatewayWorker(std::size_t max_jobs)
    : max_jobs_(max_jobs), thread_([this] { run(); }) {}

GatewayWorker::~GatewayWorker() { stop(); }

bool GatewayWorker::post(std::function<void()> job) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ || jobs_.size() >= max_jobs_) return false;
    jobs_.push_back(std::move(job));
  }
  wake_.notify_one();
  return true;
}

bool GatewayWorker::pause(std::chrono::milliseconds delay) {
  std::unique_lock lock(mutex_);
  wake_.wait_for(lock, delay, [this] { return stopping_; });
  return !stopping_;
}

void GatewayWorker::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
  std::deque<std::function<void()>> dropped;
  {
    std::lock_guard lock(mutex_);
    dropped.swap(jobs_);
  }
  // Destroyed outside the lock: a job's captures may complete a Reply (answered "dropped").
}

std::size_t GatewayWorker::queued() const {
  std::lock_guard lock(mutex_);
  return jobs_.size();
}

void GatewayWorker::run() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (stopping_) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    try {
      job();
    } catch (const std::exception& e) {
      log_error("fleet gateway: a job threw: {}", e.what());
    } catch (...) {
      log_error("fleet gateway: a job threw");
    }
  }
}

}  // namespace car::fleet::detail
