#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "viewer_route.hpp"

#include <doctest/doctest.h>

#include <string>

#include "viewer_page.hpp"

using car::daemon::viewer_line;
using car::daemon::viewer_page_handler;

TEST_SUITE("viewer_route") {
  TEST_CASE("the viewer: line turns the listener's ws:// address into the page's http:// link") {
    CHECK(viewer_line("ws://127.0.0.1:9100", "abc-_XYZ09") ==
          "viewer: http://127.0.0.1:9100/#token=abc-_XYZ09\n");
    CHECK(viewer_line("ws://[::1]:9100", "t") == "viewer: http://[::1]:9100/#token=t\n");
    // A TLS listener's page is https://.
    CHECK(viewer_line("wss://127.0.0.1:9443", "t") == "viewer: https://127.0.0.1:9443/#token=t\n");
    // Bytes outside base64url would change meaning in a fragment ('&' splits it, '+' is a space
    // to URLSearchParams): they are percent-encoded.
    CHECK(viewer_line("ws://127.0.0.1:1", "a&b+c d%") ==
          "viewer: http://127.0.0.1:1/#token=a%26b%2Bc%20d%25\n");
  }

  TEST_CASE("/ answers the embedded page as HTML with its Content-Security-Policy") {
    car::ws::PlainHttpRequest request;
    request.method = "GET";
    request.target = "/";
    auto response = viewer_page_handler()(request);
    CHECK(response.status == 200);
    CHECK(response.content_type == "text/html; charset=utf-8");
    CHECK(response.body == std::string(car::daemon::viewer_page_html));
    CHECK(response.body.rfind("<!doctype html>", 0) == 0);
    std::string csp, referrer;
    for (const auto& [name, value] : response.headers) {
      if (name == "Content-Security-Policy") csp = value;
      if (name == "Referrer-Policy") referrer = value;
    }
    CHECK(csp == std::string(car::daemon::viewer_page_csp));
    CHECK(csp.find("default-src 'none'") != std::string::npos);
    CHECK(csp.find("connect-src 'self'") != std::string::npos);
    CHECK(csp.find("script-src 'sha256-") != std::string::npos);
    CHECK(csp.find("unsafe") == std::string::npos);
    CHECK(referrer == "no-referrer");
  }
}
