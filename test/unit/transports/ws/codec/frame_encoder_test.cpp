// Tests for car::ws frame encoding (frame_encoder.hpp), checked against RFC 6455's examples
// and against the decoder.
#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "car/ws/frame_decoder.hpp"
#include "car/ws/frame_encoder.hpp"

using namespace car::ws;

namespace {

std::string hex(std::string_view s) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (char c : s) {
    const auto b = static_cast<unsigned char>(c);
    out += digits[b >> 4];
    out += digits[b & 0xF];
  }
  return out;
}

std::string header_hex(Opcode op, std::uint64_t len, bool fin, const std::uint32_t* key = nullptr) {
  std::array<std::uint8_t, max_frame_header> out{};
  const std::size_t n = encode_frame_header(op, len, fin, out, key);
  return hex(std::string_view(reinterpret_cast<const char*>(out.data()), n));
}

struct Collect : FrameHandler {
  std::vector<std::string> texts;
  std::vector<std::size_t> binaries;
  std::vector<std::string> pings;
  int close_code = -1;
  std::string close_reason;
  void on_text(std::string_view m) override { texts.emplace_back(m); }
  void on_binary(std::size_t n) override { binaries.push_back(n); }
  void on_ping(std::string_view p) override { pings.emplace_back(p); }
  void on_pong(std::string_view) override {}
  void on_close(std::uint16_t code, std::string_view reason) override {
    close_code = code;
    close_reason = reason;
  }
};

}  // namespace

TEST_SUITE("frame_encoder") {
  TEST_CASE("RFC 6455 §5.7 examples") {
    CHECK(hex(encode_frame(Opcode::text, "Hello")) == "810548656c6c6f");
    CHECK(hex(encode_client_frame(Opcode::text, "Hello", 0x37fa213d)) == "818537fa213d7f9f4d5158");
    CHECK(hex(encode_frame(Opcode::ping, "Hello")) == "890548656c6c6f");
    CHECK(hex(encode_frame(Opcode::pong, "Hello")) == "8a0548656c6c6f");
    // Fragmented "Hel" + "lo", unmasked.
    CHECK(header_hex(Opcode::text, 3, false) == "0103");
    CHECK(header_hex(Opcode::continuation, 2, true) == "8002");
  }

  TEST_CASE("the shortest length encoding is chosen at each boundary") {
    CHECK(header_hex(Opcode::binary, 0, true) == "8200");
    CHECK(header_hex(Opcode::binary, 125, true) == "827d");
    CHECK(header_hex(Opcode::binary, 126, true) == "827e007e");
    CHECK(header_hex(Opcode::binary, 65535, true) == "827effff");
    CHECK(header_hex(Opcode::binary, 65536, true) == "827f0000000000010000");
    CHECK(header_hex(Opcode::binary, std::uint64_t{1} << 40, true) == "827f0000010000000000");
    CHECK(header_hex(Opcode::binary, (std::uint64_t{1} << 63) - 1, true) == "827f7fffffffffffffff");
  }

  TEST_CASE("a mask key is written most significant byte first after the length") {
    const std::uint32_t key = 0x11223344;
    CHECK(header_hex(Opcode::text, 5, true, &key) == "818511223344");
    CHECK(header_hex(Opcode::text, 300, true, &key) == "81fe012c11223344");
    CHECK(header_hex(Opcode::text, 70000, true, &key) == "81ff000000000001117011223344");
    const std::uint32_t zero = 0;
    CHECK(encode_client_frame(Opcode::text, "abc", zero).substr(6) == "abc");
  }

  TEST_CASE("invalid arguments yield 0 / an empty string") {
    std::array<std::uint8_t, max_frame_header> out{};
    CHECK(encode_frame_header(Opcode::binary, std::uint64_t{1} << 63, true, out) == 0);
    CHECK(encode_frame_header(Opcode::ping, 126, true, out) == 0);
    CHECK(encode_frame_header(Opcode::close, 0, false, out) == 0);
    CHECK(encode_frame_header(Opcode::ping, 125, true, out) == 2);
    CHECK(encode_frame(Opcode::ping, std::string(126, 'p')).empty());
    CHECK(encode_client_frame(Opcode::pong, "x", 1, false).empty());
    CHECK(encode_frame(Opcode::text, std::string(126, 't')).size() == 4 + 126);
  }

  TEST_CASE("close frames: code, reason, UTF-8-safe truncation, no_status") {
    CHECK(hex(encode_close_frame(1000, "")) == "880203e8");
    CHECK(hex(encode_close_frame(1001, "bye")) == "880503e9627965");
    CHECK(hex(encode_close_frame(1005, "ignored")) == "8800");

    const std::string long_ascii(200, 'r');
    const std::string f1 = encode_close_frame(1002, long_ascii);
    CHECK(f1.size() == 2 + 125);
    CHECK(static_cast<unsigned char>(f1[1]) == 125);

    // 122 ASCII bytes then a 3-byte '€': keeping the euro would need 125 reason bytes > 123, so
    // the cut must fall before it, leaving 122.
    const std::string tricky = std::string(122, 'a') + "€";
    const std::string f2 = encode_close_frame(1002, tricky);
    CHECK(static_cast<unsigned char>(f2[1]) == 2 + 122);
    CHECK(f2.substr(4) == std::string(122, 'a'));
    // Exactly 123 bytes fits unchanged.
    const std::string fits = std::string(120, 'a') + "€";
    CHECK(encode_close_frame(1000, fits).substr(4) == fits);
  }

  TEST_CASE("round trip through the decoder for every length class") {
    for (std::size_t len : {0u, 1u, 7u, 8u, 9u, 125u, 126u, 65535u, 65536u, 100003u}) {
      CAPTURE(len);
      std::string payload(len, '\0');
      for (std::size_t i = 0; i < len; ++i) payload[i] = static_cast<char>('a' + i % 26);

      Collect from_client;
      FrameDecoder server(Role::server, 1 << 20);
      CHECK_FALSE(server.feed(encode_client_frame(Opcode::text, payload, 0xdeadbeef), from_client));
      REQUIRE(from_client.texts.size() == 1);
      CHECK(from_client.texts[0] == payload);

      Collect from_server;
      FrameDecoder client(Role::client, 1 << 20);
      CHECK_FALSE(client.feed(encode_frame(Opcode::binary, payload), from_server));
      REQUIRE(from_server.binaries.size() == 1);
      CHECK(from_server.binaries[0] == len);
    }
    Collect c;
    FrameDecoder client(Role::client, 1024);
    CHECK_FALSE(client.feed(encode_frame(Opcode::ping, "p1") + encode_close_frame(4000, "é"), c));
    CHECK(c.pings == std::vector<std::string>{"p1"});
    CHECK(c.close_code == 4000);
    CHECK(c.close_reason == "é");
  }
}
