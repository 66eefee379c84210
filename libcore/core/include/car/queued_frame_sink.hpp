#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "car/executor.hpp"
#include "car/export.hpp"
#include "car/frame_sink.hpp"

// The shared machinery of every FrameSink carcore ships: bounded queue, per-frame deadlines,
// graceful close with a bounded flush, end observers, backpressure watermarks, and the
// cross-thread marshalling onto the loop. A transport derives from it and implements two hooks:
// start_write (write a batch of frames, then call write_done) and shut_down_transport.
//
// Lifetime: always owned by a shared_ptr (posted tasks keep it alive). The transport keeps its
// handle's memory alive until libuv's close callback, independently of this object.
// Threading: public members are callable from any thread; the protected hooks run on the loop
// thread of the executor given at construction.
namespace car {

class CAR_API QueuedFrameSink : public FrameSink, public std::enable_shared_from_this<QueuedFrameSink> {
 public:
  QueuedFrameSink(Executor& executor, SinkLimits limits);
  ~QueuedFrameSink() override;

  SinkError send(Frame frame, SendCompletion done = {},
                 std::chrono::milliseconds deadline = std::chrono::milliseconds{0}) override;
  SinkError send_reply(Frame frame, SendCompletion done = {}) override;
  // A control frame the transport encoded itself (a WebSocket pong), written as-is — no framing
  // prefix or suffix — in queue order. At most one such frame waits unsent: a newer one replaces
  // it and keeps its deadline, so a peer that floods pings and never reads holds one pong, not
  // one per ping (RFC 6455 §5.5.3 allows answering only the latest). Not refused for size; refused
  // (closed) once the sink is no longer open.
  SinkError send_control(Frame encoded);
  void close(std::uint16_t code, std::string reason) override;
  void abort(SinkError why, std::string reason) override;
  void on_end(SinkEndObserver observer) override;
  bool is_open() const override;
  SinkStats stats() const override;

  // Backpressure toward the reader: `fn(true)` runs on the loop thread once queued bytes pass
  // `high` or queued frames pass half of limits.max_frames (2048 by default), `fn(false)` once
  // bytes are back at or below `low` and frames at or below a quarter of max_frames (1024).
  // Calls always report the state at the time they run, so the last call is the truth even when
  // transitions race.
  void set_watermarks(std::size_t high, std::size_t low, std::function<void(bool above)> fn);

  const SinkLimits& limits() const { return limits_; }
  Executor& executor() const { return executor_; }

 protected:
  struct Pending {
    Frame frame;
    SendCompletion done;
    Executor::Clock::time_point deadline;
    bool encoded = false;  // send_control: written as-is, without the transport's framing
  };
  using Batch = std::vector<Pending>;

  // Loop thread. Write every frame of `batch` in order as one write if possible, then call
  // write_done exactly once (synchronously or later). `batch` stays alive and unchanged until then.
  virtual void start_write(const Batch& batch) = 0;

  // Loop thread, once. Close the transport: after a graceful close every accepted frame has been
  // written; after a failure, close at once (a write still in flight then reports to write_done).
  virtual void shut_down_transport(const SinkEnd& end) = 0;

  // Loop thread. The write started by start_write finished (none) or failed (io_error).
  void write_done(SinkError result);

  // Loop thread. The transport learnt the peer is gone (EOF, reset) or it closed on its own.
  void transport_ended(SinkError why, std::string reason);

 private:
  enum class State : std::uint8_t { open, closing, ending, ended };

  SinkError enqueue(Frame frame, SendCompletion done, std::chrono::milliseconds deadline,
                    bool bounded);
  bool above_high_locked() const;
  bool at_or_below_low_locked() const;

  void schedule_pump_locked();
  void pump();
  void arm_deadline_locked();
  void on_deadline_timer();
  void end_now(SinkEnd end);
  void report_watermark();

  Executor& executor_;
  const SinkLimits limits_;

  mutable std::mutex mutex_;
  State state_ = State::open;
  Batch queue_;      // accepted, not yet handed to the transport
  Batch inflight_;   // handed to the transport, write not finished
  bool writing_ = false;
  bool pump_scheduled_ = false;
  std::size_t queued_frames_ = 0;  // queue_ + inflight_
  std::size_t queued_bytes_ = 0;
  SinkEnd end_;
  SinkEnd close_request_;
  std::vector<SinkEndObserver> observers_;
  Executor::TimerId deadline_timer_ = 0;
  Executor::Clock::time_point deadline_at_{};
  Executor::TimerId close_timer_ = 0;

  std::size_t high_watermark_ = 0;
  std::size_t low_watermark_ = 0;
  std::function<void(bool)> watermark_fn_;
  bool reported_above_ = false;
};

}  // namespace car
