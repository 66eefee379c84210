#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "car/executor.hpp"
#include "car/export.hpp"
#include "car/frame.hpp"
#include "car/frame_sink.hpp"

// The live fan-out of one run to one connection (PROTOCOL.md §7.4): a bounded queue the recorder pushes
// into without ever waiting, drained on the thread pool in batches into the connection's sink.
//
// Where backpressure turns into drops. A subscriber hands the sink at most one batch at a time and
// hands over the next batch only after every frame of the previous one has completed. So at most
// `capacity` (+1 gap notice) of its frames ever sit in the connection's sink, and a reader that
// stops reading makes *this* queue fill up; the next events are then dropped for this subscriber
// alone and reported by one `runs.trace.gap`. Without that rule the sink's own 4096-frame queue
// would absorb a slow reader instead, hide the loss from the gap accounting, and finally refuse a
// reply (which closes the connection) for a reason that has nothing to do with the reply.
// A batch not written within the drain deadline fails the sink (that is the sink's rule), which
// ends this subscription and tears the connection down; the run is never affected.
//
// Pool hops. A drain pass normally rides a pool job that is running anyway: the run's store job
// that just published the events claims the passes of every subscriber its publish made ready
// (push_claiming) and runs them right after that op (drain_claimed), so a publish to S
// subscribers costs no extra hop at all. A subscriber schedules a pool job of its own (queue_work) only when
// delivery resumes (after the subscribe reply, or when its previous batch completes with more
// queued) — the saturated case, where that job takes everything that piled up meanwhile.
//
// Threads: push/resume/stop/stats may be called from any thread and never block on I/O (they take
// the subscriber's own short mutex; callers may hold the run service's lock). Drain passes run on
// the executor's pool (or on the loop thread with DrainThread::loop, a comparison baseline for
// benchmarks); sink completions arrive on the sink's loop thread.
// Lifetime: owned by shared_ptr (the run service, a drain job and the sink's pending completions
// each hold one). It refers to the connection weakly.
namespace car {
class Connection;
}  // namespace car

namespace car::runs {

// One record as every subscriber of its run receives it. `frame` is the complete
// `runs.trace.event` notification, serialized once and shared by all subscribers.
struct CAR_API TraceEvent {
  Frame frame;
  std::uint64_t cursor = 0;
};

// Where drain passes run. `pool` is the design (PROTOCOL.md §7.4); `loop` runs them on the event loop
// thread instead and exists so benchmarks can compare the two on the same machine.
enum class DrainThread : std::uint8_t { pool, loop };

// Service-wide counters shared by every subscriber (monotonic, relaxed atomics).
struct CAR_API FanoutTotals {
  std::atomic<std::uint64_t> drain_hops{0};      // pool (or loop) jobs that ran drain passes
  std::atomic<std::uint64_t> drain_passes{0};    // passes, one per subscriber batch
  std::atomic<std::uint64_t> events_drained{0};  // events handed to sinks by those passes
  std::atomic<std::uint64_t> events_dropped{0};  // events dropped at full subscriber queues
  std::atomic<std::uint64_t> gaps_sent{0};
};

struct CAR_API SubscriberStats {
  std::string run_id;
  std::string client_id;
  std::size_t queued = 0;             // events waiting in the subscriber queue
  std::uint64_t dropped = 0;          // events dropped because the queue was full
  std::uint64_t frames_written = 0;   // frames (events and gap notices) the sink wrote
  std::uint64_t bytes_written = 0;
  std::uint64_t last_write_us = 0;    // hand-over of the last batch to its last completion
  std::uint64_t drain_passes = 0;     // batches handed over (each one pass of the drain)
  std::uint64_t events_drained = 0;   // events those passes handed over
};

class CAR_API TraceSubscriber : public std::enable_shared_from_this<TraceSubscriber> {
 public:
  struct Options {
    std::size_t capacity = 256;                     // events queued before dropping (PROTOCOL.md §8)
    std::chrono::milliseconds drain_timeout{10000};  // deadline of every frame handed to the sink
    DrainThread drain_thread = DrainThread::pool;    // where self-scheduled passes run
  };
  // Runs once, on the sink's loop thread, when a write failed (deadline, I/O error, abort, sink
  // full): the subscription is already stopped; the owner removes it. Not called for `closed`.
  using FailureHandler = std::function<void(TraceSubscriber&, SinkError)>;

  // Starts paused: pushes queue up but nothing is delivered before resume(). `start_cursor` is
  // the cursor of the snapshot the subscriber was given (the "last delivered" before any event).
  TraceSubscriber(Executor& executor, std::string run_id, std::string client_id,
                  std::weak_ptr<Connection> connection, std::uint64_t start_cursor,
                  Options options, std::shared_ptr<FanoutTotals> totals,
                  FailureHandler on_failure);
  TraceSubscriber(const TraceSubscriber&) = delete;
  TraceSubscriber& operator=(const TraceSubscriber&) = delete;

  // Any thread; never blocks on the subscriber. Queues `event`, or drops it for this subscriber
  // when the queue is full (counted, and reported later by one gap notice).
  void push(const TraceEvent& event);
  // Any thread. Like push, for a caller that is on a pool thread anyway (the run's store job):
  // when this push made the subscriber ready, the pass is handed to the caller instead of being
  // scheduled. Returns true then, and the caller must call drain_claimed() soon, holding no lock.
  [[nodiscard]] bool push_claiming(const TraceEvent& event);
  // Runs a claimed pass (push_claiming's, or the subscriber's own scheduled job) on the calling
  // thread: a pool thread, or the loop thread with DrainThread::loop. Never blocks: it only
  // hands frames to the sink.
  void drain_claimed();
  // Any thread. Starts delivery: call once the subscribe reply has been queued on the sink.
  void resume();
  // Any thread, idempotent. Ends the subscription: the queue is freed and a drain in progress
  // hands nothing more over. Frames already in the sink are still written.
  void stop();

  bool stopped() const;
  SubscriberStats stats() const;
  const std::string& run_id() const { return run_id_; }
  const std::string& client_id() const { return client_id_; }

 private:
  struct Gap {
    std::uint64_t from = 0;
    std::uint64_t to = 0;
    std::uint64_t dropped = 0;
  };
  struct Entry {
    Frame frame;  // null for a standalone gap notice
    std::uint64_t cursor = 0;
    std::optional<Gap> gap_before;
  };

  // Queues `event` or drops it (full); false when stopped or dropped.
  bool enqueue_locked(const TraceEvent& event);
  // Marks the subscriber busy when it has something to deliver and no pass is pending.
  bool claim_locked();
  void schedule_locked();
  void on_sent(SinkError result, std::size_t bytes);
  Frame gap_frame(const Gap& gap) const;

  Executor& executor_;
  const std::string run_id_;
  const std::string client_id_;
  const std::weak_ptr<Connection> connection_;
  const Options options_;
  const std::shared_ptr<FanoutTotals> totals_;
  FailureHandler on_failure_;

  mutable std::mutex mutex_;
  std::deque<Entry> queue_;
  bool paused_ = true;
  bool busy_ = false;      // a pass is claimed or running, or its batch is still in the sink
  bool stopped_ = false;
  std::atomic<bool> stop_requested_{false};  // stopped_, readable by a pass without the mutex
  bool failed_ = false;
  SinkError failure_ = SinkError::none;
  std::size_t outstanding_ = 0;  // frames of the current batch not yet completed
  Executor::Clock::time_point batch_started_{};
  std::uint64_t last_queued_cursor_ = 0;
  std::optional<Gap> gap_;  // drops since the last queued event, not yet attached to a notice
  SubscriberStats stats_;
};

}  // namespace car::runs
