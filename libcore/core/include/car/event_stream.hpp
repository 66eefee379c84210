#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>

#include "car/event_subscriber.hpp"
#include "car/executor.hpp"
#include "car/export.hpp"
#include "car/frame.hpp"
#include "car/frame_sink.hpp"

// "Snapshot, then stream": the one primitive behind every subscription the services offer
// (host.subscribe, runs.subscribe). A service takes a snapshot and registers a paused
// StreamSubscriber in one critical section, so every event lands either in the snapshot or in
// the subscriber's queue, never both and never neither; it calls resume() once the subscribe
// reply is queued on the sink, so the reply precedes every event.
//
// The bound and what happens at it: the overflow policy.
//   - drop_with_gap: the stream may have holes (run traces). The queue holds at most `capacity`
//     events and the subscriber hands the sink one batch at a time: the next goes over only
//     after every frame of the previous one completed. So a peer that stops reading fills *this*
//     queue, not the connection's outbound queue (which replies share); events beyond the bound
//     are dropped for this subscriber alone, and one gap notice (built by the service) tells it
//     which.
//   - disconnect: the stream must be complete or not at all (host events). Events wait in the
//     queue (at most `capacity`) only until the subscriber is live: after resume() it hands over
//     what is queued and from then on sends each event straight to the sink, whose own bound is
//     the limit. A full queue or a sink that refuses an event stops the subscription and aborts
//     the sink (SinkError::full) from the executor's loop, which ends the connection.
// A frame not written within `deadline` fails the sink (the sink's own rule), which ends the
// subscription and the connection.
//
// Pool hops. A drain pass hands queued frames to the sink. It runs on the executor's pool (or on
// the loop with DrainThread::loop, a benchmark baseline). A producer that is on a pool thread
// anyway may claim the pass instead (push_claiming, then drain_claimed), so it costs no hop.
//
// Threads: push/resume/stop/stats may be called from any thread, with the caller's own locks
// held; they take only the subscriber's short mutex and never block on I/O. Sink completions
// arrive on the sink's loop thread. Lifetime: owned by shared_ptr (the service, a drain job and
// the sink's pending completions each hold one); it refers to the sink weakly, so a subscription
// never keeps a dead peer's sink alive.
namespace car {

// One event as every subscriber receives it: the complete notification frame, serialized once
// and shared, and its position in the stream (a sequence number or cursor; strictly increasing).
struct CAR_API StreamEvent {
  Frame frame;
  std::uint64_t position = 0;
};

// Where a subscriber's self-scheduled drain passes run.
enum class DrainThread : std::uint8_t { pool, loop };

// What a full subscriber queue does with the next event (see the header comment).
enum class OverflowPolicy : std::uint8_t { disconnect, drop_with_gap };

// The events one gap notice reports: positions after `from` up to and including `to` that were
// dropped (`dropped` of them; positions need not be contiguous).
struct CAR_API StreamGap {
  std::uint64_t from = 0;
  std::uint64_t to = 0;
  std::uint64_t dropped = 0;
};

// Counters shared by every subscriber of one service (monotonic, relaxed atomics).
struct CAR_API StreamTotals {
  std::atomic<std::uint64_t> drain_hops{0};      // pool (or loop) jobs that ran drain passes
  std::atomic<std::uint64_t> drain_passes{0};    // passes, one per subscriber batch
  std::atomic<std::uint64_t> events_drained{0};  // events handed to sinks by those passes
  std::atomic<std::uint64_t> events_dropped{0};  // events dropped at full queues
  std::atomic<std::uint64_t> gaps_sent{0};
  std::atomic<std::uint64_t> overflow_disconnects{0};
};

// One subscriber's counters. Under the disconnect policy a live subscriber's frames are counted
// by its sink (FrameSink::stats), not here.
struct CAR_API StreamStats {
  std::size_t queued = 0;             // events waiting in the queue
  std::uint64_t dropped = 0;          // events dropped because the queue was full
  std::uint64_t frames_written = 0;   // frames (events and gap notices) the sink wrote
  std::uint64_t bytes_written = 0;
  std::uint64_t last_write_us = 0;    // hand-over of the last batch to its last completion
  std::uint64_t drain_passes = 0;     // batches handed over
  std::uint64_t events_drained = 0;   // events those batches held
};

class CAR_API StreamSubscriber final : public EventSubscriber,
                                       public std::enable_shared_from_this<StreamSubscriber> {
 public:
  struct Options {
    std::size_t capacity = 256;                  // events queued before the overflow policy
    std::chrono::milliseconds deadline{10000};   // of every frame handed to the sink
    DrainThread drain_thread = DrainThread::pool;
    OverflowPolicy overflow = OverflowPolicy::drop_with_gap;
  };
  // Builds the notice of one gap (drop_with_gap; without one, a full queue disconnects).
  using GapNotice = std::function<Frame(const StreamGap&)>;
  // Runs once, on the loop thread, when the subscription failed: a write failed (deadline, I/O
  // error, abort, sink full) or the queue overflowed under `disconnect`. The subscription is
  // already stopped; the owner removes it. Not called when the sink was simply closed.
  using FailureHandler = std::function<void(StreamSubscriber&, SinkError)>;

  // Starts paused: pushes queue up, nothing is delivered before resume(). `start_position` is
  // the position the snapshot ended at (the "last delivered" before any event).
  StreamSubscriber(Executor& executor, std::weak_ptr<FrameSink> sink, std::uint64_t start_position,
                   Options options, std::shared_ptr<StreamTotals> totals, GapNotice gap_notice,
                   FailureHandler on_failure);
  StreamSubscriber(const StreamSubscriber&) = delete;
  StreamSubscriber& operator=(const StreamSubscriber&) = delete;

  // Queues `event`, or applies the overflow policy when the queue is full.
  void push(const StreamEvent& event);
  // Like push, for a caller on a pool thread anyway: when this push made the subscriber ready,
  // the pass is handed to the caller instead of being scheduled. Returns true then, and the
  // caller must call drain_claimed() soon, holding no lock.
  [[nodiscard]] bool push_claiming(const StreamEvent& event);
  // Runs a claimed pass on the calling thread. Never blocks: it only hands frames to the sink.
  void drain_claimed();
  // EventSubscriber: a push at the next position. The caller holds no lock (EventSubscriber's
  // contract), so a pass this push makes ready runs right here: no hop, like a direct send.
  void send_text(Frame frame) override;
  // EventSubscriber: the broadcaster dropped it; stop().
  void ended() override { stop(); }
  // Starts delivery; call once the subscribe reply has been queued on the sink. Idempotent.
  void resume();
  // Idempotent. Ends the subscription: the queue is freed and a pass in progress hands nothing
  // more over. Frames already in the sink are still written.
  void stop();

  bool stopped() const;
  StreamStats stats() const;

 private:
  struct Entry {
    Frame frame;  // null for a standalone gap notice
    std::uint64_t position = 0;
    std::optional<StreamGap> gap_before;
  };

  // The disconnect policy applies (chosen, or drop_with_gap without a gap notice).
  bool disconnects() const { return options_.overflow == OverflowPolicy::disconnect || !gap_notice_; }
  bool enqueue_locked(const StreamEvent& event);
  // disconnect policy: hands over the queue, then goes live.
  void catch_up();
  // disconnect policy: one event straight to the sink; a refusal ends the subscription.
  void send_live(FrameSink* sink, Frame frame);
  void overflow_locked();
  bool claim_locked();
  void schedule_locked();
  void on_sent(SinkError result, std::size_t bytes);
  void disconnect_overflowed();  // loop thread, after overflow_locked()

  Executor& executor_;
  const std::weak_ptr<FrameSink> sink_;
  const Options options_;
  const std::shared_ptr<StreamTotals> totals_;
  const GapNotice gap_notice_;
  const FailureHandler on_failure_;

  mutable std::mutex mutex_;
  std::deque<Entry> queue_;
  bool paused_ = true;
  bool busy_ = false;  // a pass is claimed or running, or its batch is still in the sink
  bool stopped_ = false;
  std::atomic<bool> stop_requested_{false};  // stopped_, readable by a pass without the mutex
  std::atomic<bool> live_{false};  // disconnect policy, caught up: events bypass the queue
  bool failed_ = false;
  SinkError failure_ = SinkError::none;
  std::size_t outstanding_ = 0;  // frames of the current batch not yet completed
  Executor::Clock::time_point batch_started_{};
  std::uint64_t last_queued_position_ = 0;
  std::optional<StreamGap> gap_;  // drops since the last queued event, not yet in a notice
  StreamStats stats_;
};

}  // namespace car
