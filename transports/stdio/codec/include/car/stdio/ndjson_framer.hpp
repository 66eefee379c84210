// NDJSON framing for the stdio transport (protocol.md §1): one JSON text per line.
//
// Input rules:
// - A message is the bytes before a '\n'. One trailing '\r' is removed ("\r\n" line endings work);
//   any other '\r' is part of the message.
// - A line that is empty or holds only JSON whitespace (space, tab, '\r') is skipped silently.
// - A line whose text (after removing the trailing '\r') is longer than `max_message` bytes is
//   reported once through on_framing_error and the rest of that line, up to and including its
//   '\n', is dropped as it arrives, without being buffered. This holds even for a line of pure
//   whitespace: the framer cannot know a long line is blank without buffering it. The line after it
//   is handled normally.
// - At end of input (finish()), an unterminated last line counts as a line: it is delivered,
//   skipped (blank) or, if it was being dropped, ignored (its error has already been reported).
// - No other validation happens here; a bad line reaches the core, which answers -32700.
//
// Memory: the framer copies only a line that straddles two feed() calls, and never holds more than
// max_message + 1 bytes (the +1 is a '\r' that may turn out to be the trailing one). A line wholly
// inside one chunk is delivered as a view into the caller's bytes, with no copy.
//
// Errors: every error is reported through FrameEvents::on_framing_error; nothing throws from the
// framer itself. If memory for a straddling line cannot be allocated, the line is treated as
// oversized (reported and dropped).
//
// Thread-safety: a single-threaded object. All calls on one instance, including the upcalls they
// make, happen on one thread; distinct instances are independent.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "car/export.hpp"
#include "car/stdio/framing_events.hpp"

namespace car::stdio {

class CAR_API NdjsonFramer {
 public:
  // `max_message` is the largest line text accepted (the daemon's --max-message, default 16 MiB).
  explicit NdjsonFramer(std::size_t max_message);

  // Consumes `bytes` (any split of the stream, down to one byte per call) and reports every
  // complete line in it through `events`, in order. `bytes` need only stay valid for this call.
  // Must not be called from inside one of this framer's upcalls.
  void feed(std::string_view bytes, FrameEvents& events);

  // End of input: reports the unterminated last line, if any (see the rules above), then resets
  // the framer to its initial state so it could be fed a new stream.
  void finish(FrameEvents& events);

  // Bytes of a partial line held between feed() calls; never more than max_message + 1.
  std::size_t buffered_bytes() const noexcept { return line_.size(); }

 private:
  // Reports one complete line (raw bytes before the '\n').
  void deliver_line(std::string_view raw, FrameEvents& events);
  // Reports an oversized line (it is the caller's job to drop it).
  void report_too_long(FrameEvents& events) const;
  // Returns true if a partial line of `size` bytes ending with `last` already exceeds the limit.
  bool partial_too_long(std::size_t size, char last) const noexcept;

  std::size_t max_message_;
  // The start of a line that straddles feed() calls.
  std::string line_;
  // True while dropping the rest of an oversized line (until its '\n').
  bool discarding_ = false;
};

}  // namespace car::stdio
