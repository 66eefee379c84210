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

  TEST_CASE("own page: Origin http://<Host> on a loopback Host or the listener's own address") {
    auto own = [](const char* host, const char* origin, const char* authority) {
      UpgradeRequest request;
      request.host = host;
      request.origin = origin;
      request.has_origin = true;
      return is_own_page_origin(request, authority);
    };
    CHECK(own("127.0.0.1:9100", "http://127.0.0.1:9100", ""));
    CHECK(own("localhost:9100", "http://LOCALHOST:9100", "127.0.0.1:9100"));
    CHECK(own("[::1]:9100", "http://[::1]:9100", ""));
    CHECK(own("192.168.1.5:9100", "http://192.168.1.5:9100", "192.168.1.5:9100"));
    CHECK(own("192.168.1.5", "http://192.168.1.5", "192.168.1.5:80"));
    // Another page on this machine (another port), https, or a path is not the page we served.
    CHECK_FALSE(own("127.0.0.1:9100", "http://127.0.0.1:8000", ""));
    CHECK_FALSE(own("127.0.0.1:9100", "https://127.0.0.1:9100", ""));
    CHECK_FALSE(own("127.0.0.1:9100", "http://127.0.0.1:9100/", ""));
    // A DNS name that may have been rebound to us, or an address that is not the listener's.
    CHECK_FALSE(own("evil.example:9100", "http://evil.example:9100", "127.0.0.1:9100"));
    CHECK_FALSE(own("192.168.1.6:9100", "http://192.168.1.6:9100", "192.168.1.5:9100"));
    CHECK_FALSE(own("192.168.1.5", "http://192.168.1.5", "192.168.1.5:9100"));
    CHECK_FALSE(own("0.0.0.0:9100", "http://0.0.0.0:9100", ""));
    // A name under .localhost is local only if the resolver says so: not trusted.
    CHECK_FALSE(own("evil.localhost:9100", "http://evil.localhost:9100", "127.0.0.1:9100"));
    // No Origin (not a browser) or no Host: not this rule's to allow.
    UpgradeRequest no_origin;
    no_origin.host = "127.0.0.1:9100";
    CHECK_FALSE(is_own_page_origin(no_origin, ""));
    CHECK_FALSE(own("", "http://", ""));
  }

  TEST_CASE("own page on a TLS listener: Origin https://<Host>, and http:// is not it") {
    UpgradeRequest request;
    request.host = "127.0.0.1:9443";
    request.has_origin = true;
    request.origin = "https://127.0.0.1:9443";
    CHECK(is_own_page_origin(request, "127.0.0.1:9443", true));
    CHECK_FALSE(is_own_page_origin(request, "127.0.0.1:9443", false));
    request.origin = "http://127.0.0.1:9443";
    CHECK_FALSE(is_own_page_origin(request, "127.0.0.1:9443", true));
  }
}
