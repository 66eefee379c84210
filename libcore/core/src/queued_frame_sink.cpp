#include "car/queued_frame_sink.hpp"

#include <algorithm>

#include "car/metrics.hpp"

namespace car {

std::string_view to_string(SinkError error) {
  switch (error) {
    case SinkError::none: return "ok";
    case SinkError::full: return "outbound queue full";
    case SinkError::closed: return "closed";
    case SinkError::deadline_exceeded: return "write deadline exceeded";
    case SinkError::io_error: return "write failed";
    case SinkError::aborted: return "aborted";
  }
  return "?";
}

QueuedFrameSink::QueuedFrameSink(Executor& executor, SinkLimits limits)
    : executor_(executor), limits_(limits) {}

QueuedFrameSink::~QueuedFrameSink() = default;

SinkError QueuedFrameSink::send(Frame frame, SendCompletion done,
                                std::chrono::milliseconds deadline) {
  return enqueue(std::move(frame), std::move(done), deadline, true);
}

SinkError QueuedFrameSink::send_reply(Frame frame, SendCompletion done) {
  return enqueue(std::move(frame), std::move(done), std::chrono::milliseconds{0}, false);
}

SinkError QueuedFrameSink::enqueue(Frame frame, SendCompletion done,
                                   std::chrono::milliseconds deadline, bool bounded) {
  if (!frame) return SinkError::aborted;
  bool crossed_high = false;
  {
    std::lock_guard lock(mutex_);
    if (state_ != State::open) return SinkError::closed;
    // The byte bound limits what piles up: one frame larger than the bound (a big snapshot
    // reply) is still accepted into an otherwise empty sink, or it could never be sent at all.
    if (bounded && (queued_frames_ + 1 > limits_.max_frames ||
                    (queued_frames_ != 0 && queued_bytes_ + frame->size() > limits_.max_bytes))) {
      detail::count_sink_refusal();
      return SinkError::full;
    }
    auto limit = deadline.count() > 0 ? deadline : limits_.write_deadline;
    queued_frames_ += 1;
    queued_bytes_ += frame->size();
    queue_.push_back({std::move(frame), std::move(done), executor_.now() + limit});
    crossed_high = watermark_fn_ && !reported_above_ && above_high_locked();
    schedule_pump_locked();
  }
  if (crossed_high) {
    executor_.post([self = shared_from_this()] { self->report_watermark(); });
  }
  return SinkError::none;
}

SinkError QueuedFrameSink::send_control(Frame encoded) {
  if (!encoded) return SinkError::aborted;
  std::lock_guard lock(mutex_);
  if (state_ != State::open) return SinkError::closed;
  // Only queue_ is searched: a control frame already handed to the transport is being written.
  for (auto& p : queue_) {
    if (!p.encoded) continue;
    queued_bytes_ = queued_bytes_ - p.frame->size() + encoded->size();
    p.frame = std::move(encoded);  // the older deadline stays: a flood cannot postpone it
    return SinkError::none;
  }
  queued_frames_ += 1;
  queued_bytes_ += encoded->size();
  Pending pending{std::move(encoded), {}, executor_.now() + limits_.write_deadline};
  pending.encoded = true;
  queue_.push_back(std::move(pending));
  schedule_pump_locked();
  return SinkError::none;
}

bool QueuedFrameSink::above_high_locked() const {
  return queued_bytes_ > high_watermark_ || queued_frames_ > limits_.max_frames / 2;
}

bool QueuedFrameSink::at_or_below_low_locked() const {
  return queued_bytes_ <= low_watermark_ && queued_frames_ <= limits_.max_frames / 4;
}

void QueuedFrameSink::schedule_pump_locked() {
  if (pump_scheduled_) return;
  pump_scheduled_ = true;
  executor_.post([self = shared_from_this()] { self->pump(); });
}

void QueuedFrameSink::pump() {
  std::unique_lock lock(mutex_);
  pump_scheduled_ = false;
  if (state_ == State::ending || state_ == State::ended) return;
  arm_deadline_locked();
  if (writing_) return;
  if (queue_.empty()) {
    if (state_ == State::closing) {
      SinkEnd end = close_request_;
      lock.unlock();
      end_now(std::move(end));
    }
    return;
  }
  inflight_.swap(queue_);
  writing_ = true;
  lock.unlock();
  start_write(inflight_);
}

void QueuedFrameSink::write_done(SinkError result) {
  std::vector<SendCompletion> completions;
  Batch finished;
  bool failed = false;
  {
    std::lock_guard lock(mutex_);
    writing_ = false;
    finished.swap(inflight_);
    if (state_ == State::ending || state_ == State::ended) {
      // end_now already completed these frames; the batch only had to live until now.
      return;
    }
    std::size_t written_bytes = 0;
    for (auto& p : finished) {
      queued_frames_ -= 1;
      queued_bytes_ -= p.frame->size();
      written_bytes += p.frame->size();
      if (p.done) completions.push_back(std::move(p.done));
    }
    failed = result != SinkError::none;
    if (!failed) detail::count_sink_write(finished.size(), written_bytes);
    if (!failed && (!queue_.empty() || state_ == State::closing)) schedule_pump_locked();
  }
  for (auto& done : completions) done(result);
  if (failed) {
    end_now({result, 1006, std::string(to_string(result))});
    return;
  }
  report_watermark();
}

void QueuedFrameSink::arm_deadline_locked() {
  auto earliest = Executor::Clock::time_point::max();
  for (const auto& p : inflight_) earliest = std::min(earliest, p.deadline);
  for (const auto& p : queue_) earliest = std::min(earliest, p.deadline);
  if (earliest == Executor::Clock::time_point::max()) return;
  if (deadline_timer_ != 0 && deadline_at_ <= earliest) return;
  if (deadline_timer_ != 0) executor_.cancel_timer(deadline_timer_);
  deadline_at_ = earliest;
  auto delay = std::chrono::duration_cast<std::chrono::milliseconds>(earliest - executor_.now()) +
               std::chrono::milliseconds(1);
  std::weak_ptr<QueuedFrameSink> weak = shared_from_this();
  deadline_timer_ = executor_.start_timer(delay, [weak] {
    if (auto self = weak.lock()) self->on_deadline_timer();
  });
}

void QueuedFrameSink::on_deadline_timer() {
  bool expired = false;
  {
    std::lock_guard lock(mutex_);
    deadline_timer_ = 0;
    if (state_ == State::ending || state_ == State::ended) return;
    auto now = executor_.now();
    auto past = [now](const Pending& p) { return p.deadline <= now; };
    expired = std::any_of(inflight_.begin(), inflight_.end(), past) ||
              std::any_of(queue_.begin(), queue_.end(), past);
    if (!expired) arm_deadline_locked();
  }
  if (expired) {
    end_now({SinkError::deadline_exceeded, 1008, std::string(to_string(SinkError::deadline_exceeded))});
  }
}

void QueuedFrameSink::close(std::uint16_t code, std::string reason) {
  std::lock_guard lock(mutex_);
  if (state_ != State::open) return;
  state_ = State::closing;
  close_request_ = {SinkError::closed, code, std::move(reason)};
  // The flush is bounded: whatever is still queued when the timer fires is abandoned.
  std::weak_ptr<QueuedFrameSink> weak = shared_from_this();
  close_timer_ = executor_.start_timer(limits_.close_flush, [weak] {
    auto self = weak.lock();
    if (!self) return;
    SinkEnd end;
    {
      std::lock_guard inner(self->mutex_);
      self->close_timer_ = 0;
      if (self->state_ != State::closing) return;
      end = self->close_request_;
      end.error = SinkError::deadline_exceeded;
    }
    self->end_now(std::move(end));
  });
  schedule_pump_locked();
}

void QueuedFrameSink::abort(SinkError why, std::string reason) {
  {
    std::lock_guard lock(mutex_);
    if (state_ == State::ending || state_ == State::ended) return;
    state_ = State::ending;  // refuse sends from now on; the rest happens on the loop
  }
  if (why == SinkError::none || why == SinkError::closed) why = SinkError::aborted;
  executor_.post([self = shared_from_this(), why, reason = std::move(reason)]() mutable {
    self->end_now({why, 1008, std::move(reason)});
  });
}

void QueuedFrameSink::transport_ended(SinkError why, std::string reason) {
  end_now({why, 1006, std::move(reason)});
}

void QueuedFrameSink::end_now(SinkEnd end) {
  std::vector<SendCompletion> completions;
  std::vector<SinkEndObserver> observers;
  {
    std::lock_guard lock(mutex_);
    if (state_ == State::ended) return;
    state_ = State::ended;
    end_ = end;
    for (auto& p : queue_) {
      if (p.done) completions.push_back(std::move(p.done));
    }
    queue_.clear();
    // In-flight frames stay referenced until write_done: the transport may still be reading them.
    for (auto& p : inflight_) {
      if (p.done) completions.push_back(std::move(p.done));
      p.done = nullptr;
    }
    queued_frames_ = 0;
    queued_bytes_ = 0;
    observers.swap(observers_);
    if (deadline_timer_ != 0) executor_.cancel_timer(deadline_timer_);
    if (close_timer_ != 0) executor_.cancel_timer(close_timer_);
    deadline_timer_ = close_timer_ = 0;
  }
  SinkError frame_error = end.error == SinkError::none ? SinkError::closed : end.error;
  for (auto& done : completions) done(frame_error);
  shut_down_transport(end);
  for (auto& observer : observers) observer(end);
}

void QueuedFrameSink::on_end(SinkEndObserver observer) {
  std::lock_guard lock(mutex_);
  if (state_ == State::ended) {
    executor_.post([observer = std::move(observer), end = end_] { observer(end); });
    return;
  }
  observers_.push_back(std::move(observer));
}

bool QueuedFrameSink::is_open() const {
  std::lock_guard lock(mutex_);
  return state_ == State::open;
}

SinkStats QueuedFrameSink::stats() const {
  std::lock_guard lock(mutex_);
  return {queued_frames_, queued_bytes_};
}

void QueuedFrameSink::set_watermarks(std::size_t high, std::size_t low,
                                     std::function<void(bool)> fn) {
  std::lock_guard lock(mutex_);
  high_watermark_ = high;
  low_watermark_ = std::min(low, high);
  watermark_fn_ = std::move(fn);
}

void QueuedFrameSink::report_watermark() {
  std::function<void(bool)> fn;
  bool above = false;
  {
    std::lock_guard lock(mutex_);
    if (!watermark_fn_ || state_ == State::ended) return;
    if (!reported_above_ && above_high_locked()) {
      above = reported_above_ = true;
    } else if (reported_above_ && at_or_below_low_locked()) {
      above = reported_above_ = false;
    } else {
      return;
    }
    fn = watermark_fn_;
  }
  fn(above);
}

}  // namespace car
