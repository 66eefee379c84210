// Tests for car::stdio::ContentLengthFramer (transports/stdio/codec/src/content_length_framer.cpp).
#include <doctest/doctest.h>

#include <cstddef>
#include <limits>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "car/stdio/content_length_framer.hpp"
#include "framer_recorder.hpp"

namespace {

using car::stdio::content_length_prefix;
using car::stdio::ContentLengthFramer;

using car::test::err;
using car::test::msg;
using Event = car::test::FramerEvent;
using Recorder = car::test::FramerRecorder;

std::string framed(std::string_view body) {
  return content_length_prefix(body.size()) + std::string(body);
}

const Event kMissing = err("header block has no Content-Length");
const Event kNotNumber = err("Content-Length is not a decimal number");

std::vector<Event> run_whole(std::string_view input, std::size_t max = 64,
                             std::size_t header_max = 8192) {
  ContentLengthFramer framer(max, header_max);
  Recorder rec;
  framer.feed(input, rec);
  framer.finish(rec);
  return rec.events;
}

template <typename NextSize>
std::vector<Event> run_split(std::string_view input, std::size_t max, std::size_t header_max,
                             NextSize next_size) {
  ContentLengthFramer framer(max, header_max);
  Recorder rec;
  std::size_t pos = 0;
  while (pos < input.size()) {
    const std::size_t n = std::min(next_size(), input.size() - pos);
    framer.feed(input.substr(pos, n), rec);
    pos += n;
    CHECK(framer.buffered_bytes() <= std::max(max, header_max));
  }
  framer.finish(rec);
  CHECK(framer.buffered_bytes() == 0);
  return rec.events;
}

std::vector<std::string> corpus() {
  return {
      framed("{\"a\":1}") + framed("{\"b\":2}"),
      "Content-Type: application/json\r\ncontent-length: 2\r\nX: y\r\n\r\nhi",
      "CONTENT-LENGTH:\t3 \n\nabc",
      "Content-Type: x\r\n\r\n{\"lost\":1}" + framed("ok"),
      "Content-Length: 1x\r\n\r\n?" + framed("ok") + "\r\n" + framed("again"),
      "Content-Length: 2\r\nContent-Length: 3\r\n\r\nabc" + framed("ok"),
      "Content-Length: 100\r\n\r\n" + std::string(100, 'z') + framed("after"),
      "X: " + std::string(200, 'h') + "\r\n" + framed("after big header"),
      framed("") + framed("x"),
      framed("truncated").substr(0, 25),
      "Content-Len",
      "\r\n\r\n" + framed("lead") + "\r\n",
      "garbage without any header CoNtEnT-lEnGtH: 4\r\n\r\nabcd" + framed("z"),
      "Content-Length: 99999999999999999999999999\r\n\r\n" + framed("swallowed"),
      "Content-Length: 64\r\n\r\n" + std::string(64, 'm'),
      "Content-Length: 65\r\n\r\n" + std::string(65, 'm') + framed("n"),
  };
}

}  // namespace

TEST_SUITE("content_length_framer") {
  TEST_CASE("back-to-back messages") {
    CHECK(run_whole(framed("{\"a\":1}") + framed("{\"b\":2}")) ==
          std::vector<Event>{msg("{\"a\":1}"), msg("{\"b\":2}")});
    CHECK(content_length_prefix(0) == "Content-Length: 0\r\n\r\n");
    CHECK(content_length_prefix(16777216) == "Content-Length: 16777216\r\n\r\n");
    char room[car::stdio::max_content_length_prefix];
    std::size_t n = car::stdio::write_content_length_prefix(SIZE_MAX, room);
    CHECK(std::string(room, n) == "Content-Length: " + std::to_string(SIZE_MAX) + "\r\n\r\n");
    CHECK(n == sizeof room);
  }

  TEST_CASE("other headers are ignored and the name is case-insensitive") {
    CHECK(run_whole("Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n"
                    "content-length: 2\r\nX-Other:\r\nno colon here\r\n\r\nhi") ==
          std::vector<Event>{msg("hi")});
    CHECK(run_whole("CONTENT-LENGTH:\t 3 \t\r\n\r\nabc") == std::vector<Event>{msg("abc")});
    // Bare LF line endings are accepted.
    CHECK(run_whole("Content-Length: 3\n\nabc") == std::vector<Event>{msg("abc")});
    // A repeated, identical length is fine.
    CHECK(run_whole("Content-Length: 1\r\nContent-Length: 1\r\n\r\nx") ==
          std::vector<Event>{msg("x")});
  }

  TEST_CASE("a block without a Content-Length is reported, then the framer resynchronises") {
    CHECK(run_whole("Content-Type: x\r\n\r\n{\"lost\":1}" + framed("ok")) ==
          std::vector<Event>{kMissing, msg("ok")});
    // Garbage (e.g. NDJSON sent to a Content-Length peer) ends up as a missing length once a
    // blank line shows up.
    CHECK(run_whole("{\"jsonrpc\":\"2.0\"}\n\n" + framed("ok")) ==
          std::vector<Event>{kMissing, msg("ok")});
    // The marker is found in any case and in the middle of a line.
    CHECK(run_whole("A: b\r\n\r\nlost body content-LENGTH: 4\r\n\r\nabcd") ==
          std::vector<Event>{kMissing, msg("abcd")});
  }

  TEST_CASE("a non-numeric or conflicting length is reported, then the framer resynchronises") {
    for (const char* value : {"abc", "-1", "+1", "1x", "", " ", "0x10", "1 2", "1.0"}) {
      CAPTURE(value);
      CHECK(run_whole(std::string("Content-Length: ") + value + "\r\n\r\n{}" + framed("ok")) ==
            std::vector<Event>{kNotNumber, msg("ok")});
    }
    CHECK(run_whole("Content-Length: 2\r\nContent-Length: 3\r\n\r\nabc" + framed("ok")) ==
          std::vector<Event>{err("conflicting Content-Length headers"), msg("ok")});
  }

  TEST_CASE("a header block over the limit is reported once, then the framer resynchronises") {
    const Event too_big = err("header block exceeds 8192 bytes");
    // A long header line.
    CHECK(run_whole("X-Junk: " + std::string(9000, 'j') + "\r\n\r\n" + framed("next")) ==
          std::vector<Event>{too_big, msg("next")});
    // Many short header lines.
    std::string many;
    while (many.size() < 10000) many += "X-A: b\r\n";
    CHECK(run_whole(many + "Content-Length: 2\r\n\r\nhi" + framed("next")) ==
          std::vector<Event>{too_big, msg("hi"), msg("next")});
    // A block of exactly the limit is accepted; one byte more is not.
    const std::string tail = "Content-Length: 2\r\n\r\n";
    const std::string exact = "X: " + std::string(8192 - tail.size() - 5, 'p') + "\r\n" + tail;
    REQUIRE(exact.size() == 8192);
    CHECK(run_whole(exact + "ok") == std::vector<Event>{msg("ok")});
    const std::string over = "X: " + std::string(8192 - tail.size() - 4, 'p') + "\r\n" + tail;
    CHECK(run_whole(over + "ok") == std::vector<Event>{too_big});
    // A custom limit.
    CHECK(run_whole("X: " + std::string(40, 'q') + "\r\n" + framed("a") + framed("b"), 64, 32) ==
          std::vector<Event>{err("header block exceeds 32 bytes"), msg("a"), msg("b")});
    // The error fires at the first byte past the limit and scanning resumes at that byte. When
    // that is the 'C' of the next "Content-Length:", the marker is found at once...
    CHECK(run_whole("X: " + std::string(27, 'q') + "\r\n" + framed("a") + framed("b"), 64, 32) ==
          std::vector<Event>{err("header block exceeds 32 bytes"), msg("a"), msg("b")});
    // ...when it is the 'o', that block is lost and the next one is found.
    CHECK(run_whole("X: " + std::string(26, 'q') + "\r\n" + framed("a") + framed("b"), 64, 32) ==
          std::vector<Event>{err("header block exceeds 32 bytes"), msg("b")});
  }

  TEST_CASE("an oversize length is reported and exactly N bytes are dropped") {
    // The dropped body contains something that looks like a header: it must not be parsed.
    const std::string body = "Content-Length: 1\r\n\r\nX" + std::string(78, '.');
    REQUIRE(body.size() == 100);
    CHECK(run_whole("Content-Length: 100\r\n\r\n" + body + framed("after")) ==
          std::vector<Event>{err("Content-Length 100 exceeds the maximum message size of 64 bytes"),
                             msg("after")});
    CHECK(run_whole(framed(std::string(64, 'm'))) == std::vector<Event>{msg(std::string(64, 'm'))});
    // More digits than fit: treated as above the maximum (the rest of the stream is dropped).
    CHECK(run_whole("Content-Length: 99999999999999999999999999\r\n\r\n" + framed("gone")) ==
          std::vector<Event>{err("Content-Length is too large (maximum message size 64 bytes)")});
    CHECK(run_whole("Content-Length: 18446744073709551616\r\n\r\n") ==
          std::vector<Event>{err("Content-Length is too large (maximum message size 64 bytes)")});
    // Leading zeros are just digits.
    CHECK(run_whole("Content-Length: 0000000000000000000000002\r\n\r\nok") ==
          std::vector<Event>{msg("ok")});
  }

  TEST_CASE("SIZE_MAX as the maximum means no limit") {
    const std::size_t no_limit = std::numeric_limits<std::size_t>::max();
    CHECK(run_split(framed("abc") + framed("de"), no_limit, 8192, [] { return std::size_t{1}; }) ==
          std::vector<Event>{msg("abc"), msg("de")});
  }

  TEST_CASE("a zero-length body is an empty message") {
    CHECK(run_whole(framed("") + framed("x")) == std::vector<Event>{msg(""), msg("x")});
  }

  TEST_CASE("stray empty lines between messages are skipped") {
    CHECK(run_whole("\r\n\n" + framed("a") + "\r\n\r\n" + framed("b") + "\r\n") ==
          std::vector<Event>{msg("a"), msg("b")});
  }

  TEST_CASE("end of input inside a message is reported") {
    CHECK(run_whole("Content-Length: 10\r\n\r\nabc") ==
          std::vector<Event>{err("end of input after 3 of 10 message bytes")});
    CHECK(run_whole("Content-Length: 10\r\n\r\n") ==
          std::vector<Event>{err("end of input after 0 of 10 message bytes")});
    CHECK(run_whole("Content-Length: 10\r\n") ==
          std::vector<Event>{err("end of input inside a header block")});
    CHECK(run_whole("Content-Le") == std::vector<Event>{err("end of input inside a header block")});
    // Not reported: nothing started, a stray CR, a discard or a resync already reported.
    CHECK(run_whole("").empty());
    CHECK(run_whole(framed("a") + "\r").size() == 1);
    CHECK(run_whole("Content-Length: 100\r\n\r\nabc").size() == 1);
    CHECK(run_whole("A: b\r\n\r\nabc").size() == 1);
  }

  TEST_CASE("finish resets the framer for reuse") {
    ContentLengthFramer framer(64);
    Recorder rec;
    framer.feed("Content-Length: 5\r\n\r\nab", rec);
    framer.finish(rec);
    framer.feed(framed("fresh"), rec);
    CHECK(rec.events ==
          std::vector<Event>{err("end of input after 2 of 5 message bytes"), msg("fresh")});
    CHECK(framer.buffered_bytes() == 0);
  }

  TEST_CASE("a body inside one chunk is delivered without a copy") {
    ContentLengthFramer framer(64);
    Recorder rec;
    const std::string input = framed("{\"x\":1}");
    framer.feed(input, rec);
    REQUIRE(rec.events.size() == 1);
    CHECK(rec.last_data == input.data() + input.size() - 7);
  }

  TEST_CASE("byte-at-a-time and random splits give the same events as one feed") {
    std::mt19937 rng(7340033);  // fixed seed: failures are reproducible
    std::string big;
    for (const std::string& input : corpus()) big += input;
    std::vector<std::string> inputs = corpus();
    inputs.push_back(big);
    for (const std::string& input : inputs) {
      CAPTURE(input);
      for (std::size_t header_max : {std::size_t{16}, std::size_t{64}, std::size_t{8192}}) {
        CAPTURE(header_max);
        const auto whole = run_whole(input, 64, header_max);
        CHECK(run_split(input, 64, header_max, [] { return std::size_t{1}; }) == whole);
        for (int iteration = 0; iteration < 200; ++iteration) {
          std::uniform_int_distribution<std::size_t> size(1, 1 + iteration % 32);
          CHECK(run_split(input, 64, header_max, [&] { return size(rng); }) == whole);
        }
      }
    }
  }

  TEST_CASE("memory stays bounded with a 10 MB oversize body or header") {
    constexpr std::size_t kMax = 1024;
    constexpr std::size_t kHeader = 8192;
    const std::string chunk(4093, 'x');

    ContentLengthFramer framer(kMax, kHeader);
    Recorder rec;
    std::size_t peak = 0;
    framer.feed("Content-Length: 10000000\r\n\r\n", rec);
    std::size_t sent = 0;
    while (sent < 10'000'000) {
      const std::size_t n = std::min(chunk.size(), 10'000'000 - sent);
      framer.feed(std::string_view(chunk).substr(0, n), rec);
      sent += n;
      peak = std::max(peak, framer.buffered_bytes());
    }
    framer.feed(framed("next"), rec);
    CHECK(peak <= kMax + kHeader);
    CHECK(peak == 0);  // a dropped body is not buffered at all
    CHECK(rec.events.size() == 2);
    CHECK(rec.events[1] == msg("next"));

    // 10 MB of header line without a newline.
    Recorder rec2;
    peak = 0;
    for (sent = 0; sent < 10'000'000; sent += chunk.size()) {
      framer.feed(chunk, rec2);
      peak = std::max(peak, framer.buffered_bytes());
    }
    framer.feed("\r\n\r\n" + framed("next"), rec2);
    CHECK(peak <= kHeader);
    CHECK(rec2.events == std::vector<Event>{err("header block exceeds 8192 bytes"), msg("next")});

    // A body at the maximum, split: buffered up to exactly max.
    Recorder rec3;
    peak = 0;
    const std::string body = framed(std::string(kMax, 'b'));
    for (char c : body) {
      framer.feed(std::string_view(&c, 1), rec3);
      peak = std::max(peak, framer.buffered_bytes());
    }
    CHECK(peak <= kMax);
    CHECK(rec3.events == std::vector<Event>{msg(std::string(kMax, 'b'))});
  }
}
