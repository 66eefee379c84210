#include "car/runs/trace_subscriber.hpp"

#include "car/connection.hpp"
#include "car/log.hpp"
#include "run_json.hpp"

namespace car::runs {

TraceSubscriber::TraceSubscriber(Executor& executor, std::string run_id, std::string client_id,
                                 std::weak_ptr<Connection> connection,
                                 std::uint64_t start_cursor, Options options,
                                 std::shared_ptr<FanoutTotals> totals, FailureHandler on_failure)
    : executor_(executor),
      run_id_(std::move(run_id)),
      client_id_(std::move(client_id)),
      connection_(std::move(connection)),
      options_(options),
      totals_(totals ? std::move(totals) : std::make_shared<FanoutTotals>()),
      on_failure_(std::move(on_failure)),
      last_queued_cursor_(start_cursor) {
  stats_.run_id = run_id_;
  stats_.client_id = client_id_;
}

bool TraceSubscriber::enqueue_locked(const TraceEvent& event) {
  if (stopped_) return false;
  if (queue_.size() >= options_.capacity) {
    // Full: this subscriber alone loses the event. The hole starts after the last event that is
    // still going to be delivered, i.e. the last one queued.
    if (!gap_) gap_ = Gap{last_queued_cursor_, event.cursor, 0};
    gap_->to = event.cursor;
    gap_->dropped += 1;
    stats_.dropped += 1;
    totals_->events_dropped.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  queue_.push_back({event.frame, event.cursor, gap_});
  gap_.reset();
  last_queued_cursor_ = event.cursor;
  return true;
}

void TraceSubscriber::push(const TraceEvent& event) {
  std::lock_guard lock(mutex_);
  if (enqueue_locked(event)) schedule_locked();
}

bool TraceSubscriber::push_claiming(const TraceEvent& event) {
  std::lock_guard lock(mutex_);
  return enqueue_locked(event) && claim_locked();
}

void TraceSubscriber::resume() {
  std::lock_guard lock(mutex_);
  if (stopped_ || !paused_) return;
  paused_ = false;
  schedule_locked();
}

void TraceSubscriber::stop() {
  std::lock_guard lock(mutex_);
  stopped_ = true;
  stop_requested_.store(true, std::memory_order_relaxed);
  queue_.clear();
  queue_.shrink_to_fit();
  gap_.reset();
}

bool TraceSubscriber::stopped() const {
  std::lock_guard lock(mutex_);
  return stopped_;
}

SubscriberStats TraceSubscriber::stats() const {
  std::lock_guard lock(mutex_);
  SubscriberStats out = stats_;
  out.queued = queue_.size();
  return out;
}

bool TraceSubscriber::claim_locked() {
  // At most one pass per subscriber at a time: while busy, whatever arrives is picked up by the
  // next pass, which the current batch's last completion schedules.
  if (paused_ || busy_ || stopped_) return false;
  if (queue_.empty() && !gap_) return false;
  busy_ = true;
  return true;
}

void TraceSubscriber::schedule_locked() {
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

Frame TraceSubscriber::gap_frame(const Gap& gap) const {
  return make_frame(detail::trace_gap_text(run_id_, gap.from, gap.to, gap.dropped));
}

void TraceSubscriber::drain_claimed() {
  // Pool thread (busy_ is ours). Take everything queued: one pass per burst, not per event.
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
  auto connection = connection_.lock();
  auto self = shared_from_this();
  auto send_one = [&](Frame frame) {
    if (!connection) {
      on_sent(SinkError::closed, 0);
      return;
    }
    std::size_t bytes = frame->size();
    SinkError rc = connection->send(
        std::move(frame), [self, bytes](SinkError result) { self->on_sent(result, bytes); },
        options_.drain_timeout);
    if (rc == SinkError::full) {
      // Only possible when many subscriptions share one connection whose peer reads nothing:
      // the same rule as for a reply that does not fit (the connection is cut off).
      connection->sink().abort(SinkError::full, "outbound queue full");
    }
    if (rc != SinkError::none) on_sent(rc, 0);
  };
  for (auto& entry : batch) {
    // A pass already under way stops handing frames over once the subscription ends (e.g. a
    // re-subscribe replaced it: its snapshot must not be followed by this pass's old events).
    if (stop_requested_.load(std::memory_order_relaxed)) break;
    if (entry.gap_before) {
      totals_->gaps_sent.fetch_add(1, std::memory_order_relaxed);
      send_one(gap_frame(*entry.gap_before));
    }
    if (entry.frame) send_one(std::move(entry.frame));
  }
}

void TraceSubscriber::on_sent(SinkError result, std::size_t bytes) {
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
    if (failed_) {
      failure = failure_;
      stopped_ = true;
      busy_ = false;
      queue_.clear();
      gap_.reset();
    } else {
      busy_ = false;
      schedule_locked();
    }
  }
  if (failure == SinkError::none) return;
  if (failure == SinkError::closed) {
    // The connection is closing or gone; its teardown removes the subscription.
    log_debug("trace subscriber {} of run {}: connection closed", client_id_, run_id_);
    return;
  }
  log_info("trace subscriber {} of run {}: write failed ({}); ending the subscription",
           client_id_, run_id_, to_string(failure));
  if (on_failure_) on_failure_(*this, failure);
}

}  // namespace car::runs
