#pragma once

// Shared by the in-process micro-benchmarks: a sink that accepts and drops every frame (so they
// measure the core, not a transport), and the calling thread's CPU clock.

#include <ctime>
#include <string>

#include "car/frame_sink.hpp"

namespace car::bench {

class NullSink final : public FrameSink {
 public:
  SinkError send(Frame frame, SendCompletion, std::chrono::milliseconds) override {
    bytes += frame->size();
    ++frames;
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
