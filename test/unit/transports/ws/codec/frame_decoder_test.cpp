// Tests for car::ws::FrameDecoder: every close-code path, masking, lengths, fragmentation, and
// the same input fed whole, byte by byte and in random pieces.
#include <doctest/doctest.h>

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "car/ws/frame_decoder.hpp"
#include "car/ws/frame_encoder.hpp"

using namespace car::ws;

namespace {

constexpr std::uint32_t key = 0xA1B2C3D4;

// Records every event as one line, so whole sequences compare with ==.
struct Recorder : FrameHandler {
  std::vector<std::string> events;
  void on_text(std::string_view m) override { events.push_back("text:" + std::string(m)); }
  void on_binary(std::size_t n) override { events.push_back("binary:" + std::to_string(n)); }
  void on_ping(std::string_view p) override { events.push_back("ping:" + std::string(p)); }
  void on_pong(std::string_view p) override { events.push_back("pong:" + std::string(p)); }
  void on_close(std::uint16_t code, std::string_view reason) override {
    events.push_back("close:" + std::to_string(code) + ":" + std::string(reason));
  }
};

struct Outcome {
  std::vector<std::string> events;
  std::optional<CloseCode> error;
  bool operator==(const Outcome&) const = default;
};

// Feeds `input` in pieces whose sizes come from `piece` (called with the remaining size).
template <typename Piece>
Outcome decode_in_pieces(std::string_view input, Piece piece, Role role = Role::server,
                         std::size_t max_message = 1 << 20) {
  FrameDecoder decoder(role, max_message);
  Recorder rec;
  Outcome out;
  while (!input.empty()) {
    const std::size_t n = piece(input.size());
    if (auto err = decoder.feed(input.substr(0, n), rec)) {
      out.error = err->code;
      break;
    }
    input.remove_prefix(n);
  }
  out.events = rec.events;
  return out;
}

Outcome decode(std::string_view input, Role role = Role::server, std::size_t max = 1 << 20) {
  return decode_in_pieces(
      input, [](std::size_t n) { return n; }, role, max);
}

Outcome decode_bytewise(std::string_view input, Role role = Role::server,
                        std::size_t max = 1 << 20) {
  return decode_in_pieces(
      input, [](std::size_t) { return std::size_t{1}; }, role, max);
}

std::string raw(std::initializer_list<int> list) {
  std::string s;
  for (int b : list) s.push_back(static_cast<char>(b));
  return s;
}

// A masked client frame with arbitrary first byte (to set RSV bits or odd opcodes).
std::string frame_with_b0(int b0, std::string_view payload) {
  std::string f = encode_client_frame(Opcode::binary, payload, key);
  f[0] = static_cast<char>(b0);
  return f;
}

std::string text(std::string_view s, bool fin = true) {
  return encode_client_frame(Opcode::text, s, key, fin);
}
std::string cont(std::string_view s, bool fin = true) {
  return encode_client_frame(Opcode::continuation, s, key, fin);
}
std::string close_payload(std::string_view payload) {
  return encode_client_frame(Opcode::close, payload, key);
}
std::string close_with(std::uint16_t code, std::string_view reason = "") {
  std::string p;
  p.push_back(static_cast<char>(code >> 8));
  p.push_back(static_cast<char>(code & 0xFF));
  p.append(reason);
  return close_payload(p);
}

CloseCode error_of(std::string_view input, Role role = Role::server, std::size_t max = 1 << 20) {
  const Outcome whole = decode(input, role, max);
  // The verdict must not depend on how the bytes were split.
  CHECK(decode_bytewise(input, role, max) == whole);
  REQUIRE(whole.error.has_value());
  return *whole.error;
}

using Events = std::vector<std::string>;

}  // namespace

TEST_SUITE("frame_decoder") {
  TEST_CASE("a masked text frame is unmasked and delivered") {
    // RFC 6455 §5.7: a single-frame masked text message "Hello".
    const std::string rfc = raw({0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58});
    CHECK(decode(rfc).events == Events{"text:Hello"});
    CHECK(decode_bytewise(rfc).events == Events{"text:Hello"});
    CHECK_FALSE(decode(rfc).error);
    // Many mask keys (including 0) and lengths around the 8-byte unmasking word.
    for (std::uint32_t k : {0u, 1u, 0xFFFFFFFFu, 0x01020304u}) {
      for (std::size_t len = 0; len < 20; ++len) {
        const std::string payload(len, 'q');
        CHECK(decode(encode_client_frame(Opcode::text, payload, k)).events ==
              Events{"text:" + payload});
      }
    }
  }

  TEST_CASE("masking rules per role") {
    CHECK(error_of(encode_frame(Opcode::text, "hi"), Role::server) == CloseCode::protocol_error);
    CHECK(error_of(text("hi"), Role::client) == CloseCode::protocol_error);
    CHECK(decode(encode_frame(Opcode::text, "hi"), Role::client).events == Events{"text:hi"});
    // Unmasked control frames are refused too.
    CHECK(error_of(encode_frame(Opcode::ping, ""), Role::server) == CloseCode::protocol_error);
  }

  TEST_CASE("reserved bits and unknown opcodes are protocol errors") {
    CHECK(error_of(frame_with_b0(0x80 | 0x40 | 0x1, "x")) == CloseCode::protocol_error);  // RSV1
    CHECK(error_of(frame_with_b0(0x80 | 0x20 | 0x1, "x")) == CloseCode::protocol_error);  // RSV2
    CHECK(error_of(frame_with_b0(0x80 | 0x10 | 0x1, "x")) == CloseCode::protocol_error);  // RSV3
    for (int op : {3, 4, 5, 6, 7, 11, 12, 13, 14, 15}) {
      CAPTURE(op);
      CHECK(error_of(frame_with_b0(0x80 | op, "x")) == CloseCode::protocol_error);
    }
  }

  TEST_CASE("bad control frames") {
    // Fragmented ping / pong / close.
    for (int op : {0x8, 0x9, 0xA}) {
      CAPTURE(op);
      CHECK(error_of(frame_with_b0(op, "")) == CloseCode::protocol_error);
    }
    // 126-byte ping (16-bit length form): refused from the first two bytes.
    CHECK(error_of(frame_with_b0(0x89, std::string(126, 'p'))) == CloseCode::protocol_error);
    CHECK(error_of(raw({0x89, 0xFE})) == CloseCode::protocol_error);
    // 125 is fine.
    CHECK(decode(encode_client_frame(Opcode::ping, std::string(125, 'p'), key)).events ==
          Events{"ping:" + std::string(125, 'p')});
  }

  TEST_CASE("fragmentation errors") {
    CHECK(error_of(cont("lo")) == CloseCode::protocol_error);
    CHECK(error_of(text("Hel", false) + text("lo")) == CloseCode::protocol_error);
    CHECK(error_of(text("Hel", false) + encode_client_frame(Opcode::binary, "b", key)) ==
          CloseCode::protocol_error);
    // A finished message closes the fragment sequence: a later continuation is an error.
    CHECK(error_of(text("a") + cont("b")) == CloseCode::protocol_error);
  }

  TEST_CASE("fragmented message with interleaved control frames") {
    const std::string input = text("Hel", false) + encode_client_frame(Opcode::ping, "p", key) +
                              cont("l", false) + encode_client_frame(Opcode::pong, "q", key) +
                              cont("o") + text("next");
    const Events expected{"ping:p", "pong:q", "text:Hello", "text:next"};
    CHECK(decode(input).events == expected);
    CHECK(decode_bytewise(input).events == expected);

    const std::string bin = encode_client_frame(Opcode::binary, "12345", key, false) +
                            encode_client_frame(Opcode::ping, "", key) + cont("678", false) +
                            cont("");
    CHECK(decode(bin).events == Events{"ping:", "binary:8"});
  }

  TEST_CASE("empty messages and empty fragments") {
    CHECK(decode(text("")).events == Events{"text:"});
    CHECK(decode(text("", false) + cont("", false) + cont("")).events == Events{"text:"});
    CHECK(decode(encode_client_frame(Opcode::binary, "", key)).events == Events{"binary:0"});
  }

  TEST_CASE("16-bit and 64-bit lengths, and accepted non-minimal encodings") {
    const std::string p300(300, 'x');
    const std::string p70k(70000, 'y');
    CHECK(decode(text(p300)).events == Events{"text:" + p300});
    CHECK(decode(text(p70k)).events == Events{"text:" + p70k});
    CHECK(decode(text(std::string(65535, 'z'))).events ==
          Events{"text:" + std::string(65535, 'z')});

    // "abcde" announced with the 16-bit form, then with the 64-bit form; unmasked, client role.
    CHECK(decode(raw({0x81, 126, 0, 5}) + "abcde", Role::client).events == Events{"text:abcde"});
    CHECK(decode(raw({0x81, 127, 0, 0, 0, 0, 0, 0, 0, 5}) + "abcde", Role::client).events ==
          Events{"text:abcde"});
  }

  TEST_CASE("a 64-bit length with the most significant bit set") {
    CHECK(error_of(raw({0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4})) ==
          CloseCode::protocol_error);
    CHECK(error_of(raw({0x82, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}),
                   Role::client) == CloseCode::protocol_error);
  }

  TEST_CASE("message size limit") {
    const std::size_t max = 100;
    CHECK(decode(text(std::string(100, 'a')), Role::server, max).events.size() == 1);
    CHECK(error_of(text(std::string(101, 'a')), Role::server, max) == CloseCode::message_too_big);
    CHECK(error_of(encode_client_frame(Opcode::binary, std::string(101, 'b'), key), Role::server,
                   max) == CloseCode::message_too_big);
    // The sum of fragments counts; interleaved control frames do not.
    const std::string frags = text(std::string(60, 'a'), false) +
                              encode_client_frame(Opcode::ping, std::string(100, 'p'), key) +
                              cont(std::string(40, 'a'));
    CHECK(decode(frags, Role::server, max).events.size() == 2);
    CHECK(error_of(text(std::string(60, 'a'), false) + cont(std::string(41, 'a')), Role::server,
                   max) == CloseCode::message_too_big);
    // The limit is per message: two full-size messages in a row are fine.
    CHECK(decode(text(std::string(100, 'a')) + text(std::string(100, 'a')), Role::server, max)
              .events.size() == 2);
  }

  TEST_CASE("raise_max_message raises the bound for later messages and never lowers it") {
    FrameDecoder decoder(Role::server, 100);
    Recorder rec;
    CHECK_FALSE(decoder.feed(text(std::string(100, 'a')), rec));
    decoder.raise_max_message(50);  // ignored: smaller
    CHECK(decoder.max_message() == 100);
    decoder.raise_max_message(1000);
    CHECK_FALSE(decoder.feed(text(std::string(1000, 'b')), rec));
    CHECK(rec.events.size() == 2);
    auto error = decoder.feed(text(std::string(1001, 'c')), rec);
    REQUIRE(error);
    CHECK(error->code == CloseCode::message_too_big);
  }

  TEST_CASE("1009 is decided from the header, before any payload is buffered") {
    FrameDecoder decoder(Role::server, 64 * 1024);
    Recorder rec;
    // Text frame announcing 2^40 bytes; only the header arrives.
    const std::string header = raw({0x81, 0xFF, 0, 0, 0x01, 0, 0, 0, 0, 0, 1, 2, 3, 4});
    std::optional<DecodeError> err;
    for (char c : header) {
      CHECK_FALSE(err);
      err = decoder.feed(std::string_view(&c, 1), rec);
    }
    REQUIRE(err);
    CHECK(err->code == CloseCode::message_too_big);
    CHECK(decoder.buffered_bytes() == 0);
    CHECK(rec.events.empty());

    // The second fragment's header pushes the total over the limit: the error comes with its
    // header, while the first fragment's bytes are the only ones held.
    FrameDecoder d2(Role::server, 10);
    CHECK_FALSE(d2.feed(text("12345", false), rec));
    CHECK(d2.buffered_bytes() == 5);
    const std::string second = cont("123456");
    auto e2 = d2.feed(second.substr(0, 6), rec);  // header only (2 + 4 mask bytes)
    REQUIRE(e2);
    CHECK(e2->code == CloseCode::message_too_big);
  }

  TEST_CASE("invalid UTF-8 in text ⇒ 1007") {
    CHECK(error_of(text(raw({'a', 0xC0, 0x80}))) == CloseCode::invalid_payload);   // overlong
    CHECK(error_of(text(raw({0xED, 0xA0, 0x80}))) == CloseCode::invalid_payload);  // surrogate
    CHECK(error_of(text(raw({0xF4, 0x90, 0x80, 0x80}))) == CloseCode::invalid_payload);
    CHECK(error_of(text(raw({0xFF}))) == CloseCode::invalid_payload);
    // Truncated at message end, single frame and fragmented.
    CHECK(error_of(text(raw({'a', 0xE2, 0x82}))) == CloseCode::invalid_payload);
    CHECK(error_of(text("ok", false) + cont(raw({0xE2, 0x82}))) == CloseCode::invalid_payload);
    // Binary payload is not UTF-8 checked.
    CHECK(decode(encode_client_frame(Opcode::binary, raw({0xFF, 0xC0}), key)).events ==
          Events{"binary:2"});
  }

  TEST_CASE("a code point split across fragments is valid") {
    // "€" = E2 82 AC split after each byte, with a ping between the fragments.
    const std::string euro = "€";
    for (std::size_t cut = 1; cut < euro.size(); ++cut) {
      const std::string input = text("a" + euro.substr(0, cut), false) +
                                encode_client_frame(Opcode::ping, "", key) +
                                cont(euro.substr(cut) + "b");
      CHECK(decode(input).events == Events{"ping:", "text:a€b"});
    }
  }

  TEST_CASE("UTF-8 is checked as bytes arrive, not at the end of the message") {
    FrameDecoder decoder(Role::server, 1 << 20);
    Recorder rec;
    // A 1000-byte text frame whose third byte is invalid: the error comes with the first 8
    // payload bytes, long before the frame is complete.
    const std::string frame = text("ab" + raw({0xFF}) + std::string(997, 'c'));
    CHECK_FALSE(decoder.feed(frame.substr(0, 8), rec));  // 8-byte header only
    auto err = decoder.feed(frame.substr(8, 8), rec);
    REQUIRE(err);
    CHECK(err->code == CloseCode::invalid_payload);

    // Across fragments: the first fragment is fine, the second fails on its first bytes.
    FrameDecoder d2(Role::server, 1 << 20);
    CHECK_FALSE(d2.feed(text("fine", false), rec));
    const std::string bad = cont(raw({0x80}) + std::string(500, 'x'));
    auto err2 = d2.feed(bad.substr(0, 10), rec);
    REQUIRE(err2);
    CHECK(err2->code == CloseCode::invalid_payload);
  }

  TEST_CASE("close frames") {
    CHECK(decode(close_payload("")).events == Events{"close:1005:"});
    CHECK(decode(close_with(1000, "bye")).events == Events{"close:1000:bye"});
    CHECK(decode(close_with(4999, "é")).events == Events{"close:4999:é"});
    for (int code : {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000,
                     4000, 4999}) {
      CAPTURE(code);
      CHECK(decode(close_with(static_cast<std::uint16_t>(code))).events ==
            Events{"close:" + std::to_string(code) + ":"});
    }
    for (int code : {0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535}) {
      CAPTURE(code);
      CHECK(error_of(close_with(static_cast<std::uint16_t>(code))) == CloseCode::protocol_error);
    }
    CHECK(error_of(close_payload("\x03")) == CloseCode::protocol_error);  // 1-byte payload
    // Also when an earlier control frame left a plausible second byte behind.
    CHECK(error_of(encode_client_frame(Opcode::ping, "\x03\xe8", key) + close_payload("\x03")) ==
          CloseCode::protocol_error);
    CHECK(error_of(close_with(1000, raw({0xC3}))) == CloseCode::protocol_error);
    CHECK(error_of(close_with(1000, raw({0xED, 0xA0, 0x80}))) == CloseCode::protocol_error);
  }

  TEST_CASE("is_valid_received_close_code") {
    CHECK(is_valid_received_close_code(1000));
    CHECK(is_valid_received_close_code(1003));
    CHECK_FALSE(is_valid_received_close_code(1004));
    CHECK_FALSE(is_valid_received_close_code(1005));
    CHECK_FALSE(is_valid_received_close_code(1006));
    CHECK(is_valid_received_close_code(1007));
    CHECK(is_valid_received_close_code(1014));
    CHECK_FALSE(is_valid_received_close_code(1015));
    CHECK_FALSE(is_valid_received_close_code(2999));
    CHECK(is_valid_received_close_code(3000));
    CHECK(is_valid_received_close_code(4999));
    CHECK_FALSE(is_valid_received_close_code(5000));
    CHECK_FALSE(is_valid_received_close_code(999));
  }

  TEST_CASE("after on_close, later bytes are ignored") {
    FrameDecoder decoder(Role::server, 1024);
    Recorder rec;
    // A message after the close, even a malformed one, is ignored.
    CHECK_FALSE(decoder.feed(close_with(1001) + text("late") + "\xff\xff", rec));
    CHECK(decoder.closed());
    CHECK_FALSE(decoder.feed(text("later"), rec));
    CHECK(rec.events == Events{"close:1001:"});
  }

  TEST_CASE("a close in the middle of a fragmented message") {
    CHECK(decode(text("part", false) + close_with(1000)).events == Events{"close:1000:"});
  }

  TEST_CASE("the decoder stays dead after an error") {
    FrameDecoder decoder(Role::server, 1024);
    Recorder rec;
    auto first = decoder.feed(text("ok") + encode_frame(Opcode::text, "unmasked"), rec);
    REQUIRE(first);
    CHECK(first->code == CloseCode::protocol_error);
    CHECK(rec.events == Events{"text:ok"});  // events before the violation were delivered
    auto again = decoder.feed(text("valid"), rec);
    REQUIRE(again);
    CHECK(again->code == first->code);
    CHECK(again->reason == first->reason);
    REQUIRE(decoder.error());
    CHECK(rec.events.size() == 1);
  }

  TEST_CASE("buffered_bytes reflects the partial text message only") {
    FrameDecoder decoder(Role::server, 1 << 20);
    Recorder rec;
    CHECK(decoder.buffered_bytes() == 0);
    CHECK_FALSE(decoder.feed(text("abc", false), rec));
    CHECK(decoder.buffered_bytes() == 3);
    CHECK_FALSE(decoder.feed(cont("de"), rec));
    CHECK(decoder.buffered_bytes() == 0);
    CHECK(rec.events == Events{"text:abcde"});
    // A large message is released after delivery.
    CHECK_FALSE(decoder.feed(text(std::string(200000, 'L')), rec));
    CHECK(decoder.buffered_bytes() == 0);
    // Binary is never buffered.
    const std::string bin = encode_client_frame(Opcode::binary, std::string(1000, 'b'), key);
    CHECK_FALSE(decoder.feed(bin.substr(0, 500), rec));
    CHECK(decoder.buffered_bytes() == 0);
  }

  TEST_CASE("byte-at-a-time and random splits give identical events") {
    std::string stream;
    stream += text("Hello");
    stream += text("frag-", false) + encode_client_frame(Opcode::ping, "ping!", key) +
              cont("mented ", false) + cont("κόσμε");
    stream += encode_client_frame(Opcode::binary, std::string(300, 'b'), key);
    stream += text(std::string(70000, 'w'));
    stream += encode_client_frame(Opcode::pong, "", key);
    stream += text("€" + std::string(13, 'x') + "𝄞", false) + cont("");
    stream += close_with(1000, "done");
    stream += text("ignored");

    const Outcome whole = decode(stream);
    REQUIRE_FALSE(whole.error);
    REQUIRE(whole.events.size() == 8);
    CHECK(whole.events.back() == "close:1000:done");
    CHECK(decode_bytewise(stream) == whole);

    std::mt19937 rng(12345);
    for (int round = 0; round < 200; ++round) {
      const std::size_t max_piece = round < 100 ? 16 : 5000;
      const Outcome split = decode_in_pieces(stream, [&](std::size_t remaining) {
        std::uniform_int_distribution<std::size_t> dist(1, max_piece);
        return std::min(remaining, dist(rng));
      });
      CAPTURE(round);
      CHECK(split == whole);
    }
  }

  TEST_CASE("random splits of an invalid stream fail with the same error") {
    const std::string stream = text("good") + text("bad" + raw({0xE2, 0x28, 0xA1}) + "tail");
    const Outcome whole = decode(stream);
    REQUIRE(whole.error);
    CHECK(*whole.error == CloseCode::invalid_payload);
    CHECK(whole.events == Events{"text:good"});
    std::mt19937 rng(7);
    for (int round = 0; round < 100; ++round) {
      const Outcome split = decode_in_pieces(stream, [&](std::size_t remaining) {
        std::uniform_int_distribution<std::size_t> dist(1, 7);
        return std::min(remaining, dist(rng));
      });
      CHECK(split == whole);
    }
  }
}
