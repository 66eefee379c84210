// The sd_notify texts and the watchdog interval (systemd_messages.hpp; docs/SYSTEMD.md).
#include <doctest/doctest.h>

#include "systemd_messages.hpp"

using namespace car::daemon;

TEST_SUITE("systemd_messages") {
  TEST_CASE("READY=1 names every listener in STATUS=") {
    CHECK(ready_message({"ws://127.0.0.1:9100", "unix:/run/car-daemon.sock"}) ==
          "READY=1\nSTATUS=listening on ws://127.0.0.1:9100, unix:/run/car-daemon.sock");
    CHECK(ready_message({"stdio"}) == "READY=1\nSTATUS=listening on stdio");
    CHECK(ready_message({}) == "READY=1\nSTATUS=running");
  }

  TEST_CASE("a newline in a listener or a reason cannot start another assignment") {
    CHECK(ready_message({"unix:/tmp/a\nWATCHDOG=1"}) ==
          "READY=1\nSTATUS=listening on unix:/tmp/a WATCHDOG=1");
    CHECK(stopping_message("x\nREADY=1") == "STOPPING=1\nSTATUS=shutting down (x READY=1)");
  }

  TEST_CASE("STOPPING=1 says why") {
    CHECK(stopping_message("SIGTERM") == "STOPPING=1\nSTATUS=shutting down (SIGTERM)");
  }

  TEST_CASE("the watchdog pings at half of WATCHDOG_USEC, in ms, never 0 when armed") {
    CHECK(watchdog_ping_interval_ms(0) == 0);
    CHECK(watchdog_ping_interval_ms(20'000'000) == 10'000);
    CHECK(watchdog_ping_interval_ms(3'000'000) == 1'500);
    CHECK(watchdog_ping_interval_ms(1'999) == 1);  // < 1 ms: as often as a timer can
    CHECK(watchdog_ping_interval_ms(1) == 1);
  }
}
