#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

// The texts and numbers of car-daemon's sd_notify(3) messages (systemd_notify.hpp), kept apart
// from libsystemd so the unit tests check them in every build.
namespace car::daemon {

// "READY=1\nSTATUS=listening on ws://127.0.0.1:9100, unix:/run/car/car.sock": sent once every
// listener listens. `listeners` are the printed `listening ...` targets ("stdio" included).
std::string ready_message(const std::vector<std::string>& listeners);

// "STOPPING=1\nSTATUS=shutting down (SIGTERM)".
std::string stopping_message(std::string_view why);

// How often to send WATCHDOG=1 for a watchdog of `watchdog_usec` microseconds
// (WATCHDOG_USEC): half of it, as systemd advises, so one late ping still arrives in time;
// at least 1 ms. 0 for 0 (no watchdog).
std::uint64_t watchdog_ping_interval_ms(std::uint64_t watchdog_usec);

}  // namespace car::daemon
