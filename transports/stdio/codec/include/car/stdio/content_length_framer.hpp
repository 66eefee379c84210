// Content-Length framing for the stdio transport (protocol.md §1), as used by LSP-style peers:
//
//     Content-Length: N\r\n
//     Other-Header: ignored\r\n
//     \r\n
//     <exactly N bytes of message>
//
// Input rules:
// - A header block is a sequence of lines ended by an empty line. Lines end with "\r\n"; a bare
//   "\n" is accepted too. Header names are matched case-insensitively; headers other than
//   Content-Length, and lines without a ':', are ignored. The value is a decimal number with
//   optional surrounding spaces or tabs (no sign).
// - Empty lines before the first header line of a block (e.g. a stray "\r\n" after a body) are
//   skipped silently and do not count towards the header block limit.
// - The block size counts every byte from the first header line up to and including the final
//   empty line. A block longer than `max_header_block` bytes ⇒ on_framing_error as soon as the
//   first byte past the limit arrives, then resynchronisation (below) from that byte on.
// - A block without a Content-Length header, with a value that is not a decimal number, or with
//   two Content-Length headers that disagree ⇒ on_framing_error when the block ends, then
//   resynchronisation from the byte after the block.
// - A length above `max_message` ⇒ on_framing_error when the block ends; then the announced N
//   bytes are dropped as they arrive, without being buffered, and the next header block follows.
//   A value with too many digits for std::size_t counts as SIZE_MAX: it is reported the same way
//   and, in practice, the rest of the stream is dropped (the caller may close the connection).
// - Content-Length: 0 delivers an empty message (the core then answers -32700 for it).
// - Resynchronisation: the framer drops bytes until it sees the text "Content-Length:" (any case)
//   anywhere in the stream and starts a new header block with it. It does not require the match to
//   be at a line start, because bodies are not newline-terminated: after a block without a length,
//   the next block usually follows the unknown body on the same "line". A body that happens to
//   contain "Content-Length:" may cause a second framing error; that is the price of recovering.
// - At end of input (finish()): a partial header block, or a body with fewer than N bytes, is
//   reported through on_framing_error ("end of input ...") and dropped; stray empty lines, a
//   discard or a resynchronisation in progress are not reported again.
//
// Memory: the framer buffers at most one header line (bounded by max_header_block) or one body
// (bounded by max_message), never both, and only when it straddles feed() calls. A body wholly
// inside one chunk is delivered as a view into the caller's bytes, with no copy.
//
// Errors: every error is reported through FrameEvents::on_framing_error; nothing throws from the
// framer itself. If memory for a straddling body cannot be allocated, it is reported and the rest
// of that body is dropped.
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

class CAR_API ContentLengthFramer {
 public:
  // `max_message` is the largest body accepted (the daemon's --max-message); `max_header_block`
  // bounds a header block (protocol.md: 8 KiB).
  ContentLengthFramer(std::size_t max_message, std::size_t max_header_block = 8192);

  // Consumes `bytes` (any split of the stream, down to one byte per call) and reports every
  // complete message and framing error in it through `events`, in order. `bytes` need only stay
  // valid for this call. Must not be called from inside one of this framer's upcalls.
  void feed(std::string_view bytes, FrameEvents& events);

  // End of input: reports a truncated header block or body (see above), then resets the framer to
  // its initial state so it could be fed a new stream.
  void finish(FrameEvents& events);

  // Bytes held between feed() calls (a partial header line or a partial body); never more than
  // max(max_message, max_header_block).
  std::size_t buffered_bytes() const noexcept { return line_.size() + body_.size(); }

 private:
  enum class State {
    header,   // reading a header block
    body,     // reading the announced body
    discard,  // dropping the body of an oversized message
    resync,   // dropping bytes until "Content-Length:"
  };
  // What the Content-Length headers of the current block said so far.
  enum class Length { absent, value, not_a_number, conflicting };

  std::string_view feed_header(std::string_view bytes, FrameEvents& events);
  std::string_view feed_body(std::string_view bytes, FrameEvents& events);
  std::string_view feed_resync(std::string_view bytes);
  void header_line(std::string_view line, FrameEvents& events);
  void end_of_block(FrameEvents& events);
  void start_block() noexcept;
  void start_resync() noexcept;

  std::size_t max_message_;
  std::size_t max_header_block_;
  State state_ = State::header;

  // Header state: the start of a header line that straddles feed() calls, the bytes of the block
  // so far (including line_), the non-empty lines seen, and the Content-Length verdict.
  std::string line_;
  std::size_t block_bytes_ = 0;
  std::size_t block_lines_ = 0;
  Length length_ = Length::absent;
  std::size_t length_value_ = 0;

  // Body and discard states: the body so far (body state, straddling only) and the bytes expected.
  std::string body_;
  std::size_t expected_ = 0;

  // Resync state: how many bytes of "content-length:" have matched so far.
  std::size_t matched_ = 0;
};

// The longest header block write_content_length_prefix writes (any size_t body size).
inline constexpr std::size_t max_content_length_prefix = 16 + 20 + 4;

// Writes the header block for a body of `body_size` bytes, "Content-Length: N\r\n\r\n", into
// `out` (room for max_content_length_prefix bytes) and returns its length. Never allocates.
CAR_API std::size_t write_content_length_prefix(std::size_t body_size, char* out) noexcept;

// The same header block as a string. Writers send it followed by the body. May throw
// std::bad_alloc (it is not part of a framer).
CAR_API std::string content_length_prefix(std::size_t body_size);

}  // namespace car::stdio
