#include "systemd_messages.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace car::daemon {
namespace {

// STATUS= is one line of free text: a newline in it would start a new (bogus) assignment.
std::string one_line(std::string_view text) {
  std::string line(text);
  std::replace(line.begin(), line.end(), '\n', ' ');
  return line;
}

}  // namespace

std::string ready_message(const std::vector<std::string>& listeners) {
  std::string joined;
  for (const auto& listener : listeners) {
    if (!joined.empty()) joined += ", ";
    joined += listener;
  }
  if (joined.empty()) return "READY=1\nSTATUS=running";
  return fmt::format("READY=1\nSTATUS=listening on {}", one_line(joined));
}

std::string stopping_message(std::string_view why) {
  return fmt::format("STOPPING=1\nSTATUS=shutting down ({})", one_line(why));
}

std::uint64_t watchdog_ping_interval_ms(std::uint64_t watchdog_usec) {
  if (watchdog_usec == 0) return 0;
  return std::max<std::uint64_t>(1, watchdog_usec / 2 / 1000);
}

}  // namespace car::daemon
