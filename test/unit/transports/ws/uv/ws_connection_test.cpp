// The libuv WebSocket connection (ws_connection.cpp) over real loopback TCP sockets, driven by a
// raw client that checks the bytes: the HTTP upgrade and its refusals (400, 403, 426, 503),
// JSON-RPC over masked text frames, fragmentation and control frames, the close handshake both
// ways, protocol errors, the handshake timeout and keepalive (PROTOCOL.md §1, §8), and plain HTTP
// through WsOptions::http_handler (Host check, HEAD, the 500s).
#include <memory>
#include <stdexcept>
#include <string>
#include <variant>

#include "car/ws/plain_http.hpp"
#include "car/ws/tcp_listener.hpp"
#include "ws_test_client.hpp"

using namespace car;
using namespace car::test;

namespace {

struct WsFixture : UvServerFixture {
  explicit WsFixture(ws::WsOptions options = {}, ServerConfig config = no_auth())
      : UvServerFixture(std::move(config)) {
    auto started = ws::TcpListener::start(loop.get(), server,
                                          std::make_shared<const ws::WsOptions>(std::move(options)),
                                          "127.0.0.1", 0);
    REQUIRE(started.ok());
    listener = std::move(started.value());
    port = std::stoi(listener->url().substr(listener->url().rfind(':') + 1));
  }
  ~WsFixture() {
    listener.reset();
    finish();
  }

  WsTestClient client() {
    return WsTestClient(loop, StreamPeer::connect_tcp(loop.get(), "127.0.0.1", port));
  }

  std::unique_ptr<ws::TcpListener> listener;
  int port = 0;
};

// The exact refusal the server writes (handshake.hpp's build_reject_response).
std::string refusal(int status, std::string_view phrase, std::string_view reason,
                    std::string_view extra = {}) {
  std::string body = std::string(reason) + "\n";
  return "HTTP/1.1 " + std::to_string(status) + " " + std::string(phrase) +
         "\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n" +
         std::string(extra) + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

}  // namespace

TEST_SUITE("ws_connection") {
  TEST_CASE("upgrade, then a masked text request gets its reply as one unmasked text frame") {
    WsFixture f;
    auto c = f.client();
    c.upgrade();
    CHECK(f.server.connection_count() == 1);
    c.send_text(echo_request(1, R"("hi")"));
    auto reply = c.next_frame();
    CHECK(reply.fin);
    CHECK(reply.opcode == 0x1);
    CHECK(reply.payload == echo_reply(1, R"("hi")"));

    c.send_text(
        R"({"jsonrpc":"2.0","id":2,"method":"server.handshake","params":{"protocol_version":2}})");
    auto hello = parse_json(c.next_frame().payload);
    CHECK(hello["id"].GetInt() == 2);
    CHECK(hello["result"]["protocol_version"].GetInt() == 2);
    CHECK(c.peer().received().empty());  // nothing else was sent
  }

  TEST_CASE("frames sent in the same packet as the upgrade are served") {
    WsFixture f;
    auto c = f.client();
    REQUIRE(c.connect());
    c.peer().write(upgrade_request() + client_frame(0x1, echo_request(7, "[1,2]")) +
                   client_frame(0x1, echo_request(8, "null")));
    CHECK(c.read_http_response() == expected_accept_response());
    CHECK(c.next_frame().payload == echo_reply(7, "[1,2]"));
    CHECK(c.next_frame().payload == echo_reply(8, "null"));
  }

  TEST_CASE("a fragmented message with a ping in between: the pong comes first, then the reply") {
    WsFixture f;
    auto c = f.client();
    c.upgrade();
    std::string request = echo_request(3, R"("fragmented")");
    c.peer().write(client_frame(0x1, request.substr(0, 10), false));
    c.peer().write(client_frame(0x9, "abc"));
    c.peer().write(client_frame(0x0, request.substr(10, 5), false));
    c.peer().write(client_frame(0x0, request.substr(15), true));
    auto pong = c.next_frame();
    CHECK(pong.opcode == 0xA);
    CHECK(pong.payload == "abc");
    auto reply = c.next_frame();
    CHECK(reply.opcode == 0x1);
    CHECK(reply.payload == echo_reply(3, R"("fragmented")"));
  }

  TEST_CASE("replies above 125 and 65535 bytes use the 16- and 64-bit length forms") {
    WsFixture f;
    auto c = f.client();
    c.upgrade();
    for (std::size_t size : {200u, 70000u}) {
      std::string value = "\"" + std::string(size, 'x') + "\"";
      c.send_text(echo_request(1, value));
      auto reply = c.next_frame();
      CHECK(reply.opcode == 0x1);
      CHECK(reply.payload == echo_reply(1, value));
    }
  }

  TEST_CASE("binary messages are ignored; the connection stays usable") {
    WsFixture f;
    auto c = f.client();
    c.upgrade();
    c.peer().write(client_frame(0x2, std::string("\x00\x01\x02", 3)));
    c.send_text(echo_request(4, "true"));
    CHECK(c.next_frame().payload == echo_reply(4, "true"));
  }

  TEST_CASE("a bad upgrade gets 400 with the reason, then the socket is closed") {
    WsFixture f;
    auto c = f.client();
    REQUIRE(c.connect());
    c.peer().write(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    CHECK(c.read_http_response() == refusal(400, "Bad Request", "missing Upgrade: websocket"));
    CHECK(c.wait_eof());
    CHECK(c.peer().received().empty());
    CHECK(f.server.connection_count() == 0);  // no core connection was ever opened
  }

  TEST_CASE("garbage instead of HTTP gets 400 malformed request line") {
    WsFixture f;
    auto c = f.client();
    REQUIRE(c.connect());
    c.peer().write("HELLO\r\n\r\n");
    CHECK(c.read_http_response() == refusal(400, "Bad Request", "malformed request line"));
    CHECK(c.wait_eof());
  }

  TEST_CASE("a version other than 13 gets 426 naming version 13") {
    WsFixture f;
    auto c = f.client();
    REQUIRE(c.connect());
    c.peer().write(upgrade_request({}, "8"));
    CHECK(c.read_http_response() == refusal(426, "Upgrade Required",
                                            "unsupported Sec-WebSocket-Version",
                                            "Sec-WebSocket-Version: 13\r\n"));
    CHECK(c.wait_eof());
  }

  TEST_CASE("the origin allowlist: a listed origin is served, another gets 403") {
    ws::WsOptions options;
    options.allowed_origins = {"http://good.example"};
    WsFixture f(options);
    auto bad = f.client();
    REQUIRE(bad.connect());
    bad.peer().write(upgrade_request("Origin: http://evil.example\r\n"));
    CHECK(bad.read_http_response() == refusal(403, "Forbidden", "origin not allowed"));
    CHECK(bad.wait_eof());

    auto good = f.client();
    REQUIRE(good.connect());
    good.peer().write(upgrade_request("Origin: http://good.example\r\n"));
    CHECK(good.read_http_response() == expected_accept_response());
    good.send_text(echo_request(1, "1"));
    CHECK(good.next_frame().payload == echo_reply(1, "1"));
  }

  TEST_CASE("max_connections: the upgrade beyond the limit gets 503; the first keeps working") {
    ws::WsOptions options;
    options.max_connections = 1;
    WsFixture f(options);
    auto first = f.client();
    first.upgrade();
    auto second = f.client();
    REQUIRE(second.connect());
    second.peer().write(upgrade_request());
    CHECK(second.read_http_response() ==
          refusal(503, "Service Unavailable", "too many connections"));
    CHECK(second.wait_eof());
    CHECK(f.server.connection_count() == 1);
    first.send_text(echo_request(1, "2"));
    CHECK(first.next_frame().payload == echo_reply(1, "2"));

    // Once the first is gone, a new upgrade is accepted again.
    first.peer().close();
    REQUIRE(f.loop.run_until([&] { return f.server.connection_count() == 0; }));
    auto third = f.client();
    third.upgrade();
  }

  TEST_CASE(
      "close handshake from the peer: its code is echoed, then the server closes the socket") {
    WsFixture f;
    auto c = f.client();
    c.upgrade();
    c.peer().write(client_frame(0x8, close_payload(4000, "bye")));
    auto close = c.next_frame();
    CHECK(close.opcode == 0x8);
    CHECK(close.close_code() == 4000);
    CHECK(close.close_reason().empty());
    CHECK(c.wait_eof());
    CHECK(c.peer().received().empty());
    CHECK(f.loop.run_until([&] { return f.server.connection_count() == 0; }));
  }

  TEST_CASE("a close frame without a code is answered with 1000") {
    WsFixture f;
    auto c = f.client();
    c.upgrade();
    c.peer().write(client_frame(0x8, ""));
    auto close = c.next_frame();
    CHECK(close.opcode == 0x8);
    CHECK(close.close_code() == 1000);
    CHECK(c.wait_eof());
  }

  TEST_CASE("replies queued before the peer's close frame are written before the echo") {
    WsFixture f;
    auto c = f.client();
    c.upgrade();
    c.peer().write(client_frame(0x1, echo_request(5, R"("last")")) +
                   client_frame(0x8, close_payload(1000)));
    CHECK(c.next_frame().payload == echo_reply(5, R"("last")"));
    auto close = c.next_frame();
    CHECK(close.opcode == 0x8);
    CHECK(close.close_code() == 1000);
    CHECK(c.wait_eof());
  }

  TEST_CASE("server-initiated close (close_all) sends the code and reason, then closes") {
    WsFixture f;
    auto c = f.client();
    c.upgrade();
    f.server.close_all(1001, "shutting down");
    auto close = c.next_frame();
    CHECK(close.opcode == 0x8);
    CHECK(close.close_code() == 1001);
    CHECK(close.close_reason() == "shutting down");
    c.peer().write(client_frame(0x8, close_payload(1001)));
    CHECK(c.wait_eof());
    CHECK(f.loop.run_until([&] { return f.server.connection_count() == 0; }));
  }

  TEST_CASE("an unmasked client frame is a protocol error: close 1002, then the socket closes") {
    WsFixture f;
    auto c = f.client();
    c.upgrade();
    c.peer().write(client_frame(0x1, echo_request(1, "1"), true, false));
    auto close = c.next_frame();
    CHECK(close.opcode == 0x8);
    CHECK(close.close_code() == 1002);
    CHECK(c.wait_eof());
    CHECK(c.peer().received().empty());  // the request was not answered
  }

  TEST_CASE("invalid UTF-8 in a text message closes with 1007") {
    WsFixture f;
    auto c = f.client();
    c.upgrade();
    c.peer().write(client_frame(0x1, "\"\xC3\x28\""));
    auto close = c.next_frame();
    CHECK(close.opcode == 0x8);
    CHECK(close.close_code() == 1007);
    CHECK(c.wait_eof());
  }

  TEST_CASE("the peer dropping the socket ends the core connection") {
    WsFixture f;
    auto c = f.client();
    c.upgrade();
    REQUIRE(f.server.connection_count() == 1);
    c.peer().close();
    CHECK(f.loop.run_until([&] {
      return f.server.connection_count() == 0 && ws::live_websocket_connections() == f.live_before;
    }));
  }

  TEST_CASE("handshake timeout: a client that never sends the upgrade is disconnected") {
    ws::WsOptions options;
    options.handshake_timeout = std::chrono::milliseconds(50);
    WsFixture f(options);
    auto c = f.client();
    REQUIRE(c.connect());
    CHECK(c.wait_eof());
    CHECK(c.peer().received().empty());
    CHECK(f.server.connection_count() == 0);
  }

  TEST_CASE("keepalive: pings carry 'car'; unanswered, the connection closes with 1001") {
    ws::WsOptions options;
    options.ping_interval = std::chrono::milliseconds(20);
    options.missed_pongs = 1;
    WsFixture f(options);
    auto c = f.client();
    c.upgrade();
    auto ping = c.next_frame();
    CHECK(ping.opcode == 0x9);
    CHECK(ping.payload == "car");
    auto close = c.next_frame();
    CHECK(close.opcode == 0x8);
    CHECK(close.close_code() == 1001);
    CHECK(close.close_reason() == "ping timeout");
    c.peer().write(client_frame(0x8, close_payload(1001)));
    CHECK(c.wait_eof());
  }
  // ---- plain HTTP (WsOptions::http_handler) ----

  TEST_CASE("plain HTTP: a request without Upgrade goes to the handler; answered, then closed") {
    struct Seen {
      int calls = 0;
      std::string method, target, host, local_address;
      bool unix_socket = true;
    };
    auto seen = std::make_shared<Seen>();
    ws::WsOptions options;
    options.http_handler = [seen](const ws::PlainHttpRequest& r) {
      ++seen->calls;
      seen->method = r.method;
      seen->target = r.target;
      seen->host = r.host;
      seen->local_address = r.local_address;
      seen->unix_socket = r.unix_socket;
      return ws::PlainHttpResponse{200, "text/plain", "hello\n", {{"X-Route", "x"}}};
    };
    WsFixture f(std::move(options));
    const ws::PlainHttpResponse expected{200, "text/plain", "hello\n", {{"X-Route", "x"}}};
    {
      auto c = f.client();
      REQUIRE(c.connect());
      c.peer().write("GET /x?y=1 HTTP/1.1\r\nHost: localhost\r\n\r\n");
      CHECK(c.read_http_response() == ws::build_http_response(expected, false));
      CHECK(c.wait_eof());
      CHECK(c.peer().received().empty());
    }
    CHECK(seen->calls == 1);
    CHECK(seen->method == "GET");
    CHECK(seen->target == "/x?y=1");
    CHECK(seen->host == "localhost");
    CHECK(seen->local_address == "127.0.0.1:" + std::to_string(f.port));
    CHECK_FALSE(seen->unix_socket);
    CHECK(f.server.connection_count() == 0);  // never a core connection
    {
      auto c = f.client();
      REQUIRE(c.connect());
      c.peer().write("HEAD / HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(f.port) + "\r\n\r\n");
      CHECK(c.read_http_response() == ws::build_http_response(expected, true));
      CHECK(c.wait_eof());
      CHECK(c.peer().received().empty());  // no body after the head
    }
    CHECK(seen->calls == 2);
    CHECK(seen->method == "HEAD");
    // The upgrade is unaffected on the same listener.
    auto ws_client = f.client();
    ws_client.upgrade();
    ws_client.send_text(echo_request(1, "1"));
    CHECK(ws_client.next_frame().payload == echo_reply(1, "1"));
    CHECK(seen->calls == 2);
  }

  TEST_CASE("plain HTTP: a foreign Host is 421 and the handler is not called") {
    auto calls = std::make_shared<int>(0);
    ws::WsOptions options;
    options.http_handler = [calls](const ws::PlainHttpRequest&) {
      ++*calls;
      return ws::PlainHttpResponse{};
    };
    WsFixture f(std::move(options));
    for (const char* host : {"evil.example", "evil.example:80", "192.0.2.1"}) {
      CAPTURE(host);
      auto c = f.client();
      REQUIRE(c.connect());
      c.peer().write(std::string("GET /metrics HTTP/1.1\r\nHost: ") + host + "\r\n\r\n");
      const std::string response = c.read_http_response();
      CHECK(response.rfind("HTTP/1.1 421 Misdirected Request\r\n", 0) == 0);
      CHECK(c.wait_eof());
    }
    CHECK(*calls == 0);
  }

  TEST_CASE("plain HTTP: a handler that throws, or answers too much, becomes a 500") {
    ws::WsOptions options;
    options.max_http_response_bytes = 10;
    options.http_handler = [](const ws::PlainHttpRequest& r) -> ws::PlainHttpResponse {
      if (r.target == "/throw") throw std::runtime_error("boom");
      return {200, "text/plain", std::string(r.target == "/big" ? 11 : 10, 'b'), {}};
    };
    WsFixture f(std::move(options));
    auto status_of = [&f](std::string_view target) {
      auto c = f.client();
      REQUIRE(c.connect());
      c.peer().write("GET " + std::string(target) + " HTTP/1.1\r\nHost: localhost\r\n\r\n");
      const std::string response = c.read_http_response();
      CHECK(c.wait_eof());
      // Status line and body: which of the transport's two 500s it was.
      return response.substr(0, response.find("\r\n")) + " | " +
             response.substr(response.find("\r\n\r\n") + 4);
    };
    CHECK(status_of("/fits") == "HTTP/1.1 200 OK | bbbbbbbbbb");
    CHECK(status_of("/big") == "HTTP/1.1 500 Internal Server Error | response too large\n");
    CHECK(status_of("/throw") == "HTTP/1.1 500 Internal Server Error | internal error\n");
  }
}
