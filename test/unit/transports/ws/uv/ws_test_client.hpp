#pragma once

// A raw WebSocket client for the tests of the libuv WebSocket glue (TCP and Unix socket): it writes
// the HTTP upgrade and masked client frames byte by byte as RFC 6455 spells them, and parses the
// server's frames itself, so the tests check the bytes on the wire, not the library's own codec.
// Also a fixture that serves one Server on a UvExecutor and tears everything down in order.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "../../../test_support.hpp"
#include "../../../uv_test_support.hpp"
#include "car/session/session_service.hpp"
#include "car/uv/uv_executor.hpp"
#include "car/ws/ws_connection.hpp"
#include "car/ws/ws_options.hpp"

namespace car::test {

// RFC 6455 §1.3's example key and the accept value it must produce.
inline constexpr std::string_view sample_key = "dGhlIHNhbXBsZSBub25jZQ==";
inline constexpr std::string_view sample_accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

inline std::string upgrade_request(std::string_view extra_headers = {},
                                   std::string_view version = "13") {
  std::string out =
      "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\nSec-WebSocket-Key: ";
  out += sample_key;
  out += "\r\nSec-WebSocket-Version: ";
  out += version;
  out += "\r\n";
  out += extra_headers;
  out += "\r\n";
  return out;
}

inline std::string expected_accept_response() {
  return std::string(
             "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\nSec-WebSocket-Accept: ") +
         std::string(sample_accept) + "\r\n\r\n";
}

// One client frame, masked with a fixed key (RFC 6455 §5.3).
inline std::string client_frame(std::uint8_t opcode, std::string_view payload, bool fin = true,
                                bool masked = true) {
  static constexpr std::uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
  std::string out;
  out += static_cast<char>((fin ? 0x80 : 0x00) | opcode);
  const std::uint8_t mask_bit = masked ? 0x80 : 0x00;
  if (payload.size() < 126) {
    out += static_cast<char>(mask_bit | payload.size());
  } else if (payload.size() <= 0xffff) {
    out += static_cast<char>(mask_bit | 126);
    out += static_cast<char>((payload.size() >> 8) & 0xff);
    out += static_cast<char>(payload.size() & 0xff);
  } else {
    out += static_cast<char>(mask_bit | 127);
    for (int shift = 56; shift >= 0; shift -= 8) {
      out += static_cast<char>((static_cast<std::uint64_t>(payload.size()) >> shift) & 0xff);
    }
  }
  if (!masked) return out.append(payload);
  for (std::uint8_t k : key) out += static_cast<char>(k);
  for (std::size_t i = 0; i < payload.size(); ++i) {
    out += static_cast<char>(static_cast<std::uint8_t>(payload[i]) ^ key[i % 4]);
  }
  return out;
}

inline std::string close_payload(std::uint16_t code, std::string_view reason = {}) {
  std::string out;
  out += static_cast<char>(code >> 8);
  out += static_cast<char>(code & 0xff);
  return out.append(reason);
}

struct ServerFrame {
  bool fin = false;
  std::uint8_t opcode = 0;
  std::string payload;
  // For close frames: the code (0 when the payload is empty) and the reason.
  std::uint16_t close_code() const {
    if (payload.size() < 2) return 0;
    return static_cast<std::uint16_t>((static_cast<std::uint8_t>(payload[0]) << 8) |
                                      static_cast<std::uint8_t>(payload[1]));
  }
  std::string close_reason() const { return payload.size() < 2 ? "" : payload.substr(2); }
};

// Takes one complete server frame off the front of `buffer`, if there is one. Server frames are
// never masked (RFC 6455 §5.1): a masked one fails the test.
inline std::optional<ServerFrame> take_server_frame(std::string& buffer) {
  auto byte = [&buffer](std::size_t i) { return static_cast<std::uint8_t>(buffer[i]); };
  if (buffer.size() < 2) return std::nullopt;
  CHECK_MESSAGE((byte(1) & 0x80) == 0, "server frames must not be masked");
  std::size_t header = 2;
  std::uint64_t length = byte(1) & 0x7f;
  if (length == 126) {
    if (buffer.size() < 4) return std::nullopt;
    length = (std::uint64_t{byte(2)} << 8) | byte(3);
    header = 4;
  } else if (length == 127) {
    if (buffer.size() < 10) return std::nullopt;
    length = 0;
    for (std::size_t i = 2; i < 10; ++i) length = (length << 8) | byte(i);
    header = 10;
  }
  if (buffer.size() < header + length) return std::nullopt;
  ServerFrame frame;
  frame.fin = (byte(0) & 0x80) != 0;
  frame.opcode = byte(0) & 0x0f;
  frame.payload = buffer.substr(header, static_cast<std::size_t>(length));
  buffer.erase(0, header + static_cast<std::size_t>(length));
  return frame;
}

// A raw client on a StreamPeer.
class WsTestClient {
 public:
  WsTestClient(TestLoop& loop, std::unique_ptr<StreamPeer> peer)
      : loop_(loop), peer_(std::move(peer)) {}

  StreamPeer& peer() { return *peer_; }
  bool connect() {
    return loop_.run_until([this] { return peer_->connect_status() != 1; }) && peer_->connected();
  }

  // Sends the upgrade and reads the whole 101 response, which must be byte-exact.
  void upgrade() {
    REQUIRE(connect());
    peer_->write(upgrade_request());
    std::string response = read_http_response();
    REQUIRE(response == expected_accept_response());
  }

  // Reads up to the end of the HTTP response head (and its body when Content-Length says so).
  std::string read_http_response() {
    auto& in = peer_->received();
    std::size_t end = std::string::npos;
    bool complete = loop_.run_until([&] {
      end = in.find("\r\n\r\n");
      if (end == std::string::npos) return peer_->eof();
      auto length_at = in.find("Content-Length: ");
      if (length_at == std::string::npos || length_at > end) return true;
      std::size_t body = std::stoul(in.substr(length_at + 16));
      return in.size() >= end + 4 + body || peer_->eof();
    });
    REQUIRE_MESSAGE(complete, "no HTTP response; got: " << in);
    REQUIRE_MESSAGE(end != std::string::npos, "no HTTP response head; got: " << in);
    std::size_t total = end + 4;
    auto length_at = in.find("Content-Length: ");
    if (length_at != std::string::npos && length_at < end) {
      total += std::stoul(in.substr(length_at + 16));
    }
    if (total > in.size()) total = in.size();
    std::string response = in.substr(0, total);
    in.erase(0, total);
    return response;
  }

  void send_text(std::string_view text) { peer_->write(client_frame(0x1, text)); }

  // The next server frame; fails the test if none arrives in time.
  ServerFrame next_frame(std::chrono::milliseconds limit = 5000ms) {
    std::optional<ServerFrame> frame;
    bool got = loop_.run_until(
        [&] {
          if (!frame) frame = take_server_frame(peer_->received());
          return frame.has_value() || peer_->eof();
        },
        limit);
    if (!frame) frame = take_server_frame(peer_->received());
    REQUIRE_MESSAGE(
        (got && frame.has_value()),
        "no frame from the server (eof=" << peer_->eof() << ", " << peer_->received().size()
                                         << " bytes pending: " << peer_->received() << ")");
    return *frame;
  }

  // The server closed the socket (after everything it sent was read).
  bool wait_eof(std::chrono::milliseconds limit = 5000ms) {
    return loop_.run_until([this] { return peer_->eof(); }, limit);
  }

 private:
  TestLoop& loop_;
  std::unique_ptr<StreamPeer> peer_;
};

// A Server on a UvExecutor with the session service (auth disabled) and an "echo" method whose
// reply is byte-predictable: {"jsonrpc":"2.0","id":ID,"result":VALUE}.
struct UvServerFixture {
  static ServerConfig no_auth() {
    ServerConfig config;
    config.require_auth = false;
    return config;
  }

  explicit UvServerFixture(ServerConfig config = no_auth())
      : executor(loop.get()),
        server(executor, std::move(config)),
        sessions(session::install_session_service(server, {})),
        live_before(ws::live_websocket_connections()) {
    server.methods().add("echo", {optional("value", ParamType::any)},
                         [](const Request& req, Reply reply) {
                           const auto* v = param::member(req.params(), "value");
                           reply.ok(v ? json::stringify(*v) : "null");
                         });
  }

  // Waits until every connection the test opened is gone (its peers must be closed or closing),
  // then shuts the executor down; the loop's destructor checks that no handle was left open.
  void finish() {
    if (finished) return;
    finished = true;
    bool drained = loop.run_until([this] {
      return server.connection_count() == 0 && ws::live_websocket_connections() == live_before;
    });
    CHECK_MESSAGE(drained, "connections still open: " << server.connection_count());
    executor.shutdown();
  }

  ~UvServerFixture() { finish(); }

  TestLoop loop;
  uv::UvExecutor executor;
  Server server;
  std::shared_ptr<session::SessionService> sessions;
  std::size_t live_before;
  bool finished = false;
};

inline std::string echo_request(int id, std::string_view value_json) {
  return R"({"jsonrpc":"2.0","id":)" + std::to_string(id) +
         R"(,"method":"echo","params":{"value":)" + std::string(value_json) + "}}";
}
inline std::string echo_reply(int id, std::string_view value_json) {
  return R"({"jsonrpc":"2.0","id":)" + std::to_string(id) + R"(,"result":)" +
         std::string(value_json) + "}";
}

}  // namespace car::test
