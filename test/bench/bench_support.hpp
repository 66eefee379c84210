// Small helpers shared by car-bench's scenarios and servers: a monotonic clock, latency samples
// with percentiles, the server's resident set from /proc, and one-line JSON output.
//
// Everything here is single-threaded (car-bench runs one epoll loop on one core).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>
#include <string_view>
#include <vector>

namespace car_bench {

inline std::uint64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ULL +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

// Latency samples in nanoseconds. The capacity is reserved up front, so recording never
// allocates in the hot loop; samples beyond the capacity are counted but not kept (the
// percentiles then describe the first `capacity` samples, which the output says via `kept`).
class Samples {
 public:
  explicit Samples(std::size_t capacity = 0) { values_.reserve(capacity); }
  void reserve(std::size_t capacity) { values_.reserve(capacity); }
  void add(std::uint64_t ns) {
    ++count_;
    if (values_.size() < values_.capacity()) values_.push_back(ns);
  }
  std::size_t count() const { return count_; }
  std::size_t kept() const { return values_.size(); }
  // Sorts once; call after recording is over.
  void finish() { std::sort(values_.begin(), values_.end()); }
  // Percentile in microseconds (nearest rank) of the sorted samples; 0 when empty.
  double pct_us(double p) const {
    if (values_.empty()) return 0;
    auto rank = static_cast<std::size_t>(p / 100.0 * static_cast<double>(values_.size()));
    if (rank >= values_.size()) rank = values_.size() - 1;
    return static_cast<double>(values_[rank]) / 1000.0;
  }
  double max_us() const {
    return values_.empty() ? 0 : static_cast<double>(values_.back()) / 1000.0;
  }
  void clear() {
    values_.clear();
    count_ = 0;
  }

 private:
  std::vector<std::uint64_t> values_;
  std::size_t count_ = 0;
};

// VmRSS of a process in KiB from /proc/PID/status; -1 if it cannot be read.
inline long read_rss_kib(int pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/status", pid);
  FILE* f = std::fopen(path, "r");
  if (f == nullptr) return -1;
  char line[256];
  long kib = -1;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::strncmp(line, "VmRSS:", 6) == 0) {
      kib = std::strtol(line + 6, nullptr, 10);
      break;
    }
  }
  std::fclose(f);
  return kib;
}

// Builds one flat JSON object, printed as one line on stdout.
class JsonLine {
 public:
  JsonLine& str(std::string_view key, std::string_view value) {
    sep(key);
    out_ += '"';
    for (char c : value) {
      if (c == '"' || c == '\\') out_ += '\\';
      out_ += c;
    }
    out_ += '"';
    return *this;
  }
  JsonLine& num(std::string_view key, double value) {
    sep(key);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.6g", value);
    out_ += buf;
    return *this;
  }
  JsonLine& integer(std::string_view key, long long value) {
    sep(key);
    out_ += std::to_string(value);
    return *this;
  }
  JsonLine& null(std::string_view key) {
    sep(key);
    out_ += "null";
    return *this;
  }
  void print() {
    out_ += '}';
    std::printf("%s\n", out_.c_str());
    std::fflush(stdout);
  }

 private:
  void sep(std::string_view key) {
    out_ += out_.size() > 1 ? "," : "";
    out_ += '"';
    out_.append(key);
    out_ += "\":";
  }
  std::string out_ = "{";
};

// Parses the unsigned decimal integer that follows `key` (e.g. "\"cursor\":") in `text`,
// searching from `from`; returns false if the key is absent or no digit follows.
inline bool find_uint(std::string_view text, std::string_view key, std::uint64_t& value,
                      std::size_t from = 0) {
  auto at = text.find(key, from);
  if (at == std::string_view::npos) return false;
  std::size_t i = at + key.size();
  if (i >= text.size() || text[i] < '0' || text[i] > '9') return false;
  std::uint64_t v = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    v = v * 10 + static_cast<std::uint64_t>(text[i] - '0');
    ++i;
  }
  value = v;
  return true;
}

// Sums every unsigned integer following `key` in `text`.
inline std::uint64_t sum_uints(std::string_view text, std::string_view key) {
  std::uint64_t total = 0;
  std::size_t from = 0;
  while (true) {
    auto at = text.find(key, from);
    if (at == std::string_view::npos) return total;
    std::uint64_t v = 0;
    if (find_uint(text, key, v, at)) total += v;
    from = at + key.size();
  }
}

}  // namespace car_bench
