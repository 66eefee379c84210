#include "car/event_stream.hpp"

#include "car/log.hpp"

namespace car {

StreamSubscriber::StreamSubscriber(Executor& executor, std::weak_ptr<FrameSink> sink,
                                   std::uint64_t start_position, Options options,
                                   std::shared_ptr<StreamTotals> totals, GapNotice gap_notice,
                                   FailureHandler on_failure)
    : executor_(executor),
      sink_(std::move(sink)),
      options_(options),
      totals_(totals ? std::move(totals) : std::make_shared<StreamTotals>()),
      gap_notice_(std::move(gap_notice)),
      on_failure_(std::move(on_failure)),
      last_queued_position_(start_position) {}

bool StreamSubscriber::enqueue_locked(const StreamEvent& event) {
  if (stopped_) return false;
  if (queue_.size() >= options_.capacity) {
    if (disconnects()) {
      overflow_locked();
      return false;
    }
    // This subscriber alone loses the event. The hole starts after the last event that is still
    // going to be delivered, i.e. the last one queued.
    if (!gap_) gap_ = StreamGap{last_queued_position_, event.position, 0};
    gap_->to = event.position;
    gap_->dropped += 1;
    stats_.dropped += 1;
    totals_->events_dropped.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  queue_.push_back({event.frame, event.position, gap_});
  gap_.reset();
  last_queued_position_ = event.position;
  return true;
}

void StreamSubscriber::overflow_locked() {
  // The stream cannot stay complete: end it, and the connection with it. The abort runs from the
  // loop, never inside a producer (which may hold its own locks that the connection's teardown
  // takes).
  stopped_ = true;
  stop_requested_.store(true, std::memory_order_relaxed);
  live_.store(false, std::memory_order_relaxed);
  stats_.dropped += 1 + queue_.size();
  queue_.clear();
  queue_.shrink_to_fit();
  totals_->overflow_disconnects.fetch_add(1, std::memory_order_relaxed);
  executor_.post([self = shared_from_this()] { self->disconnect_overflowed(); });
}

void StreamSubscriber::disconnect_overflowed() {
  if (auto sink = sink_.lock()) {
    log_info("event stream subscriber: it cannot keep up (queue of {} or its sink full); "
             "disconnecting it",
             options_.capacity);
    sink->abort(SinkError::full, "event stream overflow");
  }
  if (on_failure_) on_failure_(*this, SinkError::full);
}

void StreamSubscriber::send_live(FrameSink* sink, Frame frame) {
  if (sink == nullptr) return;  // the connection is gone; its teardown ends the subscription
  if (stop_requested_.load(std::memory_order_relaxed)) return;
  SinkError rc = sink->send(std::move(frame), {}, options_.deadline);
  if (rc == SinkError::none || rc == SinkError::closed) return;
  // Refused (its bound is reached): cut off rather than silently skipped.
  std::lock_guard lock(mutex_);
  if (!stopped_) overflow_locked();
}

void StreamSubscriber::push(const StreamEvent& event) {
  if (live_.load(std::memory_order_acquire)) {
    send_live(sink_.lock().get(), event.frame);
    return;
  }
  std::unique_lock lock(mutex_);
  if (live_.load(std::memory_order_relaxed)) {
    lock.unlock();
    send_live(sink_.lock().get(), event.frame);
    return;
  }
  if (enqueue_locked(event)) schedule_locked();
}

bool StreamSubscriber::push_claiming(const StreamEvent& event) {
  std::unique_lock lock(mutex_);
  if (live_.load(std::memory_order_relaxed)) {
    lock.unlock();
    send_live(sink_.lock().get(), event.frame);
    return false;
  }
  return enqueue_locked(event) && claim_locked();
}

void StreamSubscriber::send_text(Frame frame) {
  // The hot path of a host broadcast: a live subscriber costs one sink send, no lock of ours.
  if (live_.load(std::memory_order_acquire)) {
    send_live(sink_.lock().get(), std::move(frame));
    return;
  }
  std::unique_lock lock(mutex_);
  if (live_.load(std::memory_order_relaxed)) {
    // Went live since the check above: the catch-up pass that set it has handed over
    // everything queued before, so this one may go straight to the sink too.
    lock.unlock();
    send_live(sink_.lock().get(), std::move(frame));
    return;
  }
  bool claimed = enqueue_locked({std::move(frame), last_queued_position_ + 1}) && claim_locked();
  lock.unlock();
  if (claimed) drain_claimed();
}

void StreamSubscriber::resume() {
  std::lock_guard lock(mutex_);
  if (stopped_ || !paused_) return;
  paused_ = false;
  if (disconnects() && queue_.empty() && !busy_) {
    live_.store(true, std::memory_order_release);  // nothing to catch up on
    return;
  }
  schedule_locked();
}

void StreamSubscriber::stop() {
  std::lock_guard lock(mutex_);
  stopped_ = true;
  stop_requested_.store(true, std::memory_order_relaxed);
  live_.store(false, std::memory_order_release);
  queue_.clear();
  queue_.shrink_to_fit();
  gap_.reset();
}

bool StreamSubscriber::stopped() const {
  std::lock_guard lock(mutex_);
  return stopped_;
}

StreamStats StreamSubscriber::stats() const {
  std::lock_guard lock(mutex_);
  StreamStats out = stats_;
  out.queued = queue_.size();
  return out;
}

bool StreamSubscriber::claim_locked() {
  // At most one pass per subscriber at a time: while busy, whatever arrives is picked up by the
  // next pass, which the current batch's last completion schedules.
  if (paused_ || busy_ || stopped_) return false;
  if (queue_.empty() && !gap_) return false;
  busy_ = true;
  return true;
}

void StreamSubscriber::schedule_locked() {
  if (!claim_locked()) return;
  auto job = [self = shared_from_this(), totals = totals_] {
    totals->drain_hops.fetch_add(1, std::memory_order_relaxed);
    self->drain_claimed();
  };
  if (options_.drain_thread == DrainThread::loop) {
    executor_.post(std::move(job));
  } else {
    executor_.queue_work(std::move(job), [] {});
  }
}

void StreamSubscriber::catch_up() {
  // busy_ is ours. Hand over everything queued, batch after batch, without waiting for
  // completions (the sink's bound governs from here on), until the queue is empty; then go live.
  auto sink = sink_.lock();
  for (;;) {
    std::deque<Entry> batch;
    {
      std::lock_guard lock(mutex_);
      if (stopped_) {
        busy_ = false;
        return;
      }
      if (queue_.empty()) {
        busy_ = false;
        live_.store(true, std::memory_order_release);
        return;
      }
      batch.swap(queue_);
      stats_.drain_passes += 1;
      stats_.events_drained += batch.size();
      totals_->drain_passes.fetch_add(1, std::memory_order_relaxed);
      totals_->events_drained.fetch_add(batch.size(), std::memory_order_relaxed);
    }
    for (auto& entry : batch) {
      if (stop_requested_.load(std::memory_order_relaxed)) break;
      send_live(sink.get(), std::move(entry.frame));
    }
  }
}

void StreamSubscriber::drain_claimed() {
  if (disconnects()) {
    catch_up();
    return;
  }
  // busy_ is ours. Take everything queued: one pass per burst, not per event.
  std::deque<Entry> batch;
  std::size_t frames = 0;
  {
    std::lock_guard lock(mutex_);
    if (stopped_) {
      busy_ = false;
      return;
    }
    batch.swap(queue_);
    if (gap_) {
      // Drops after the last queued event and nothing queued since: the notice goes out right
      // after the events that preceded the hole, so it precedes every later event.
      batch.push_back({nullptr, gap_->to, gap_});
      gap_.reset();
    }
    for (const auto& e : batch) frames += (e.frame ? 1 : 0) + (e.gap_before ? 1 : 0);
    std::size_t events = batch.size() - (batch.empty() || batch.back().frame ? 0 : 1);
    outstanding_ = frames;
    failed_ = false;
    batch_started_ = executor_.now();
    stats_.drain_passes += 1;
    stats_.events_drained += events;
    totals_->drain_passes.fetch_add(1, std::memory_order_relaxed);
    totals_->events_drained.fetch_add(events, std::memory_order_relaxed);
    if (frames == 0) {
      busy_ = false;
      return;
    }
  }
  auto sink = sink_.lock();
  auto self = shared_from_this();
  auto send_one = [&](Frame frame) {
    if (!sink) {
      on_sent(SinkError::closed, 0);
      return;
    }
    std::size_t bytes = frame->size();
    SinkError rc = sink->send(
        std::move(frame), [self, bytes](SinkError result) { self->on_sent(result, bytes); },
        options_.deadline);
    if (rc == SinkError::full) {
      // Only possible when many subscriptions share one connection whose peer reads nothing:
      // the same rule as for a reply that does not fit (the connection is cut off).
      sink->abort(SinkError::full, "outbound queue full");
    }
    if (rc != SinkError::none) on_sent(rc, 0);
  };
  for (auto& entry : batch) {
    // A pass already under way stops handing frames over once the subscription ends (e.g. a
    // re-subscribe replaced it: its snapshot must not be followed by this pass's old events).
    if (stop_requested_.load(std::memory_order_relaxed)) break;
    if (entry.gap_before) {
      totals_->gaps_sent.fetch_add(1, std::memory_order_relaxed);
      send_one(gap_notice_(*entry.gap_before));
    }
    if (entry.frame) send_one(std::move(entry.frame));
  }
}

void StreamSubscriber::on_sent(SinkError result, std::size_t bytes) {
  // Sink loop thread (or the drain itself for a refused send).
  SinkError failure = SinkError::none;
  {
    std::lock_guard lock(mutex_);
    if (result == SinkError::none) {
      stats_.frames_written += 1;
      stats_.bytes_written += bytes;
    } else if (!failed_) {
      failed_ = true;
      failure_ = result;
    }
    if (outstanding_ == 0 || --outstanding_ != 0) return;
    auto took = executor_.now() - batch_started_;
    stats_.last_write_us = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(took).count());
    busy_ = false;
    if (failed_) {
      failure = failure_;
      stopped_ = true;
      stop_requested_.store(true, std::memory_order_relaxed);
      queue_.clear();
      gap_.reset();
    } else {
      schedule_locked();
    }
  }
  if (failure == SinkError::none) return;
  if (failure == SinkError::closed) {
    // The connection is closing or gone; its teardown removes the subscription.
    log_debug("event stream subscriber: connection closed");
    return;
  }
  log_info("event stream subscriber: write failed ({}); ending the subscription",
           to_string(failure));
  if (on_failure_) on_failure_(*this, failure);
}

}  // namespace car
