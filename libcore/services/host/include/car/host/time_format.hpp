#pragma once

#include <chrono>
#include <functional>
#include <string>
#include "car/export.hpp"

// Wall-clock timestamps for HostState (PROTOCOL.md §4: RFC 3339, UTC, milliseconds). The clock is
// injectable so tests can pin timestamps; the steady Executor clock is for deadlines only.
namespace car::host {

using WallTime = std::chrono::system_clock::time_point;
// Returns the current wall time. Must be thread-safe (HostState calls it under its lock).
using WallClock = std::function<WallTime()>;

// The system clock.
CAR_API WallClock system_wall_clock();

// "2026-11-24T10:00:00.123Z": always UTC, always three fractional digits (truncated, not
// rounded). Times before 1970 are formatted as well (proleptic Gregorian calendar).
CAR_API std::string format_rfc3339_ms(WallTime time);

}  // namespace car::host
