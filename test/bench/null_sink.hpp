#pragma once

// Shared by the in-process micro-benchmarks: a sink that accepts and drops every frame (so they
// measure the core, not a transport), and the calling thread's CPU clock.
//
// Every send completes at once, inside the call, as if the write had been instantaneous: a
// subscription (StreamSubscriber) hands over its next batch only after the previous one
// completed, so a sink that never completed would look like a peer that stopped reading.

#include <ctime>
#include <string>

#include "car/frame_sink.hpp"

namespace car::bench {

class NullSink final : public FrameSink {
 public:
  SinkError send(Frame frame, SendCompletion done, std::chrono::milliseconds) override {
    bytes += frame->size();
    ++frames;
    if (done) done(SinkError::none);
    return SinkError::none;
  }
  void close(std::uint16_t, std::string) override {}
  void abort(SinkError, std::string) override {}
  void on_end(SinkEndObserver) override {}
  bool is_open() const override { return true; }
  SinkStats stats() const override { return {}; }
  std::size_t bytes = 0;
  std::size_t frames = 0;
};

inline double thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

}  // namespace car::bench
