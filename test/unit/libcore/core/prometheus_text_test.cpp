// Tests for the Prometheus text exposition (prometheus_text.hpp).
#include <doctest/doctest.h>

#include <limits>
#include <string>
#include <vector>

#include "car/prometheus_text.hpp"

using namespace car;

TEST_SUITE("prometheus_text") {
  TEST_CASE("a counter and a gauge") {
    std::vector<MetricFamily> families = {
        {"car_frames_out_total", "Frames written.", MetricType::counter, 42, {}},
        {"car_connections_open", "Open now.", MetricType::gauge, 1.5, {}},
    };
    CHECK(format_prometheus_text(families) ==
          "# HELP car_frames_out_total Frames written.\n"
          "# TYPE car_frames_out_total counter\n"
          "car_frames_out_total 42\n"
          "# HELP car_connections_open Open now.\n"
          "# TYPE car_connections_open gauge\n"
          "car_connections_open 1.5\n");
  }

  TEST_CASE("a histogram: cumulative buckets in seconds, +Inf, sum and count") {
    MetricFamily h{"car_store_append_seconds", "Append time.", MetricType::histogram, 0, {}};
    for (std::size_t i = 0; i < LatencyHistogram::bucket_count; ++i) h.histogram.cumulative[i] = i;
    h.histogram.count = 20;
    h.histogram.sum_seconds = 0.25;
    CHECK(format_prometheus_text(std::vector<MetricFamily>{h}) ==
          "# HELP car_store_append_seconds Append time.\n"
          "# TYPE car_store_append_seconds histogram\n"
          "car_store_append_seconds_bucket{le=\"0.0001\"} 0\n"
          "car_store_append_seconds_bucket{le=\"0.00025\"} 1\n"
          "car_store_append_seconds_bucket{le=\"0.0005\"} 2\n"
          "car_store_append_seconds_bucket{le=\"0.001\"} 3\n"
          "car_store_append_seconds_bucket{le=\"0.0025\"} 4\n"
          "car_store_append_seconds_bucket{le=\"0.005\"} 5\n"
          "car_store_append_seconds_bucket{le=\"0.01\"} 6\n"
          "car_store_append_seconds_bucket{le=\"0.025\"} 7\n"
          "car_store_append_seconds_bucket{le=\"0.05\"} 8\n"
          "car_store_append_seconds_bucket{le=\"0.1\"} 9\n"
          "car_store_append_seconds_bucket{le=\"0.25\"} 10\n"
          "car_store_append_seconds_bucket{le=\"0.5\"} 11\n"
          "car_store_append_seconds_bucket{le=\"1\"} 12\n"
          "car_store_append_seconds_bucket{le=\"2.5\"} 13\n"
          "car_store_append_seconds_bucket{le=\"10\"} 14\n"
          "car_store_append_seconds_bucket{le=\"+Inf\"} 20\n"
          "car_store_append_seconds_sum 0.25\n"
          "car_store_append_seconds_count 20\n");
  }

  TEST_CASE("HELP escapes backslash and line feed; a bad name becomes a valid one") {
    std::vector<MetricFamily> families = {
        {"bad-name.x", "a\\b\nc \"quoted\"", MetricType::gauge, 0, {}},
        {"9lives", "", MetricType::counter, 1, {}},
        {"", "empty", MetricType::gauge, 2, {}},
    };
    CHECK(format_prometheus_text(families) ==
          "# HELP bad_name_x a\\\\b\\nc \"quoted\"\n"
          "# TYPE bad_name_x gauge\n"
          "bad_name_x 0\n"
          "# HELP _lives \n"
          "# TYPE _lives counter\n"
          "_lives 1\n"
          "# HELP _ empty\n"
          "# TYPE _ gauge\n"
          "_ 2\n");
  }

  TEST_CASE("special and large values") {
    auto line_of = [](double v) {
      std::vector<MetricFamily> f = {{"m", "h", MetricType::gauge, v, {}}};
      const std::string out = format_prometheus_text(f);
      return out.substr(out.rfind('\n', out.size() - 2) + 1);
    };
    CHECK(line_of(std::numeric_limits<double>::quiet_NaN()) == "m NaN\n");
    CHECK(line_of(std::numeric_limits<double>::infinity()) == "m +Inf\n");
    CHECK(line_of(-std::numeric_limits<double>::infinity()) == "m -Inf\n");
    CHECK(line_of(0) == "m 0\n");
    CHECK(line_of(-3) == "m -3\n");
    CHECK(line_of(18446744073709551616.0) == "m 1.8446744073709552e+19\n");
    CHECK(format_prometheus_text({}).empty());
  }
}
