// libFuzzer target for car::stdio::NdjsonFramer.
//
// Input layout: byte 0 picks the maximum message size (0..63, small so that the limit is hit
// often), byte 1 seeds the chunk sizes, the rest is the stream. Invariants checked:
// - feeding the stream whole and in data-derived chunks yields the same events;
// - every message is at most max bytes, contains no '\n', does not end in the stripped '\r'
//   (unless that '\r' was data) and is not blank;
// - buffered_bytes() never exceeds max + 1 and is 0 after finish();
// - round trip: lines built from the data, joined with "\n" or "\r\n", come back unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "car/stdio/ndjson_framer.hpp"
#include "checking_recorder.hpp"

namespace {

using Event = car::fuzz::FramerEvent;

// An NDJSON message holds no '\n' and is never blank (blank lines are skipped).
bool ndjson_message_ok(std::string_view text) {
  return text.find('\n') == std::string_view::npos &&
         text.find_first_not_of(" \t\r") != std::string_view::npos;
}

struct Recorder : car::fuzz::CheckingRecorder {
  explicit Recorder(std::size_t max) : CheckingRecorder(max, ndjson_message_ok) {}
};

void check_bound(const car::stdio::NdjsonFramer& framer, std::size_t max) {
  if (framer.buffered_bytes() > max + 1) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::size_t max = data[0] % 64;
  std::uint32_t seed = data[1];
  const std::string_view stream(reinterpret_cast<const char*>(data + 2), size - 2);

  Recorder whole(max);
  {
    car::stdio::NdjsonFramer framer(max);
    framer.feed(stream, whole);
    check_bound(framer, max);
    framer.finish(whole);
    if (framer.buffered_bytes() != 0) std::abort();
  }

  Recorder split(max);
  {
    car::stdio::NdjsonFramer framer(max);
    std::size_t pos = 0;
    while (pos < stream.size()) {
      seed = seed * 1103515245u + 12345u;  // tiny LCG: chunk sizes derived from the input
      const std::size_t n = std::min<std::size_t>(1 + (seed >> 16) % 17, stream.size() - pos);
      framer.feed(stream.substr(pos, n), split);
      check_bound(framer, max);
      pos += n;
    }
    framer.finish(split);
  }
  if (!(whole.events == split.events)) std::abort();

  // Round trip: treat the stream as lines, drop what the framer would drop, frame them again.
  std::vector<std::string> lines;
  std::string wire;
  std::string_view rest = stream;
  bool crlf = (data[1] & 1) != 0;
  while (!rest.empty()) {
    std::size_t nl = rest.find_first_of("\r\n");
    std::string line(rest.substr(0, nl));
    rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
    if (line.size() > max || line.find_first_not_of(" \t") == std::string::npos) continue;
    wire += line + (crlf ? "\r\n" : "\n");
    lines.push_back(std::move(line));
  }
  Recorder trip(max);
  car::stdio::NdjsonFramer framer(max);
  framer.feed(wire, trip);
  framer.finish(trip);
  if (trip.events.size() != lines.size()) std::abort();
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (!trip.events[i].is_message || trip.events[i].text != lines[i]) std::abort();
  }
  return 0;
}
