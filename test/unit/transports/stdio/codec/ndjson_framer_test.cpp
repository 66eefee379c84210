// Tests for car::stdio::NdjsonFramer (transports/stdio/codec/src/ndjson_framer.cpp).
#include <doctest/doctest.h>

#include <cstddef>
#include <limits>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "car/stdio/ndjson_framer.hpp"
#include "framer_recorder.hpp"

namespace {

using car::stdio::NdjsonFramer;

using car::test::err;
using car::test::msg;
using Event = car::test::FramerEvent;
using Recorder = car::test::FramerRecorder;

const std::string kTooLong = "line exceeds the maximum message size of 8 bytes";
Event too_long() { return {'e', kTooLong}; }

std::vector<Event> run_whole(std::size_t max, std::string_view input) {
  NdjsonFramer framer(max);
  Recorder rec;
  framer.feed(input, rec);
  framer.finish(rec);
  return rec.events;
}

// Feeds `input` in pieces whose sizes come from `next_size`; checks the memory bound after every
// call.
template <typename NextSize>
std::vector<Event> run_split(std::size_t max, std::string_view input, NextSize next_size) {
  NdjsonFramer framer(max);
  Recorder rec;
  std::size_t pos = 0;
  while (pos < input.size()) {
    const std::size_t n = std::min(next_size(), input.size() - pos);
    framer.feed(input.substr(pos, n), rec);
    pos += n;
    // The bound is max + 1 (a possible trailing '\r'); SIZE_MAX means no bound.
    CHECK((max == std::numeric_limits<std::size_t>::max() || framer.buffered_bytes() <= max + 1));
  }
  framer.finish(rec);
  CHECK(framer.buffered_bytes() == 0);
  return rec.events;
}

// An independent, obviously-correct model of the rules in protocol.md §1, used to cross-check the
// framer on whole inputs.
std::vector<Event> reference(std::size_t max, std::string_view input) {
  std::vector<Event> out;
  const std::string detail =
      "line exceeds the maximum message size of " + std::to_string(max) + " bytes";
  while (!input.empty()) {
    std::size_t nl = input.find('\n');
    std::string_view line = input.substr(0, nl);
    input.remove_prefix(nl == std::string_view::npos ? input.size() : nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > max) {
      out.push_back({'e', detail});
    } else if (line.find_first_not_of(" \t\r") != std::string_view::npos) {
      out.push_back(msg(std::string(line)));
    }
  }
  return out;
}

// Inputs that exercise every rule, including lines right at the limit of 8 bytes.
std::vector<std::string> corpus() {
  return {
      "{\"a\":1}\n{\"b\":2}\n",
      "one\r\ntwo\r\n\r\n\n   \n\t\r\nthree",
      "12345678\n123456789\n12345678\r\n123456789\r\n1234567\r\r\nok\n",
      "a very long line that is well over the limit\nafter\n",
      "\r\r\r\r\r\r\r\r\r\r\nx\n",
      "12345678\r",
      "123456789",
      "\n\n\n",
      "",
      "a\rb\n  padded  \n",
      std::string(100, 'x') + "\r\n" + std::string(8, 'y') + "\n" + std::string(9, 'z'),
  };
}

}  // namespace

TEST_SUITE("ndjson_framer") {
  TEST_CASE("lines become messages, LF and CRLF") {
    CHECK(run_whole(64, "{\"a\":1}\n{\"b\":2}\n") ==
          std::vector<Event>{msg("{\"a\":1}"), msg("{\"b\":2}")});
    CHECK(run_whole(64, "one\r\ntwo\r\n") == std::vector<Event>{msg("one"), msg("two")});
    // Only one trailing '\r' is removed; an inner '\r' is data.
    CHECK(run_whole(64, "a\r\r\nb\rc\n") == std::vector<Event>{msg("a\r"), msg("b\rc")});
    // Leading and trailing spaces stay; the JSON parser ignores them.
    CHECK(run_whole(64, "  {}  \n") == std::vector<Event>{msg("  {}  ")});
  }

  TEST_CASE("blank and whitespace-only lines are skipped silently") {
    CHECK(run_whole(64, "\n\r\n   \n\t \r\n{}\n\n") == std::vector<Event>{msg("{}")});
    CHECK(run_whole(64, "\n\n\n").empty());
  }

  TEST_CASE("the limit applies to the text without the trailing CR") {
    CHECK(run_whole(8, "12345678\n") == std::vector<Event>{msg("12345678")});
    CHECK(run_whole(8, "12345678\r\n") == std::vector<Event>{msg("12345678")});
    CHECK(run_whole(8, "123456789\n") == std::vector<Event>{too_long()});
    CHECK(run_whole(8, "1234567\r\r\n") == std::vector<Event>{msg("1234567\r")});
    CHECK(run_whole(8, "12345678\r\r\n") == std::vector<Event>{too_long()});
  }

  TEST_CASE("SIZE_MAX as the maximum means no limit") {
    const std::size_t no_limit = std::numeric_limits<std::size_t>::max();
    CHECK(run_split(no_limit, "abc\r\ndef\r", [] { return std::size_t{1}; }) ==
          std::vector<Event>{msg("abc"), msg("def")});
  }

  TEST_CASE("a partial line of max+1 bytes ending in CR waits for the next byte") {
    NdjsonFramer framer(4);
    Recorder rec;
    framer.feed("abcd\r", rec);
    CHECK(rec.events.empty());
    CHECK(framer.buffered_bytes() == 5);
    framer.feed("\n", rec);
    CHECK(rec.events == std::vector<Event>{msg("abcd")});

    Recorder rec2;
    framer.feed("abcd\r", rec2);
    framer.feed("x", rec2);  // now the CR is data and the line is too long
    CHECK(rec2.events.size() == 1);
    CHECK(rec2.events[0].kind == 'e');
    CHECK(framer.buffered_bytes() == 0);
    framer.feed("yz\nok\n", rec2);
    CHECK(rec2.events.size() == 2);
    CHECK(rec2.events[1] == msg("ok"));

    // max + 1 bytes not ending in CR can never fit: reported at once, nothing kept.
    Recorder rec3;
    framer.feed("abcd", rec3);
    CHECK(framer.buffered_bytes() == 4);
    framer.feed("e", rec3);
    CHECK(rec3.events.size() == 1);
    CHECK(framer.buffered_bytes() == 0);
  }

  TEST_CASE("an oversize line is reported once, dropped, and the next line works") {
    CHECK(run_whole(8, "this line is too long\n{}\n") == std::vector<Event>{too_long(), msg("{}")});

    NdjsonFramer framer(8);
    Recorder rec;
    framer.feed("0123456789", rec);  // error as soon as it cannot fit
    CHECK(rec.events == std::vector<Event>{too_long()});
    CHECK(framer.buffered_bytes() == 0);
    framer.feed("more bytes of the same line", rec);
    framer.feed(" and more\r", rec);
    CHECK(rec.events.size() == 1);
    framer.feed("\nnext\n", rec);
    CHECK(rec.events == std::vector<Event>{too_long(), msg("next")});
  }

  TEST_CASE("end of input with and without a trailing newline") {
    CHECK(run_whole(64, "a\nb") == std::vector<Event>{msg("a"), msg("b")});
    CHECK(run_whole(64, "a\nb\n") == std::vector<Event>{msg("a"), msg("b")});
    CHECK(run_whole(64, "a\nb\r") == std::vector<Event>{msg("a"), msg("b")});
    CHECK(run_whole(64, "a\n   ") == std::vector<Event>{msg("a")});
    // An unterminated oversize line is reported once, not again at EOF.
    CHECK(run_whole(8, "a\n0123456789abc") == std::vector<Event>{msg("a"), too_long()});
    // An unterminated line exactly at the limit (plus a CR) is still a message at EOF.
    CHECK(run_whole(8, "12345678\r") == std::vector<Event>{msg("12345678")});
  }

  TEST_CASE("finish resets the framer for reuse") {
    NdjsonFramer framer(8);
    Recorder rec;
    framer.feed("partial", rec);
    framer.finish(rec);
    framer.feed("0123456789", rec);  // discarding...
    framer.finish(rec);              // ...ends with the stream
    framer.feed("fresh\n", rec);
    CHECK(rec.events == std::vector<Event>{msg("partial"), too_long(), msg("fresh")});
    CHECK(framer.buffered_bytes() == 0);
  }

  TEST_CASE("a line inside one chunk is delivered without a copy") {
    NdjsonFramer framer(64);
    Recorder rec;
    const std::string input = "first\n{\"x\":1}\r\n";
    framer.feed(input, rec);
    REQUIRE(rec.events.size() == 2);
    CHECK(rec.last_data == input.data() + 6);
    // A line that straddles chunks is necessarily copied, but reported the same.
    framer.feed("{\"y\"", rec);
    framer.feed(":2}\n", rec);
    CHECK(rec.events.back() == msg("{\"y\":2}"));
  }

  TEST_CASE("the framer agrees with the reference model") {
    for (const std::string& input : corpus()) {
      CAPTURE(input);
      CHECK(run_whole(8, input) == reference(8, input));
      CHECK(run_whole(64, input) == reference(64, input));
    }
  }

  TEST_CASE("byte-at-a-time and random splits give the same events as one feed") {
    std::mt19937 rng(20240917);  // fixed seed: failures are reproducible
    std::string big;
    for (const std::string& input : corpus()) big += input + "\n";
    std::vector<std::string> inputs = corpus();
    inputs.push_back(big);
    for (const std::string& input : inputs) {
      CAPTURE(input);
      for (std::size_t max : {std::size_t{0}, std::size_t{1}, std::size_t{8}, std::size_t{64}}) {
        CAPTURE(max);
        const auto whole = run_whole(max, input);
        CHECK(run_split(max, input, [] { return std::size_t{1}; }) == whole);
        for (int iteration = 0; iteration < 200; ++iteration) {
          std::uniform_int_distribution<std::size_t> size(1, 1 + iteration % 16);
          CHECK(run_split(max, input, [&] { return size(rng); }) == whole);
        }
      }
    }
  }

  TEST_CASE("memory stays bounded while a 10 MB line is dropped") {
    constexpr std::size_t kMax = 1024;
    NdjsonFramer framer(kMax);
    Recorder rec;
    const std::string chunk(4093, 'x');  // odd size: the limit falls inside a chunk
    std::size_t peak = 0;
    for (std::size_t sent = 0; sent < 10'000'000; sent += chunk.size()) {
      framer.feed(chunk, rec);
      peak = std::max(peak, framer.buffered_bytes());
    }
    framer.feed("\n{\"after\":true}\n", rec);
    CHECK(peak <= kMax + 1);
    CHECK(rec.events.size() == 2);
    CHECK(rec.events[0].kind == 'e');
    CHECK(rec.events[1] == msg("{\"after\":true}"));

    // The same with a line that arrives with its newline in one 10 MB chunk: nothing is copied.
    Recorder rec2;
    const std::string huge = std::string(10'000'000, 'y') + "\nok\n";
    framer.feed(huge.substr(0, 10), rec2);  // start the line in an earlier chunk
    framer.feed(std::string_view(huge).substr(10), rec2);
    CHECK(framer.buffered_bytes() == 0);
    CHECK(rec2.events.size() == 2);
    CHECK(rec2.events[0].kind == 'e');
    CHECK(rec2.events[1] == msg("ok"));
  }
}
