// Tests for the WebSocket upgrade handshake (handshake.hpp).
#include <doctest/doctest.h>

#include <string>
#include <string_view>
#include <vector>

#include "car/ws/handshake.hpp"

using namespace car::ws;

namespace {

const std::string sample_key = "dGhlIHNhbXBsZSBub25jZQ==";

// A valid request with one header replaced or removed: `replace` maps a header name to its new
// full line ("" removes it).
std::string request_with(std::string_view name = "", std::string_view line = "",
                         std::string_view request_line = "GET /chat HTTP/1.1") {
  const std::vector<std::pair<std::string, std::string>> headers = {
      {"Host", "Host: server.example.com"},
      {"Upgrade", "Upgrade: websocket"},
      {"Connection", "Connection: Upgrade"},
      {"Sec-WebSocket-Key", "Sec-WebSocket-Key: " + sample_key},
      {"Origin", "Origin: http://example.com"},
      {"Sec-WebSocket-Version", "Sec-WebSocket-Version: 13"},
  };
  std::string out(request_line);
  out += "\r\n";
  for (const auto& [n, l] : headers) {
    const std::string_view chosen = n == name ? line : std::string_view(l);
    if (chosen.empty()) continue;
    out.append(chosen).append("\r\n");
  }
  out += "\r\n";
  return out;
}

struct Verdict {
  HandshakeStatus status;
  int reject_status;
};

Verdict parse_whole(std::string_view input) {
  HandshakeParser p;
  const HandshakeStatus s = p.feed(input);
  return {s, p.reject_status()};
}

Verdict parse_bytewise(std::string_view input) {
  HandshakeParser p;
  HandshakeStatus s = HandshakeStatus::need_more;
  for (char c : input) s = p.feed(std::string_view(&c, 1));
  return {s, p.reject_status()};
}

// The status code a request is rejected with (0 if not rejected); checks both feeding modes.
int reject_code(std::string_view input) {
  const Verdict whole = parse_whole(input);
  const Verdict bytewise = parse_bytewise(input);
  CHECK(whole.status == bytewise.status);
  CHECK(whole.reject_status == bytewise.reject_status);
  return whole.status == HandshakeStatus::rejected ? whole.reject_status : 0;
}

}  // namespace

TEST_SUITE("handshake") {
  TEST_CASE("RFC 6455 sample accept key") {
    // RFC 6455 §1.3. (Some copies of the sample circulate garbled as
    // "s3pPLMBiTxaQ9kYGzZhZK+xOo0Y="; SHA-1 gives the RFC's value.)
    CHECK(compute_accept_key(sample_key) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    CHECK(compute_accept_key("x3JJHMbDL1EzLkh9GBhXDw==") == "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
  }

  TEST_CASE("a valid request, fed whole and one byte at a time") {
    const std::string req = request_with();
    for (bool bytewise : {false, true}) {
      CAPTURE(bytewise);
      HandshakeParser p;
      HandshakeStatus s = HandshakeStatus::need_more;
      if (bytewise) {
        for (std::size_t i = 0; i < req.size(); ++i) {
          CHECK(s == HandshakeStatus::need_more);
          s = p.feed(std::string_view(req).substr(i, 1));
        }
      } else {
        s = p.feed(req);
      }
      REQUIRE(s == HandshakeStatus::complete);
      CHECK(p.status() == HandshakeStatus::complete);
      CHECK(p.request().method == "GET");
      CHECK(p.request().target == "/chat");
      CHECK(p.request().host == "server.example.com");
      CHECK(p.request().key == sample_key);
      CHECK(p.request().version == "13");
      CHECK(p.request().has_origin);
      CHECK(p.request().origin == "http://example.com");
      CHECK_FALSE(p.request().wants_extensions);
      CHECK(p.leftover().empty());
      CHECK(p.reject_status() == 0);
      CHECK(p.reject_reason().empty());
      CHECK(build_accept_response(p.request()) ==
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n");
    }
  }

  TEST_CASE("need_more until the blank line") {
    HandshakeParser p;
    const std::string req = request_with();
    CHECK(p.feed(req.substr(0, req.size() - 2)) == HandshakeStatus::need_more);
    CHECK(p.feed("\r") == HandshakeStatus::need_more);
    CHECK(p.feed("\n") == HandshakeStatus::complete);
  }

  TEST_CASE("bytes after the header block are kept as leftover") {
    const std::string frame = "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
    HandshakeParser p;
    REQUIRE(p.feed(request_with() + frame) == HandshakeStatus::complete);
    CHECK(p.leftover() == frame);

    // With one-byte feeds the later bytes are appended.
    HandshakeParser q;
    const std::string all = request_with() + frame;
    for (char c : all) q.feed(std::string_view(&c, 1));
    CHECK(q.status() == HandshakeStatus::complete);
    CHECK(q.leftover() == frame);
  }

  TEST_CASE("header names and tokens are case-insensitive; lists and whitespace") {
    std::string req =
        "GET / HTTP/1.1\r\nhOsT:h\r\nUPGRADE:  WebSocket \r\nconnection: keep-alive,\tUPGRADE\r\n"
        "SEC-WEBSOCKET-KEY:\t" +
        sample_key + "\t\r\nsec-websocket-version: 13\r\n\r\n";
    HandshakeParser p;
    REQUIRE(p.feed(req) == HandshakeStatus::complete);
    CHECK(p.request().key == sample_key);
    CHECK(p.request().host == "h");
    CHECK_FALSE(p.request().has_origin);
    // Upgrade/Connection may also be split over several header lines.
    CHECK(reject_code(
              request_with("Connection", "Connection: keep-alive\r\nConnection: upgrade")) == 0);
    CHECK(reject_code(request_with("Upgrade", "Upgrade: h2c, websocket")) == 0);
  }

  TEST_CASE("bare LF line endings are accepted (lenient), bare CR is not") {
    std::string req = request_with();
    std::string lf;
    for (char c : req) {
      if (c != '\r') lf += c;
    }
    HandshakeParser p;
    CHECK(p.feed(lf) == HandshakeStatus::complete);
    CHECK(p.request().key == sample_key);
    CHECK(reject_code(request_with("Host", "Host: a\rb")) == 400);
  }

  TEST_CASE("extensions are noted, subprotocols ignored") {
    const std::string req = request_with("Origin",
                                         "Sec-WebSocket-Extensions: permessage-deflate\r\n"
                                         "Sec-WebSocket-Protocol: chat");
    HandshakeParser p;
    REQUIRE(p.feed(req) == HandshakeStatus::complete);
    CHECK(p.request().wants_extensions);
    CHECK(build_accept_response(p.request()).find("Sec-WebSocket-Extensions") == std::string::npos);
    CHECK(build_accept_response(p.request()).find("Sec-WebSocket-Protocol") == std::string::npos);
  }

  TEST_CASE("a version other than 13 gets 426") {
    CHECK(reject_code(request_with("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8")) == 426);
    CHECK(reject_code(request_with("Sec-WebSocket-Version", "Sec-WebSocket-Version: 13, 8")) ==
          426);
    CHECK(reject_code(request_with("Sec-WebSocket-Version", "Sec-WebSocket-Version:")) == 426);
    HandshakeParser p;
    REQUIRE(p.feed(request_with("Sec-WebSocket-Version", "Sec-WebSocket-Version: 7")) ==
            HandshakeStatus::rejected);
    CHECK(p.reject_status() == 426);
    CHECK_FALSE(p.reject_reason().empty());
    // 426 wins over every other defect of the request (PROTOCOL.md §1), e.g. no Connection header.
    std::string two_defects = request_with("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8");
    auto at = two_defects.find("Connection: Upgrade\r\n");
    REQUIRE(at != std::string::npos);
    two_defects.erase(at, std::string("Connection: Upgrade\r\n").size());
    CHECK(reject_code(two_defects) == 426);
  }

  TEST_CASE("every malformed request gets 400") {
    const std::string key = "Sec-WebSocket-Key";
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"missing version", request_with("Sec-WebSocket-Version", "")},
        {"missing key", request_with(key, "")},
        {"short key", request_with(key, key + ": dGhlIHNhbXBsZQ==")},
        {"15-byte key", request_with(key, key + ": AAAAAAAAAAAAAAAAAAAA")},
        {"17-byte key", request_with(key, key + ": AAAAAAAAAAAAAAAAAAAAAAA=")},
        {"unpadded key", request_with(key, key + ": dGhlIHNhbXBsZSBub25jZQ")},
        {"non-base64 key", request_with(key, key + ": dGhlIHNhbXBsZSBub25j*Q==")},
        {"misplaced padding", request_with(key, key + ": dGhlIHNhbXBsZSBub25j=Q==")},
        {"empty key", request_with(key, key + ":")},
        {"duplicate key",
         request_with(key, key + ": " + sample_key + "\r\n" + key + ": " + sample_key)},
        {"POST", request_with("", "", "POST /chat HTTP/1.1")},
        {"lowercase get", request_with("", "", "get /chat HTTP/1.1")},
        {"HTTP/1.0", request_with("", "", "GET /chat HTTP/1.0")},
        {"HTTP/2.0", request_with("", "", "GET /chat HTTP/2.0")},
        {"no target", request_with("", "", "GET  HTTP/1.1")},
        {"two spaces", request_with("", "", "GET /a b HTTP/1.1")},
        {"no version", request_with("", "", "GET /chat")},
        {"missing Upgrade", request_with("Upgrade", "")},
        {"wrong Upgrade", request_with("Upgrade", "Upgrade: h2c")},
        {"missing Connection", request_with("Connection", "")},
        {"Connection without upgrade", request_with("Connection", "Connection: keep-alive")},
        {"Connection with a substring", request_with("Connection", "Connection: upgrade2")},
        {"missing Host", request_with("Host", "")},
        {"duplicate Host", request_with("Host", "Host: a\r\nHost: b")},
        {"obsolete folding", request_with("Host", "Host: a\r\n b")},
        {"no colon", request_with("Origin", "Origin http://example.com")},
        {"space before colon", request_with("Origin", "Origin : http://example.com")},
        {"empty name", request_with("Origin", ": x")},
        {"NUL in value", request_with("Origin", std::string("Origin: a\0b", 11))},
        {"garbage", "hello\r\n\r\n"},
        {"binary garbage", "\x16\x03\x01\x02\x01\xfc\x03\x03\r\n\r\n"},
        {"high bytes", "\xff\xfe / HTTP/1.1\r\n\r\n"},
    };
    for (const auto& c : cases) {
      CAPTURE(c.first);
      CHECK(reject_code(c.second) == 400);
    }
  }

  TEST_CASE("obsolete line folding is refused as such") {
    HandshakeParser p;
    CHECK(p.feed(request_with("Host", "Host: a\r\n\tb:c")) == HandshakeStatus::rejected);
    CHECK(p.reject_status() == 400);
    CHECK(p.reject_reason() == "obsolete header line folding");
  }

  TEST_CASE("a rejection is final and explained") {
    HandshakeParser p;
    CHECK(p.feed("POST / HTTP/1.1\r\n") == HandshakeStatus::rejected);  // decided at once
    CHECK(p.reject_status() == 400);
    CHECK(p.reject_reason() == "method is not GET");
    CHECK(p.feed(request_with()) == HandshakeStatus::rejected);
    CHECK(p.request().key.empty());
  }

  TEST_CASE("the 8 KiB header limit") {
    // Pad with an ignored header so the whole block is exactly `total` bytes.
    auto padded = [](std::size_t total) {
      const std::size_t base = request_with("Origin", "X-Pad: ").size();
      return request_with("Origin", "X-Pad: " + std::string(total - base, 'p'));
    };
    const std::string at_limit = padded(8192);
    REQUIRE(at_limit.size() == 8192);
    CHECK(reject_code(at_limit) == 0);
    CHECK(parse_whole(at_limit).status == HandshakeStatus::complete);
    const std::string over = padded(8193);
    REQUIRE(over.size() == 8193);
    CHECK(reject_code(over) == 400);

    // An endless line is refused once it crosses the limit, without waiting for a newline.
    HandshakeParser p;
    CHECK(p.feed("GET / HTTP/1.1\r\nX: ") == HandshakeStatus::need_more);
    const std::string chunk(4096, 'a');
    HandshakeStatus s = HandshakeStatus::need_more;
    int feeds = 0;
    while (s == HandshakeStatus::need_more && feeds < 10) {
      s = p.feed(chunk);
      ++feeds;
    }
    CHECK(s == HandshakeStatus::rejected);
    CHECK(feeds == 2);
    CHECK(p.reject_status() == 400);

    // A smaller configured limit.
    HandshakeParser small(64);
    CHECK(small.feed(request_with()) == HandshakeStatus::rejected);
    // Bytes after the block do not count against the limit.
    HandshakeParser exact(request_with().size());
    CHECK(exact.feed(request_with() + std::string(10000, 'x')) == HandshakeStatus::complete);
    CHECK(exact.leftover().size() == 10000);
  }

  TEST_CASE("empty lines before the request line are skipped") {
    CHECK(reject_code("\r\n\r\n" + request_with()) == 0);
    CHECK(parse_whole("\r\n" + request_with()).status == HandshakeStatus::complete);
  }

  TEST_CASE("is_valid_websocket_key") {
    CHECK(is_valid_websocket_key(sample_key));
    CHECK(is_valid_websocket_key("AAAAAAAAAAAAAAAAAAAAAA=="));
    CHECK(is_valid_websocket_key("/+/+/+/+/+/+/+/+/+/+/w=="));
    CHECK_FALSE(is_valid_websocket_key(""));
    CHECK_FALSE(is_valid_websocket_key("AAAAAAAAAAAAAAAAAAAAA==="));
    CHECK_FALSE(is_valid_websocket_key("AAAAAAAAAAAAAAAAAAAAAAAA"));
    CHECK_FALSE(is_valid_websocket_key(" AAAAAAAAAAAAAAAAAAAAAA=="));
    CHECK_FALSE(is_valid_websocket_key("AAAAAAAAAAAAAAAAAAAAA-A=="));
  }

  TEST_CASE("reject responses") {
    const std::string r426 = build_reject_response(426, "unsupported version");
    CHECK(r426.rfind("HTTP/1.1 426 Upgrade Required\r\n", 0) == 0);
    CHECK(r426.find("\r\nSec-WebSocket-Version: 13\r\n") != std::string::npos);
    CHECK(r426.find("\r\nConnection: close\r\n") != std::string::npos);

    for (int status : {400, 403, 426, 503}) {
      CAPTURE(status);
      const std::string r = build_reject_response(status, "why");
      CHECK(r.rfind("HTTP/1.1 " + std::to_string(status) + " ", 0) == 0);
      CHECK(r.find("\r\nConnection: close\r\n") != std::string::npos);
      const std::size_t end = r.find("\r\n\r\n");
      REQUIRE(end != std::string::npos);
      const std::string body = r.substr(end + 4);
      CHECK(body == "why\n");
      CHECK(r.find("Content-Length: " + std::to_string(body.size()) + "\r\n") != std::string::npos);
      CHECK((r.find("Sec-WebSocket-Version") != std::string::npos) == (status == 426));
    }
    CHECK(build_reject_response(403, "").rfind("HTTP/1.1 403 Forbidden\r\n", 0) == 0);
    CHECK(build_reject_response(503, "").find("\r\n\r\nService Unavailable\n") !=
          std::string::npos);
  }

  TEST_CASE("origin allowlist") {
    UpgradeRequest with_origin;
    with_origin.has_origin = true;
    with_origin.origin = "https://App.Example.com";
    UpgradeRequest without_origin;

    const std::vector<std::string> none;
    const std::vector<std::string> list = {"http://localhost:3000", "https://app.example.com"};
    const std::vector<std::string> other = {"https://evil.example.com"};

    CHECK(origin_allowed(with_origin, none));
    CHECK(origin_allowed(without_origin, none));
    CHECK(origin_allowed(without_origin, other));
    CHECK(origin_allowed(with_origin, list));
    CHECK_FALSE(origin_allowed(with_origin, other));
    with_origin.origin = "https://app.example.com.evil.org";
    CHECK_FALSE(origin_allowed(with_origin, list));
    with_origin.origin = "null";
    CHECK_FALSE(origin_allowed(with_origin, list));
  }

  TEST_CASE("plain HTTP: off by default, a request without Upgrade is 400") {
    CHECK(reject_code("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n") == 400);
    CHECK(reject_code("HEAD /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n") == 400);
  }

  TEST_CASE("plain HTTP: with accept_plain_http a request without Upgrade is plain_http") {
    for (std::string_view method : {"GET", "HEAD", "POST", "DELETE"}) {
      CAPTURE(method);
      const std::string input = std::string(method) +
                                " /metrics?x=1 HTTP/1.1\r\nHost: localhost:9100\r\n"
                                "Accept: */*\r\nUpgrade: h2c\r\n\r\nbody bytes";
      HandshakeParser whole(8192, true);
      CHECK(whole.feed(input) == HandshakeStatus::plain_http);
      CHECK(whole.request().method == method);
      CHECK(whole.request().target == "/metrics?x=1");
      CHECK(whole.request().host == "localhost:9100");
      CHECK(whole.leftover().empty());  // a body is not read
      // The verdict is final: later bytes are ignored.
      CHECK(whole.feed("GET / HTTP/1.1\r\n\r\n") == HandshakeStatus::plain_http);
      HandshakeParser bytewise(8192, true);
      HandshakeStatus s = HandshakeStatus::need_more;
      for (char c : input) s = bytewise.feed(std::string_view(&c, 1));
      CHECK(s == HandshakeStatus::plain_http);
      CHECK(bytewise.request().target == "/metrics?x=1");
    }
  }

  TEST_CASE("plain HTTP: need_more until the blank line, then the same checks as an upgrade") {
    HandshakeParser p(8192, true);
    CHECK(p.feed("GET /healthz HTTP/1.1\r\nHost: localhost\r\n") == HandshakeStatus::need_more);
    CHECK(p.feed("\r\n") == HandshakeStatus::plain_http);
    // 0 for plain_http, else the rejection's status.
    auto verdict = [](std::string_view input) {
      HandshakeParser parser(8192, true);
      const HandshakeStatus s = parser.feed(input);
      if (s == HandshakeStatus::plain_http) return 0;
      REQUIRE(s == HandshakeStatus::rejected);
      return parser.reject_status();
    };
    CHECK(verdict("GET / HTTP/1.1\r\nHost: a\r\n\r\n") == 0);
    CHECK(verdict("GET / HTTP/1.1\r\n\r\n") == 400);                          // no Host
    CHECK(verdict("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n") == 400);  // two
    CHECK(verdict("GET / HTTP/1.0\r\nHost: a\r\n\r\n") == 400);
    CHECK(verdict("GET /\r\nHost: a\r\n\r\n") == 400);
    CHECK(verdict("GET / HTTP/1.1\r\nBad Header\r\n\r\n") == 400);
    CHECK(verdict("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n") == 400);
    const std::string huge = "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: " + std::string(9000, 'p') +
                             "\r\n\r\n";
    CHECK(verdict(huge) == 400);
  }

  TEST_CASE("plain HTTP: an upgrade request is still an upgrade, and still GET only") {
    HandshakeParser p(8192, true);
    CHECK(p.feed(request_with()) == HandshakeStatus::complete);
    CHECK(p.request().key == sample_key);
    for (std::string_view line : {"POST /chat HTTP/1.1", "HEAD /chat HTTP/1.1"}) {
      CAPTURE(line);
      HandshakeParser q(8192, true);
      CHECK(q.feed(request_with("", "", line)) == HandshakeStatus::rejected);
      CHECK(q.reject_status() == 400);
      CHECK(q.reject_reason() == "method is not GET");
    }
    // A WebSocket key and version without `Upgrade: websocket` is a broken upgrade (PROTOCOL.md
    // §1: 400), not a plain request, on a listener that serves plain HTTP too.
    for (std::string_view headers :
         {"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
          "Sec-WebSocket-Version: 13\r\n",
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "Sec-WebSocket-Version: 13\r\n"}) {
      CAPTURE(headers);
      HandshakeParser broken(8192, true);
      CHECK(broken.feed("GET /chat HTTP/1.1\r\nHost: a\r\n" + std::string(headers) + "\r\n") ==
            HandshakeStatus::rejected);
      CHECK(broken.reject_status() == 400);
      CHECK(broken.reject_reason() == "missing Upgrade: websocket");
    }
    // Upgrade: websocket without the rest is a broken upgrade (400), not a plain request.
    HandshakeParser r(8192, true);
    CHECK(r.feed("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n") ==
          HandshakeStatus::rejected);
    CHECK(r.reject_status() == 400);
  }
}
