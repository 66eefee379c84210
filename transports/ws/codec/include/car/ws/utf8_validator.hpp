// Incremental UTF-8 validation for WebSocket text messages (RFC 6455 §8.1, RFC 3629).
//
// A text message may arrive in many fragments and each fragment in many reads, and a code point
// may be split anywhere; the validator therefore keeps the state of an unfinished sequence
// between calls so the caller can reject a bad message as soon as the offending byte arrives
// instead of buffering the whole message first.
//
// What is rejected (RFC 3629 §4): bytes 0xC0, 0xC1, 0xF5-0xFF anywhere; a continuation byte
// (0x80-0xBF) without a lead byte; a lead byte not followed by enough continuation bytes;
// overlong encodings (e.g. 0xE0 0x80..0x9F, 0xF0 0x80..0x8F); UTF-16 surrogates U+D800-U+DFFF
// (0xED 0xA0..0xBF); code points above U+10FFFF (0xF4 0x90.., 0xF5..). A sequence still open when
// the message ends (at_boundary() false) is truncated and must be rejected by the caller.
//
// Thread-safety: a Utf8Validator is a plain value with no shared state; one instance must not be
// used from two threads at once. is_valid_utf8 is reentrant.
#pragma once

#include <cstdint>
#include <string_view>
#include "car/export.hpp"

namespace car::ws {

class CAR_API Utf8Validator {
 public:
  // Validates `bytes` as the continuation of everything fed since construction or reset().
  // Returns false as soon as the input so far cannot be a prefix of valid UTF-8; from then on the
  // validator stays failed (every feed returns false) until reset(). Pure ASCII runs are checked
  // eight bytes at a time. Never allocates, never throws.
  bool feed(std::string_view bytes) noexcept;

  // True when the input so far is valid and does not end inside a multi-byte sequence, i.e. the
  // message may legally end here. False after a failure.
  bool at_boundary() const noexcept { return !failed_ && remaining_ == 0; }

  // True once feed() has returned false (until reset()).
  bool failed() const noexcept { return failed_; }

  // Forgets all state; the next feed starts a new message.
  void reset() noexcept;

 private:
  // Continuation bytes still expected for the current code point (0 at a boundary).
  std::uint8_t remaining_ = 0;
  // Allowed range of the *next* continuation byte. Only the first continuation byte after some
  // lead bytes has a narrower range (that is how overlongs, surrogates and > U+10FFFF are
  // excluded); every later one is 0x80-0xBF.
  std::uint8_t next_low_ = 0x80;
  std::uint8_t next_high_ = 0xBF;
  bool failed_ = false;
};

// True iff `bytes` is complete, valid UTF-8 (the empty string is valid).
CAR_API bool is_valid_utf8(std::string_view bytes) noexcept;

}  // namespace car::ws
