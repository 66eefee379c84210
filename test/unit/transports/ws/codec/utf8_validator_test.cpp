// Tests for car::ws::Utf8Validator and is_valid_utf8.
#include <doctest/doctest.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "car/ws/utf8_validator.hpp"

using car::ws::is_valid_utf8;
using car::ws::Utf8Validator;

namespace {

std::string bytes(std::initializer_list<int> list) {
  std::string s;
  for (int b : list) s.push_back(static_cast<char>(b));
  return s;
}

// A deliberately different implementation: decode a whole code point and check its value.
// Returns false for anything RFC 3629 forbids.
bool reference_valid(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    std::size_t len;
    std::uint32_t cp;
    if (b0 < 0x80) {
      len = 1;
      cp = b0;
    } else if ((b0 & 0xE0) == 0xC0) {
      len = 2;
      cp = b0 & 0x1Fu;
    } else if ((b0 & 0xF0) == 0xE0) {
      len = 3;
      cp = b0 & 0x0Fu;
    } else if ((b0 & 0xF8) == 0xF0) {
      len = 4;
      cp = b0 & 0x07u;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (std::size_t k = 1; k < len; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (b & 0x3Fu);
    }
    const std::uint32_t min_for_len[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_for_len[len]) return false;         // overlong
    if (cp >= 0xD800 && cp <= 0xDFFF) return false;  // surrogate
    if (cp > 0x10FFFF) return false;
    i += len;
  }
  return true;
}

bool valid_byte_at_a_time(std::string_view s) {
  Utf8Validator v;
  for (char c : s) {
    if (!v.feed(std::string_view(&c, 1))) return false;
  }
  return v.at_boundary();
}

}  // namespace

TEST_SUITE("utf8_validator") {
  TEST_CASE("ASCII and the empty string are valid") {
    CHECK(is_valid_utf8(""));
    CHECK(is_valid_utf8("hello, world"));
    CHECK(is_valid_utf8(std::string(1000, 'x')));
    CHECK(is_valid_utf8(std::string("\0\x7f", 2)));
  }

  TEST_CASE("well-formed multi-byte sequences at the edges of each range") {
    CHECK(is_valid_utf8(bytes({0xC2, 0x80})));              // U+0080
    CHECK(is_valid_utf8(bytes({0xDF, 0xBF})));              // U+07FF
    CHECK(is_valid_utf8(bytes({0xE0, 0xA0, 0x80})));        // U+0800
    CHECK(is_valid_utf8(bytes({0xED, 0x9F, 0xBF})));        // U+D7FF
    CHECK(is_valid_utf8(bytes({0xEE, 0x80, 0x80})));        // U+E000
    CHECK(is_valid_utf8(bytes({0xEF, 0xBF, 0xBF})));        // U+FFFF
    CHECK(is_valid_utf8(bytes({0xF0, 0x90, 0x80, 0x80})));  // U+10000
    CHECK(is_valid_utf8(bytes({0xF4, 0x8F, 0xBF, 0xBF})));  // U+10FFFF
    CHECK(is_valid_utf8("κόσμε €  𝄞"));
  }

  TEST_CASE("overlong encodings are rejected") {
    CHECK_FALSE(is_valid_utf8(bytes({0xC0, 0x80})));
    CHECK_FALSE(is_valid_utf8(bytes({0xC1, 0xBF})));
    CHECK_FALSE(is_valid_utf8(bytes({0xE0, 0x80, 0x80})));
    CHECK_FALSE(is_valid_utf8(bytes({0xE0, 0x9F, 0xBF})));
    CHECK_FALSE(is_valid_utf8(bytes({0xF0, 0x80, 0x80, 0x80})));
    CHECK_FALSE(is_valid_utf8(bytes({0xF0, 0x8F, 0xBF, 0xBF})));
  }

  TEST_CASE("surrogates are rejected") {
    CHECK_FALSE(is_valid_utf8(bytes({0xED, 0xA0, 0x80})));                    // U+D800
    CHECK_FALSE(is_valid_utf8(bytes({0xED, 0xBF, 0xBF})));                    // U+DFFF
    CHECK_FALSE(is_valid_utf8(bytes({0xED, 0xA0, 0xBD, 0xED, 0xB2, 0xA9})));  // CESU pair
  }

  TEST_CASE("code points above U+10FFFF and invalid bytes are rejected") {
    CHECK_FALSE(is_valid_utf8(bytes({0xF4, 0x90, 0x80, 0x80})));
    CHECK_FALSE(is_valid_utf8(bytes({0xF5, 0x80, 0x80, 0x80})));
    CHECK_FALSE(is_valid_utf8(bytes({0xF8, 0x88, 0x80, 0x80, 0x80})));
    CHECK_FALSE(is_valid_utf8(bytes({0xFE})));
    CHECK_FALSE(is_valid_utf8(bytes({0xFF})));
  }

  TEST_CASE("stray continuation bytes and interrupted sequences are rejected") {
    CHECK_FALSE(is_valid_utf8(bytes({0x80})));
    CHECK_FALSE(is_valid_utf8(bytes({0x41, 0xBF})));
    CHECK_FALSE(is_valid_utf8(bytes({0xE2, 0x41, 0x82})));
    CHECK_FALSE(is_valid_utf8(bytes({0xC3, 0xA9, 0xA9})));
  }

  TEST_CASE("a truncated sequence is a prefix, not an error, until the message ends") {
    Utf8Validator v;
    CHECK(v.feed(bytes({0x61, 0xE2, 0x82})));
    CHECK_FALSE(v.at_boundary());
    CHECK_FALSE(v.failed());
    CHECK_FALSE(is_valid_utf8(bytes({0x61, 0xE2, 0x82})));
    CHECK(v.feed(bytes({0xAC})));  // completes U+20AC
    CHECK(v.at_boundary());
  }

  TEST_CASE("a code point split at every position across two feeds") {
    const std::string text = "a€b𝄞c";
    for (std::size_t cut = 0; cut <= text.size(); ++cut) {
      CAPTURE(cut);
      Utf8Validator v;
      CHECK(v.feed(std::string_view(text).substr(0, cut)));
      CHECK(v.feed(std::string_view(text).substr(cut)));
      CHECK(v.at_boundary());
    }
    CHECK(valid_byte_at_a_time(text));
    CHECK_FALSE(valid_byte_at_a_time(bytes({0xF0, 0x9D, 0x84})));
  }

  TEST_CASE("failure is sticky until reset") {
    Utf8Validator v;
    CHECK_FALSE(v.feed(bytes({0xC0, 0x80})));
    CHECK(v.failed());
    CHECK_FALSE(v.at_boundary());
    CHECK_FALSE(v.feed("plain ascii"));
    v.reset();
    CHECK_FALSE(v.failed());
    CHECK(v.feed("plain ascii"));
    CHECK(v.at_boundary());
  }

  TEST_CASE("the 8-byte ASCII fast path does not hide a bad byte at any offset") {
    for (std::size_t pos = 0; pos < 40; ++pos) {
      CAPTURE(pos);
      std::string s(40, 'a');
      s[pos] = static_cast<char>(0x80);
      CHECK_FALSE(is_valid_utf8(s));
      std::string t(40, 'a');
      t.insert(pos, "é");
      CHECK(is_valid_utf8(t));
      std::string u(40, 'a');
      u.insert(pos, bytes({0xE2, 0x82}));  // truncated, then ASCII
      CHECK_FALSE(is_valid_utf8(u));
    }
  }

  TEST_CASE("agrees with a reference decoder on every 1-3 byte sequence") {
    std::string s(3, '\0');
    std::size_t checked = 0;
    for (int a = 0; a < 256; ++a) {
      s.assign(1, static_cast<char>(a));
      if (is_valid_utf8(s) != reference_valid(s)) FAIL("1-byte mismatch at ", a);
      for (int b = 0; b < 256; ++b) {
        s.assign({static_cast<char>(a), static_cast<char>(b)});
        if (is_valid_utf8(s) != reference_valid(s)) FAIL("2-byte mismatch at ", a, ' ', b);
        if (a < 0xE0 || a > 0xEF) continue;
        for (int c = 0; c < 256; ++c) {
          s.assign({static_cast<char>(a), static_cast<char>(b), static_cast<char>(c)});
          if (is_valid_utf8(s) != reference_valid(s)) FAIL("3-byte mismatch at ", a, ' ', b);
          ++checked;
        }
      }
    }
    CHECK(checked == 16u * 256u * 256u);
  }

  TEST_CASE("agrees with a reference decoder on 4-byte sequences") {
    const int edges[] = {0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xFF};
    std::size_t valid = 0;
    for (int a = 0xF0; a <= 0xFF; ++a) {
      for (int b = 0; b < 256; ++b) {
        for (int c : edges) {
          for (int d : edges) {
            const std::string s = bytes({a, b, c, d});
            const bool expected = reference_valid(s);
            if (is_valid_utf8(s) != expected) FAIL("4-byte mismatch at ", a, ' ', b, ' ', c);
            if (valid_byte_at_a_time(s) != expected) FAIL("split mismatch at ", a, ' ', b);
            valid += expected ? 1 : 0;
          }
        }
      }
    }
    CHECK(valid > 0);
  }
}
