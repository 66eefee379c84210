// libFuzzer target for car::stdio::ContentLengthFramer.
//
// Input layout: byte 0 picks the maximum message size (0..63), byte 1 the header block limit
// (16..271), token expansion (see expand_tokens) and the chunk-size seed; the rest is the stream.
// Invariants checked:
// - feeding the stream whole and in data-derived chunks yields the same events;
// - every message is at most max bytes;
// - buffered_bytes() never exceeds max(max_message, max_header_block) and is 0 after finish();
// - round trip: bodies cut from the data and framed with content_length_prefix come back
//   unchanged, in order, with no error, whatever the split.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "car/stdio/content_length_framer.hpp"
#include "checking_recorder.hpp"

namespace {

using Event = car::fuzz::FramerEvent;
using Recorder = car::fuzz::CheckingRecorder;

std::vector<Event> run(std::string_view stream, std::size_t max, std::size_t header_max,
                       std::uint32_t seed, bool whole) {
  Recorder rec(max);
  car::stdio::ContentLengthFramer framer(max, header_max);
  const std::size_t bound = std::max(max, header_max);
  std::size_t pos = 0;
  while (pos < stream.size()) {
    std::size_t n = stream.size() - pos;
    if (!whole) {
      seed = seed * 1103515245u + 12345u;  // tiny LCG: chunk sizes derived from the input
      n = std::min<std::size_t>(1 + (seed >> 16) % 23, n);
    }
    framer.feed(stream.substr(pos, n), rec);
    if (framer.buffered_bytes() > bound) std::abort();
    pos += n;
  }
  framer.finish(rec);
  if (framer.buffered_bytes() != 0) std::abort();
  return rec.events;
}

// Without a dictionary, random bytes rarely spell "Content-Length:"; so when the low bit of byte 1
// is set, every byte 0xF0-0xFF is replaced by a framing token and the framer sees plausible
// streams (missing lengths, resyncs, oversize bodies) far more often.
std::string expand_tokens(std::string_view raw) {
  static constexpr std::string_view kTokens[] = {
      "Content-Length: ",
      "content-LENGTH:",
      "\r\n",
      "\r\n\r\n",
      "Content-Length: 5\r\n\r\n",
      "Content-Length: 70\r\n\r\n",
      "X-Other: value\r\n",
      "Content-Type: a\r\n\r\n",
      "99999999999999999999999",
      "Content-Length: 0\r\n",
      "Content-Length: x\r\n",
      "\n",
      "Content-Length: 1\r\n",
      "\r",
      "0",
      "{\"jsonrpc\":\"2.0\"}",
  };
  std::string out;
  for (char c : raw) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte >= 0xF0) {
      out += kTokens[byte - 0xF0];
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::size_t max = data[0] % 64;
  const std::size_t header_max = 16 + data[1];
  const std::uint32_t seed = data[0] * 257u + data[1];
  const std::string_view raw(reinterpret_cast<const char*>(data + 2), size - 2);
  const std::string expanded = (data[1] & 1) != 0 ? expand_tokens(raw) : std::string();
  const std::string_view stream = (data[1] & 1) != 0 ? std::string_view(expanded) : raw;

  if (!(run(stream, max, header_max, seed, true) == run(stream, max, header_max, seed, false))) {
    std::abort();
  }

  // Round trip: cut the stream into bodies of data-derived sizes (each at most max) and frame
  // them. Bodies may contain anything, including text that looks like headers.
  std::vector<std::string> bodies;
  std::string wire;
  std::size_t pos = 0;
  std::uint32_t cut = seed;
  while (pos < stream.size()) {
    cut = cut * 1103515245u + 12345u;
    const std::size_t n = std::min<std::size_t>((cut >> 16) % (max + 1), stream.size() - pos);
    bodies.emplace_back(stream.substr(pos, n));
    wire += car::stdio::content_length_prefix(n);
    wire += bodies.back();
    pos += n == 0 ? 1 : n;  // an empty body consumes one input byte so the loop ends
  }
  // The prefix is 20+ bytes; keep the header limit large enough for it here.
  for (bool whole : {true, false}) {
    const auto events = run(wire, max, std::max<std::size_t>(header_max, 64), seed, whole);
    if (events.size() != bodies.size()) std::abort();
    for (std::size_t i = 0; i < bodies.size(); ++i) {
      if (!events[i].is_message || events[i].text != bodies[i]) std::abort();
    }
  }
  return 0;
}
