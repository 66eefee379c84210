// Tests for plain HTTP responses and the DNS-rebinding Host check (plain_http.hpp).
#include <doctest/doctest.h>

#include <string>
#include <string_view>

#include "car/ws/plain_http.hpp"

using namespace car::ws;

namespace {

// The head (status line and headers, without the final blank line) and the body of a response.
struct Split {
  std::string head;
  std::string body;
};

Split split(const std::string& response) {
  const std::size_t end = response.find("\r\n\r\n");
  REQUIRE(end != std::string::npos);
  return {response.substr(0, end), response.substr(end + 4)};
}

}  // namespace

TEST_SUITE("plain_http") {
  TEST_CASE("a response is the status line, the transport's headers, the handler's, the body") {
    PlainHttpResponse r{200, "application/json", "{\"a\":1}\n", {{"X-Extra", "yes"}}};
    const std::string out = build_http_response(r, false);
    CHECK(out ==
          "HTTP/1.1 200 OK\r\n"
          "Content-Type: application/json\r\n"
          "Content-Length: 8\r\n"
          "Connection: close\r\n"
          "Cache-Control: no-store\r\n"
          "X-Content-Type-Options: nosniff\r\n"
          "X-Extra: yes\r\n"
          "\r\n"
          "{\"a\":1}\n");
  }

  TEST_CASE("HEAD: the same head, Content-Length of the body, and no body") {
    PlainHttpResponse r{200, "text/plain; charset=utf-8", "twelve bytes", {}};
    const Split get = split(build_http_response(r, false));
    const Split head = split(build_http_response(r, true));
    CHECK(get.body == "twelve bytes");
    CHECK(head.body.empty());
    CHECK(head.head == get.head);
    CHECK(head.head.find("\r\nContent-Length: 12") != std::string::npos);
  }

  TEST_CASE("header pairs that could split the response or replace ours are dropped") {
    PlainHttpResponse r;
    r.body = "x";
    r.headers = {
        {"Allow", "GET, HEAD"},                      // kept
        {"X-Tab", "a\tb"},                           // kept: tab is allowed in a value
        {"X-Injected", "a\r\nSet-Cookie: owned=1"},  // CR LF in the value
        {"X-Lf", "a\nb"},                            // bare LF
        {"X-Nul", std::string("a\0b", 3)},           // other control characters
        {"X-Del", "a\x7f"},
        {"Bad Name", "v"},  // not a token
        {"Bad:Name", "v"},
        {"", "v"},
        {"Content-Length", "0"},  // the transport's own headers
        {"content-type", "text/html"},
        {"CONNECTION", "keep-alive"},
        {"Cache-Control", "max-age=60"},
        {"Transfer-Encoding", "chunked"},
        {"X-Content-Type-Options", "none"},
    };
    const Split out = split(build_http_response(r, false));
    CHECK(out.head.find("\r\nAllow: GET, HEAD") != std::string::npos);
    CHECK(out.head.find("\r\nX-Tab: a\tb") != std::string::npos);
    for (std::string_view gone : {"X-Injected", "Set-Cookie", "X-Lf", "X-Nul", "X-Del", "Bad",
                                  "text/html", "keep-alive", "max-age", "chunked", "none"}) {
      CAPTURE(gone);
      CHECK(out.head.find(gone) == std::string::npos);
    }
    CHECK(out.head.find("Content-Length: 1") != std::string::npos);
    CHECK(out.body == "x");
    // Exactly the six lines we write plus the two kept ones.
    std::size_t lines = 0;
    for (std::size_t at = 0; (at = out.head.find("\r\n", at)) != std::string::npos; at += 2)
      ++lines;
    CHECK(lines == 7);
  }

  TEST_CASE("an unusable status or Content-Type is replaced, never written raw") {
    PlainHttpResponse bad_status{42, "text/plain", "", {}};
    CHECK(
        build_http_response(bad_status, false).rfind("HTTP/1.1 500 Internal Server Error\r\n", 0) ==
        0);
    PlainHttpResponse bad_type{200, "text/plain\r\nX-Evil: 1", "", {}};
    const std::string out = build_http_response(bad_type, false);
    CHECK(out.find("X-Evil") == std::string::npos);
    CHECK(out.find("\r\nContent-Type: application/octet-stream\r\n") != std::string::npos);
  }

  TEST_CASE("reason phrases") {
    CHECK(http_reason_phrase(200) == "OK");
    CHECK(http_reason_phrase(404) == "Not Found");
    CHECK(http_reason_phrase(405) == "Method Not Allowed");
    CHECK(http_reason_phrase(421) == "Misdirected Request");
    CHECK(http_reason_phrase(299) == "Error");
    CHECK(build_http_response({421, "text/plain", "", {}}, false)
              .rfind("HTTP/1.1 421 Misdirected Request\r\n", 0) == 0);
  }

  TEST_CASE("host_is_local: loopback names, with or without a port") {
    for (std::string_view host : {"localhost", "LOCALHOST", "localhost:9100", "127.0.0.1", "127.0.0.1:9100", "127.0.0.2",
                                  "127.255.255.254:80", "[::1]", "[::1]:1", "[::1]:65535"}) {
      CAPTURE(host);
      CHECK(host_is_local(host, "127.0.0.1:9100"));
      CHECK(host_is_local(host, ""));
    }
  }

  TEST_CASE("host_is_local: any other name or address is refused") {
    for (std::string_view host : {"evil.example",
                                  "evil.example:9100",
                                  "localhost.evil.example",
                                  "127.0.0.1.evil.example",
                                  "evillocalhost",
                                  ".localhost",
                                  "foo.localhost",
                                  "A.b.Localhost:1",
                                  "10.0.0.1",
                                  "128.0.0.1",
                                  "0.0.0.0",
                                  "127.1",
                                  "127.0.0.01",
                                  "127.0.0.256",
                                  "0x7f.0.0.1",
                                  "[::2]",
                                  "[::ffff:127.0.0.1]",
                                  "::1",
                                  "localhost:",
                                  "localhost:99999",
                                  "localhost:9a",
                                  "[::1",
                                  "[::1]x",
                                  "",
                                  ":9100"}) {
      CAPTURE(host);
      CHECK_FALSE(host_is_local(host, "127.0.0.1:9100"));
    }
  }

  TEST_CASE("host_is_local: the listener's own address, exactly and with its port") {
    CHECK(host_is_local("192.168.1.5:9100", "192.168.1.5:9100"));
    CHECK(host_is_local("[FE80::1]:9100", "[fe80::1]:9100"));
    CHECK_FALSE(host_is_local("192.168.1.5", "192.168.1.5:9100"));
    CHECK_FALSE(host_is_local("192.168.1.5:9101", "192.168.1.5:9100"));
    CHECK_FALSE(host_is_local("192.168.1.6:9100", "192.168.1.5:9100"));
    CHECK_FALSE(host_is_local("192.168.1.5:9100", ""));
  }
}
