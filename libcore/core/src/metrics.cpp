#include "car/metrics.hpp"

#include <algorithm>

namespace car {
namespace {

// Process-wide because sinks are made by transports and embedders that hold no registry; one
// cache line each is plenty at the rates sinks write (one increment per batch, not per frame).
std::atomic<std::uint64_t> g_frames_written{0};
std::atomic<std::uint64_t> g_bytes_written{0};
std::atomic<std::uint64_t> g_refused_full{0};

}  // namespace

void LatencyHistogram::observe(std::chrono::nanoseconds duration) noexcept {
  const auto ns = static_cast<std::uint64_t>(std::max<std::int64_t>(0, duration.count()));
  // Rounded up: `le` is inclusive, so 100.5 µs must not count as <= 100 µs.
  const std::uint64_t us = ns / 1000 + (ns % 1000 != 0 ? 1 : 0);
  // The first bound >= the value; past the end is the +Inf slot.
  const auto* slot = std::lower_bound(bounds_us.begin(), bounds_us.end(), us);
  const auto index = static_cast<std::size_t>(slot - bounds_us.begin());
  buckets_[index].fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(ns, std::memory_order_relaxed);
}

LatencyHistogram::Snapshot LatencyHistogram::snapshot() const noexcept {
  Snapshot out;
  std::uint64_t running = 0;
  for (std::size_t i = 0; i < bucket_count; ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    out.cumulative[i] = running;
  }
  out.count = running + buckets_[bucket_count].load(std::memory_order_relaxed);
  out.sum_seconds = static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9;
  return out;
}

SinkTotals sink_totals() noexcept {
  SinkTotals out;
  out.frames_written = g_frames_written.load(std::memory_order_relaxed);
  out.bytes_written = g_bytes_written.load(std::memory_order_relaxed);
  out.refused_full = g_refused_full.load(std::memory_order_relaxed);
  return out;
}

namespace detail {

void count_sink_write(std::size_t frames, std::size_t bytes) noexcept {
  g_frames_written.fetch_add(frames, std::memory_order_relaxed);
  g_bytes_written.fetch_add(bytes, std::memory_order_relaxed);
}

void count_sink_refusal() noexcept { g_refused_full.fetch_add(1, std::memory_order_relaxed); }

}  // namespace detail
}  // namespace car
