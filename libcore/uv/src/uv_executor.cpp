#include "car/uv/uv_executor.hpp"

#include <algorithm>

#include "car/log.hpp"
#include "car/uv/guarded.hpp"

namespace car::uv {

struct UvExecutor::Timer {
  uv_timer_t handle;
  TimerId id;
  Task fn;
  UvExecutor* owner;
};

struct UvExecutor::Work {
  uv_work_t req;
  Task work;
  Task after;
};

namespace {

// No exception may unwind through libuv's C frames: a task that throws is logged and dropped.
void run_guarded(const Executor::Task& task, const char* what) noexcept { guarded(what, task); }

}  // namespace

UvExecutor::UvExecutor(uv_loop_t* loop)
    : loop_(loop),
      loop_thread_(uv_thread_self()),
      async_(new uv_async_t),
      check_(new uv_check_t),
      idle_(new uv_idle_t) {
  uv_async_init(loop_, async_, &UvExecutor::on_async);
  async_->data = this;
  uv_check_init(loop_, check_);
  check_->data = this;
  uv_idle_init(loop_, idle_);
  idle_->data = this;
}

UvExecutor::~UvExecutor() { shutdown(); }

bool UvExecutor::in_loop_thread() const {
  uv_thread_t self = uv_thread_self();
  return uv_thread_equal(&self, &loop_thread_) != 0;
}

void UvExecutor::post(Task task) {
  if (in_loop_thread()) {
    // shut_down_ is only written on this thread, so reading it here needs no lock.
    if (shut_down_) return;
    local_.push_back(std::move(task));
    if (!local_armed_) {
      local_armed_ = true;
      uv_check_start(check_, &UvExecutor::on_check);
      uv_idle_start(idle_, [](uv_idle_t*) {});
    }
    return;
  }
  // uv_async_send stays under the lock: shutdown() closes the handle only after taking the same
  // lock, so a poster on another thread can never touch a handle that is being closed.
  std::lock_guard lock(mutex_);
  if (shut_down_) return;
  posted_.push_back(std::move(task));
  uv_async_send(async_);
}

void UvExecutor::on_async(uv_async_t* handle) {
  static_cast<UvExecutor*>(handle->data)->run_posted();
}

void UvExecutor::on_check(uv_check_t* handle) {
  static_cast<UvExecutor*>(handle->data)->run_local();
}

void UvExecutor::run_local() {
  // Tasks posted while these run wait for the next iteration (the idle handle keeps it from
  // blocking), so a task that keeps posting cannot starve I/O.
  std::vector<Task> batch;
  batch.swap(local_);
  for (auto& task : batch) run_guarded(task, "posted task");
  if (local_.empty() && local_armed_ && !shut_down_) {
    local_armed_ = false;
    uv_check_stop(check_);
    uv_idle_stop(idle_);
  }
}

void UvExecutor::run_posted() {
  // Swap the queue out under the lock and run it without: tasks may post more work.
  std::vector<Task> batch;
  {
    std::lock_guard lock(mutex_);
    batch.swap(posted_);
  }
  for (auto& task : batch) run_guarded(task, "posted task");
}

void UvExecutor::queue_work(Task work, Task after) {
  auto* w = new Work{{}, std::move(work), std::move(after)};
  w->req.data = w;
  if (in_loop_thread()) {
    submit(w);
    return;
  }
  {
    std::lock_guard lock(mutex_);
    if (!shut_down_) {
      // uv_queue_work is not thread-safe, so the loop submits the job (in order with the posts
      // of this thread). Until then it is listed in posted_work_: shutdown() drops posted tasks
      // but submits these, because `after` must run to release what the job holds.
      posted_work_.push_back(w);
      posted_.push_back([this, w] {
        {
          std::lock_guard relock(mutex_);
          auto it = std::find(posted_work_.begin(), posted_work_.end(), w);
          if (it == posted_work_.end()) return;  // shutdown() submitted it already
          posted_work_.erase(it);
        }
        submit(w);
      });
      uv_async_send(async_);
      return;
    }
  }
  // After shutdown() the loop takes no more posts, so nothing could hand the job to it: run both
  // parts here, in order, so that `after` still releases what the job holds.
  std::unique_ptr<Work> owned(w);
  run_guarded(owned->work, "pool work");
  run_guarded(owned->after, "pool work completion");
}

void UvExecutor::submit(Work* w) {
  int rc = uv_queue_work(
      loop_, &w->req,
      [](uv_work_t* req) { run_guarded(static_cast<Work*>(req->data)->work, "pool work"); },
      [](uv_work_t* req, int /*status: UV_ECANCELED is handled like success*/) {
        std::unique_ptr<Work> owned(static_cast<Work*>(req->data));
        run_guarded(owned->after, "pool work completion");
      });
  if (rc != 0) {
    // Could not submit (should not happen on a live loop): run both parts here so owners are
    // released and nothing waits forever.
    std::unique_ptr<Work> owned(w);
    log_warn("uv_queue_work failed: {}; running inline", uv_strerror(rc));
    run_guarded(owned->work, "pool work");
    run_guarded(owned->after, "pool work completion");
  }
}

Executor::TimerId UvExecutor::start_timer(std::chrono::milliseconds delay, Task fn) {
  TimerId id;
  {
    std::lock_guard lock(mutex_);
    id = next_timer_id_++;
  }
  if (in_loop_thread()) {
    start_timer_on_loop(id, delay, std::move(fn));
  } else {
    post([this, id, delay, fn = std::move(fn)]() mutable {
      start_timer_on_loop(id, delay, std::move(fn));
    });
  }
  return id;
}

void UvExecutor::start_timer_on_loop(TimerId id, std::chrono::milliseconds delay, Task fn) {
  if (shut_down_) return;
  auto* t = new Timer{{}, id, std::move(fn), this};
  uv_timer_init(loop_, &t->handle);
  t->handle.data = t;
  timers_.emplace(id, t);
  auto ms = delay.count() < 0 ? 0 : static_cast<std::uint64_t>(delay.count());
  uv_timer_start(
      &t->handle,
      [](uv_timer_t* handle) {
        auto* timer = static_cast<Timer*>(handle->data);
        timer->owner->timers_.erase(timer->id);
        Task task = std::move(timer->fn);
        uv_close(reinterpret_cast<uv_handle_t*>(handle),
                 [](uv_handle_t* h) { delete static_cast<Timer*>(h->data); });
        run_guarded(task, "timer");
      },
      ms, 0);
}

void UvExecutor::cancel_timer(TimerId id) {
  if (!in_loop_thread()) {
    post([this, id] { cancel_timer(id); });
    return;
  }
  auto it = timers_.find(id);
  if (it == timers_.end()) {
    // Not started yet (its start is still queued behind us) or already fired. A start still in
    // the queue runs after this cancel; remember nothing: callers of cross-thread cancels must
    // check their own state (documented in Executor).
    return;
  }
  Timer* timer = it->second;
  timers_.erase(it);
  uv_timer_stop(&timer->handle);
  timer->fn = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&timer->handle),
           [](uv_handle_t* h) { delete static_cast<Timer*>(h->data); });
}

void UvExecutor::shutdown() {
  std::vector<Task> dropped;
  std::vector<Work*> unsubmitted;
  {
    std::lock_guard lock(mutex_);
    if (shut_down_) return;
    shut_down_ = true;
    dropped.swap(posted_);
    unsubmitted.swap(posted_work_);
  }
  // Jobs other threads queued still run, and their `after`s run on this loop as it winds down.
  for (Work* w : unsubmitted) submit(w);
  std::vector<Task> dropped_local;
  dropped_local.swap(local_);
  uv_close(reinterpret_cast<uv_handle_t*>(check_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_check_t*>(h); });
  uv_close(reinterpret_cast<uv_handle_t*>(idle_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_idle_t*>(h); });
  for (auto& [id, timer] : timers_) {
    uv_timer_stop(&timer->handle);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer->handle),
             [](uv_handle_t* h) { delete static_cast<Timer*>(h->data); });
  }
  timers_.clear();
  uv_close(reinterpret_cast<uv_handle_t*>(async_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_async_t*>(h); });
}

}  // namespace car::uv
