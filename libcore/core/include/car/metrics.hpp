#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

#include "car/export.hpp"

// Cheap process-wide instruments for a metrics endpoint (car-daemon's /metrics): counters and
// gauges are relaxed atomics — no ordering with anything else, only eventual visibility, which is
// all a scrape needs — and a latency histogram with fixed bucket bounds, so recording never
// allocates or locks. A snapshot reads each atomic once; fields of one snapshot may be a few
// events apart from each other, never torn.
//
// Threads: every member may be called from any thread at any time.
namespace car {

// A latency histogram with fixed bounds (seconds, Prometheus' `le`): 100 µs … 10 s, roughly
// 1-2.5-5 per decade. Observations above the last bound land only in the implicit +Inf bucket.
class CAR_API LatencyHistogram {
 public:
  static constexpr std::size_t bucket_count = 15;
  // Upper bounds in microseconds, ascending; compared as integers (no floating point on the
  // hot path).
  static constexpr std::array<std::uint64_t, bucket_count> bounds_us = {
      100,   250,    500,    1000,   2500,    5000,    10000,   25000,
      50000, 100000, 250000, 500000, 1000000, 2500000, 10000000};

  struct Snapshot {
    // cumulative[i]: observations <= bounds_us[i] (Prometheus buckets are cumulative).
    std::array<std::uint64_t, bucket_count> cumulative{};
    // Every observation, the +Inf bucket; always >= cumulative.back() within one snapshot.
    std::uint64_t count = 0;
    double sum_seconds = 0;
  };

  void observe(std::chrono::nanoseconds duration) noexcept;
  Snapshot snapshot() const noexcept;

 private:
  // Non-cumulative counts; the last slot is "above every bound". count is their sum, so it
  // always agrees with the buckets of the same snapshot.
  std::array<std::atomic<std::uint64_t>, bucket_count + 1> buckets_{};
  std::atomic<std::uint64_t> sum_ns_{0};
};

// What every FrameSink of the process (QueuedFrameSink and the transports built on it) did,
// monotonic since the process started.
struct CAR_API SinkTotals {
  std::uint64_t frames_written = 0;  // frames handed to the OS
  std::uint64_t bytes_written = 0;   // their payload bytes (without transport framing)
  std::uint64_t refused_full = 0;    // sends refused with SinkError::full
};

// A snapshot of the process-wide sink totals.
CAR_API SinkTotals sink_totals() noexcept;

namespace detail {
// Called by QueuedFrameSink (relaxed increments).
CAR_API void count_sink_write(std::size_t frames, std::size_t bytes) noexcept;
CAR_API void count_sink_refusal() noexcept;
}  // namespace detail

}  // namespace car
