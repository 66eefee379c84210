#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "car/export.hpp"
#include "car/metrics.hpp"

// The Prometheus text exposition format, version 0.0.4 (served as
// `text/plain; version=0.0.4; charset=utf-8`): for each metric family a `# HELP` line, a
// `# TYPE` line, then its samples, one per line, `\n`-terminated. Pure: no I/O, no clock, no
// global state, so the output is a function of the input alone.
//
// Families carry one unlabelled sample each (a counter or a gauge) or one histogram (rendered as
// `NAME_bucket{le="…"}` lines for each bound and `+Inf`, then `NAME_sum` and `NAME_count`).
// Counter names are expected to end in `_total` and durations to be in seconds; the formatter
// does not rename anything.
namespace car {

enum class MetricType { counter, gauge, histogram };

struct CAR_API MetricFamily {
  std::string name;  // [a-zA-Z_:][a-zA-Z0-9_:]*; any other character is written as '_'
  std::string help;  // free text; backslash and newline are escaped as the format requires
  MetricType type = MetricType::gauge;
  double value = 0;                      // counter / gauge
  LatencyHistogram::Snapshot histogram;  // histogram (bounds: LatencyHistogram::bounds_us)
};

// The exposition of `families`, in the order given. Values are written in the shortest form that
// reads back exactly (integers without a fraction); NaN and infinities as `NaN`, `+Inf`, `-Inf`.
CAR_API std::string format_prometheus_text(std::span<const MetricFamily> families);

// The Content-Type of format_prometheus_text's output.
inline constexpr std::string_view prometheus_content_type =
    "text/plain; version=0.0.4; charset=utf-8";

}  // namespace car
