// wss:// — the WebSocket connection over TLS (tls_stream_filter.cpp behind uv::Stream's filter
// seam) on real loopback TCP sockets, with OpenSSL's own client on memory BIOs riding a raw
// socket peer: the listener's url, the TLS handshake then the byte-exact upgrade, a request and
// its reply, 1 MiB each way (records cut across reads, the sink's batches encrypted), plaintext
// and silence on the TLS port, close_notify after our close frame and after a plain HTTP answer.
#include <memory>
#include <string>

#include "../../tls/codec/tls_test_support.hpp"
#include "car/ws/tcp_listener.hpp"
#include "ws_test_client.hpp"

using namespace car;
using namespace car::test;

namespace {

struct TlsFixture : UvServerFixture {
  explicit TlsFixture(ws::WsOptions options = {}) : UvServerFixture(no_auth()) {
    auto context = tls::ServerContext::from_pem(cert.cert_pem, cert.key_pem);
    REQUIRE(context.ok());
    options.tls = context.value();
    auto started = ws::TcpListener::start(loop.get(), server,
                                          std::make_shared<const ws::WsOptions>(std::move(options)),
                                          "127.0.0.1", 0);
    REQUIRE(started.ok());
    listener = std::move(started.value());
    port = std::stoi(listener->url().substr(listener->url().rfind(':') + 1));
  }
  ~TlsFixture() {
    listener.reset();
    finish();
  }

  TestCertificate cert = make_test_certificate();
  std::unique_ptr<ws::TcpListener> listener;
  int port = 0;
};

// A TLS client on a socket: what OpenSSL wants sent goes to the peer, what the peer reads goes
// into OpenSSL, and `plain` collects what it decrypts.
class TlsSocketClient {
 public:
  TlsSocketClient(TestLoop& loop, const std::string& trusted_pem, int port)
      : loop_(loop), peer_(StreamPeer::connect_tcp(loop.get(), "127.0.0.1", port)), tls_(trusted_pem) {}

  bool handshake() {
    REQUIRE(loop_.run_until([this] { return peer_->connect_status() != 1; }));
    REQUIRE(peer_->connected());
    return loop_.run_until([this] {
      bool done = tls_.handshake();
      pump();
      return done || tls_.failed() || peer_->eof();
    }) && !tls_.failed();
  }

  void send(std::string_view plaintext) {
    tls_.write(plaintext);
    pump();
  }

  // Runs the loop, moving bytes, until `done()` or the limit.
  bool wait(const std::function<bool()>& done, std::chrono::milliseconds limit = 5000ms) {
    return loop_.run_until([&] {
      pump();
      return done();
    }, limit);
  }

  std::string& plain() { return plain_; }
  StreamPeer& peer() { return *peer_; }
  MemoryTlsClient& tls() { return tls_; }

  // The next server frame out of the decrypted bytes.
  ServerFrame next_frame() {
    std::optional<ServerFrame> frame;
    wait([&] {
      if (!frame) frame = take_server_frame(plain_);
      return frame.has_value() || peer_->eof();
    });
    if (!frame) frame = take_server_frame(plain_);
    REQUIRE_MESSAGE(frame.has_value(), "no frame; " << plain_.size() << " bytes decrypted");
    return *frame;
  }

  void upgrade() {
    REQUIRE(handshake());
    send(upgrade_request());
    const std::string expected = expected_accept_response();
    REQUIRE(wait([&] { return plain_.size() >= expected.size() || peer_->eof(); }));
    REQUIRE(plain_.substr(0, expected.size()) == expected);
    plain_.erase(0, expected.size());
  }

 private:
  void pump() {
    std::string out = tls_.take_output();
    if (!out.empty()) peer_->write(std::move(out));
    std::string& in = peer_->received();
    if (!in.empty()) {
      tls_.give_input(in);
      in.clear();
    }
    // Application data only once the handshake is through (handshake() advances it first).
    if (tls_.handshake()) plain_ += tls_.read_available();
  }

  TestLoop& loop_;
  std::unique_ptr<StreamPeer> peer_;
  MemoryTlsClient tls_;
  std::string plain_;
};

}  // namespace

TEST_SUITE("tls_stream_filter") {
  TEST_CASE("wss://: the url says so; TLS handshake, byte-exact upgrade, a request and its reply") {
    TlsFixture f;
    CHECK(f.listener->url().rfind("wss://127.0.0.1:", 0) == 0);
    TlsSocketClient c(f.loop, f.cert.cert_pem, f.port);
    c.upgrade();
    CHECK(c.tls().verified());
    CHECK(f.server.connection_count() == 1);
    c.send(client_frame(0x1, echo_request(1, R"("over tls")")));
    auto reply = c.next_frame();
    CHECK(reply.opcode == 0x1);
    CHECK(reply.payload == echo_reply(1, R"("over tls")"));
    c.peer().close();
  }

  TEST_CASE("1 MiB each way: the request crosses many records and reads, the reply many batches") {
    TlsFixture f;
    TlsSocketClient c(f.loop, f.cert.cert_pem, f.port);
    c.upgrade();
    std::string value(1024 * 1024, 'x');
    for (std::size_t i = 0; i < value.size(); ++i) value[i] = static_cast<char>('a' + i % 26);
    const std::string quoted = "\"" + value + "\"";
    // Three requests pipelined: their replies share the sink's batches.
    for (int id = 1; id <= 3; ++id) c.send(client_frame(0x1, echo_request(id, quoted)));
    for (int id = 1; id <= 3; ++id) {
      auto reply = c.next_frame();
      REQUIRE(reply.opcode == 0x1);
      CHECK(reply.payload == echo_reply(id, quoted));
    }
    c.peer().close();
  }

  TEST_CASE("plaintext to the TLS port is closed without an HTTP answer; TLS clients go on") {
    TlsFixture f;
    auto plain = StreamPeer::connect_tcp(f.loop.get(), "127.0.0.1", f.port);
    REQUIRE(f.loop.run_until([&] { return plain->connect_status() != 1; }));
    plain->write(upgrade_request());
    CHECK(f.loop.run_until([&] { return plain->eof(); }));
    CHECK(plain->received().find("HTTP/1.1") == std::string::npos);
    plain->close();

    TlsSocketClient c(f.loop, f.cert.cert_pem, f.port);
    c.upgrade();
    c.send(client_frame(0x1, echo_request(7, "7")));
    CHECK(c.next_frame().payload == echo_reply(7, "7"));
    c.peer().close();
  }

  TEST_CASE("the handshake timeout covers the TLS handshake") {
    ws::WsOptions options;
    options.handshake_timeout = std::chrono::milliseconds(50);
    TlsFixture f(options);
    auto silent = StreamPeer::connect_tcp(f.loop.get(), "127.0.0.1", f.port);
    REQUIRE(f.loop.run_until([&] { return silent->connect_status() != 1; }));
    silent->write(std::string("\x16\x03\x01\x00\x40", 5));  // a hello's record header, then nothing
    CHECK(f.loop.run_until([&] { return silent->eof(); }, 3000ms));
    CHECK(f.server.connection_count() == 0);
    silent->close();
  }

  TEST_CASE("the close handshake: our close frame, then close_notify, then EOF") {
    TlsFixture f;
    TlsSocketClient c(f.loop, f.cert.cert_pem, f.port);
    c.upgrade();
    c.send(client_frame(0x8, close_payload(1000, "bye")));
    auto close = c.next_frame();
    CHECK(close.opcode == 0x8);
    CHECK(close.close_code() == 1000);
    CHECK(c.wait([&] { return c.tls().peer_closed() && c.peer().eof(); }));
    c.peer().close();
  }

  TEST_CASE("plain HTTP over TLS: the handler's answer, then close_notify") {
    ws::WsOptions options;
    options.http_handler = [](const ws::PlainHttpRequest& request) {
      return ws::PlainHttpResponse{200, "text/plain; charset=utf-8", "ok " + std::string(request.target) + "\n", {}};
    };
    TlsFixture f(options);
    TlsSocketClient c(f.loop, f.cert.cert_pem, f.port);
    REQUIRE(c.handshake());
    c.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    CHECK(c.wait([&] { return c.tls().peer_closed() && c.peer().eof(); }));
    CHECK(c.plain().rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
    CHECK(c.plain().find("\r\n\r\nok /healthz\n") != std::string::npos);
    c.peer().close();
  }
}
