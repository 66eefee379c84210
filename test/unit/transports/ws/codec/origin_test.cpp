// Tests for the Origin policy of WebSocket upgrades (origin.hpp).
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "car/ws/handshake.hpp"
#include "car/ws/origin.hpp"

using namespace car::ws;

TEST_SUITE("ws_origin") {
  TEST_CASE("loopback origins are recognised, look-alikes are not") {
    for (const char* origin :
         {"http://localhost", "http://localhost:3000", "https://LOCALHOST:443", "http://127.0.0.1",
          "http://127.0.0.1:9100", "http://127.255.10.1:8080", "http://[::1]", "http://[::1]:9100",
          "http://viewer.localhost:8000", "HTTPS://a.b.localhost"}) {
      CAPTURE(origin);
      CHECK(is_loopback_origin(origin));
    }
    for (const char* origin :
         {"null", "", "http://", "file://", "ws://localhost", "http://localhost.evil.com",
          "http://evil-localhost", "http://.localhost", "http://localhost:", "http://localhost:x",
          "http://localhost:123456", "http://128.0.0.1", "http://127.0.0", "http://127.0.0.1.5",
          "http://127.0.0.256", "http://127.0.0.1/path", "http://[::2]", "http://[::1",
          "http://[::1]x", "https://127.0.0.1@evil.com", "http://0.0.0.0", "http://a_b.localhost"}) {
      CAPTURE(origin);
      CHECK_FALSE(is_loopback_origin(origin));
    }
  }

  TEST_CASE("loopback_only: loopback and listed origins pass, every other origin is refused") {
    UpgradeRequest request;
    request.has_origin = true;
    const std::vector<std::string> none;
    const std::vector<std::string> listed = {"https://app.example.com"};
    auto allowed = [&](const std::string& origin, const std::vector<std::string>& list) {
      request.origin = origin;
      return origin_allowed(request, list, UnlistedOrigins::loopback_only);
    };
    CHECK(allowed("http://localhost:5173", none));
    CHECK(allowed("http://127.0.0.1:9100", listed));
    CHECK(allowed("https://APP.example.com", listed));
    CHECK_FALSE(allowed("https://evil.example", none));
    CHECK_FALSE(allowed("https://evil.example", listed));
    CHECK_FALSE(allowed("null", none));
    // follow_allowlist: the same empty list lets the foreign page in — the difference the daemon
    // relies on when authentication is off.
    request.origin = "https://evil.example";
    CHECK(origin_allowed(request, none, UnlistedOrigins::follow_allowlist));
    // A client that sends no Origin is never a browser page: allowed under both policies.
    UpgradeRequest no_origin;
    CHECK(origin_allowed(no_origin, none, UnlistedOrigins::loopback_only));
    CHECK(origin_allowed(no_origin, listed, UnlistedOrigins::loopback_only));
  }
}
