#include "car/host/time_format.hpp"

#include <fmt/format.h>

namespace car::host {

WallClock system_wall_clock() {
  return [] { return std::chrono::system_clock::now(); };
}

std::string format_rfc3339_ms(WallTime time) {
  using namespace std::chrono;
  // floor (not truncation toward zero) keeps pre-epoch times on the right day and millisecond.
  auto ms = floor<milliseconds>(time);
  auto day = floor<days>(ms);
  year_month_day ymd{day};
  hh_mm_ss<milliseconds> hms{ms - day};
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", static_cast<int>(ymd.year()),
                     static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                     hms.hours().count(), hms.minutes().count(), hms.seconds().count(),
                     hms.subseconds().count());
}

}  // namespace car::host
