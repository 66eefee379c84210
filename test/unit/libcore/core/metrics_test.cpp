// Tests for the process-wide instruments (metrics.hpp).
#include <doctest/doctest.h>

#include <chrono>
#include <thread>
#include <vector>

#include "car/metrics.hpp"

using namespace car;
using std::chrono::microseconds;
using std::chrono::nanoseconds;

TEST_SUITE("metrics") {
  TEST_CASE("an empty histogram") {
    LatencyHistogram h;
    const auto s = h.snapshot();
    CHECK(s.count == 0);
    CHECK(s.sum_seconds == 0);
    for (auto c : s.cumulative) CHECK(c == 0);
  }

  TEST_CASE("bounds are inclusive upper bounds; buckets are cumulative") {
    LatencyHistogram h;
    h.observe(microseconds(50));          // <= 100 µs
    h.observe(microseconds(100));         // exactly the first bound: still the first bucket
    h.observe(nanoseconds(100'001));      // just above it: the second
    h.observe(microseconds(700));         // <= 1 ms (index 3)
    h.observe(std::chrono::seconds(3));   // <= 10 s (the last bound)
    h.observe(std::chrono::seconds(20));  // above every bound: only +Inf
    h.observe(nanoseconds(-5));           // a clock that went backwards counts as 0
    const auto s = h.snapshot();
    CHECK(s.count == 7);
    CHECK(s.cumulative[0] == 3);  // 50 µs, 100 µs, -5 ns
    CHECK(s.cumulative[1] == 4);
    CHECK(s.cumulative[2] == 4);
    CHECK(s.cumulative[3] == 5);
    CHECK(s.cumulative[13] == 5);  // <= 2.5 s
    CHECK(s.cumulative[14] == 6);  // <= 10 s
    for (std::size_t i = 1; i < s.cumulative.size(); ++i)
      CHECK(s.cumulative[i] >= s.cumulative[i - 1]);
    CHECK(s.sum_seconds == doctest::Approx(23.000950001).epsilon(1e-9));
  }

  TEST_CASE("bounds ascend and end at 10 s") {
    for (std::size_t i = 1; i < LatencyHistogram::bucket_count; ++i) {
      CHECK(LatencyHistogram::bounds_us[i] > LatencyHistogram::bounds_us[i - 1]);
    }
    CHECK(LatencyHistogram::bounds_us.front() == 100);
    CHECK(LatencyHistogram::bounds_us.back() == 10'000'000);
  }

  TEST_CASE("observations from several threads are all counted") {
    LatencyHistogram h;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&h] {
        for (int i = 0; i < 1000; ++i) h.observe(microseconds(i));
      });
    }
    for (auto& t : threads) t.join();
    const auto s = h.snapshot();
    CHECK(s.count == 4000);
    CHECK(s.cumulative[0] == 4 * 101);  // 0..100 µs
  }

  TEST_CASE("sink totals add what sinks report") {
    const SinkTotals before = sink_totals();
    detail::count_sink_write(3, 120);
    detail::count_sink_write(1, 5);
    detail::count_sink_refusal();
    const SinkTotals after = sink_totals();
    CHECK(after.frames_written - before.frames_written == 4);
    CHECK(after.bytes_written - before.bytes_written == 125);
    CHECK(after.refused_full - before.refused_full == 1);
  }
}
