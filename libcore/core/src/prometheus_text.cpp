#include "car/prometheus_text.hpp"

#include <fmt/format.h>

#include <cmath>

namespace car {
namespace {

bool name_char(char c, bool first) noexcept {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':') return true;
  return !first && c >= '0' && c <= '9';
}

// A metric name as the format allows it. Names come from code, not from peers, so this only keeps
// a typo from producing an exposition that a scraper rejects as a whole.
std::string sanitized_name(std::string_view name) {
  std::string out(name.empty() ? "_" : name);
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (!name_char(out[i], i == 0)) out[i] = '_';
  }
  return out;
}

// HELP text escaping (format 0.0.4): `\` as `\\`, line feed as `\n`.
void append_help(std::string& out, std::string_view help) {
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

void append_value(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
  } else if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
  } else {
    // fmt's default is the shortest round-trip form: 3 for 3.0, 0.00025 for 2.5e-4.
    fmt::format_to(std::back_inserter(out), "{}", v);
  }
}

std::string_view type_name(MetricType type) noexcept {
  switch (type) {
    case MetricType::counter:
      return "counter";
    case MetricType::gauge:
      return "gauge";
    case MetricType::histogram:
      return "histogram";
  }
  return "untyped";
}

void append_histogram(std::string& out, const std::string& name,
                      const LatencyHistogram::Snapshot& h) {
  for (std::size_t i = 0; i < LatencyHistogram::bucket_count; ++i) {
    out += name;
    out += "_bucket{le=\"";
    append_value(out, static_cast<double>(LatencyHistogram::bounds_us[i]) / 1e6);
    out += "\"} ";
    out += std::to_string(h.cumulative[i]);
    out += '\n';
  }
  out += name;
  out += "_bucket{le=\"+Inf\"} ";
  out += std::to_string(h.count);
  out += '\n';
  out += name;
  out += "_sum ";
  append_value(out, h.sum_seconds);
  out += '\n';
  out += name;
  out += "_count ";
  out += std::to_string(h.count);
  out += '\n';
}

}  // namespace

std::string format_prometheus_text(std::span<const MetricFamily> families) {
  std::string out;
  for (const auto& family : families) {
    const std::string name = sanitized_name(family.name);
    out += "# HELP ";
    out += name;
    out += ' ';
    append_help(out, family.help);
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += type_name(family.type);
    out += '\n';
    if (family.type == MetricType::histogram) {
      append_histogram(out, name, family.histogram);
    } else {
      out += name;
      out += ' ';
      append_value(out, family.value);
      out += '\n';
    }
  }
  return out;
}

}  // namespace car
