// Incremental WebSocket frame parser and message reassembler (RFC 6455 §5-§8). Sans-I/O: the
// caller hands in whatever bytes the socket produced, in pieces of any size (down to one byte),
// and receives complete events through a FrameHandler.
//
// Policy, in brief:
// - No extensions are negotiated, so any RSV bit ⇒ 1002.
// - Server role: every incoming frame must be masked; client role: none may be (⇒ 1002).
// - Unknown opcodes, fragmented control frames, control payloads > 125 bytes, a continuation
//   with no message open, and a new text/binary frame while one is open ⇒ 1002.
// - A 64-bit length with the most significant bit set ⇒ 1002. Non-minimal length encodings
//   (e.g. 5 announced with the 16-bit form) are accepted: RFC 6455 says "the minimal number of
//   bytes MUST be used" for senders but prescribes no receiver action, and rejecting them buys
//   nothing — the length is unambiguous either way.
// - A message (the sum of its fragments) longer than max_message ⇒ 1009, decided from each frame
//   header before any of that frame's payload is buffered; a header announcing 2^40 bytes fails
//   at once and allocates nothing.
// - Text is validated as UTF-8 while it arrives (across reads and fragments); the first bad byte
//   ⇒ 1007, and so does a message whose final fragment ends inside a code point.
// - A close frame with a 1-byte payload, a code rejected by is_valid_received_close_code, or a
//   reason that is not valid UTF-8 ⇒ 1002.
// - Control frames may be interleaved between the fragments of a data message.
// - Binary messages are counted, never buffered: on_binary reports only their size.
//
// Memory: besides the object itself (about 300 bytes, incl. a 125-byte control buffer), a
// decoder holds only the text message being reassembled, which grows as bytes arrive (never
// reserved from an announced length) and is bounded by max_message. After a delivered text
// message of more than 64 KiB the buffer is released, so one large message does not pin memory
// for the life of the connection.
//
// Thread-safety: a FrameDecoder is a single-threaded object; all calls on one instance must come
// from one thread at a time (in carcore, the connection's loop thread).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "car/export.hpp"
#include "car/ws/close_code.hpp"
#include "car/ws/opcode.hpp"
#include "car/ws/utf8_validator.hpp"

namespace car::ws {

// Which side of the connection this decoder parses *for*. A server decodes client frames (which
// must be masked); a client decodes server frames (which must not be).
enum class Role { server, client };

// Receives decoded events, in wire order, synchronously from inside FrameDecoder::feed.
//
// Rules for implementations: do not call feed() on the same decoder and do not destroy the
// decoder from inside a callback (queue the reply or the close instead — nothing re-enters the
// parser); do not throw (an exception would leave the decoder in an unspecified state). Every
// string_view argument points into memory owned by the decoder or by the caller's input and is
// valid only until the callback returns; copy what you keep.
class CAR_API FrameHandler {
 public:
  virtual ~FrameHandler() = default;
  // A complete text message, already validated as UTF-8 (possibly empty).
  virtual void on_text(std::string_view message) = 0;
  // A complete binary message of `size` bytes; its payload has been discarded.
  virtual void on_binary(std::size_t size) = 0;
  // A ping (payload ≤ 125 bytes). The caller is expected to answer with a pong of this payload.
  virtual void on_ping(std::string_view payload) = 0;
  // A pong (payload ≤ 125 bytes), solicited or not.
  virtual void on_pong(std::string_view payload) = 0;
  // A valid close frame: `code` passed is_valid_received_close_code, or is 1005 (no_status) when
  // the frame had no payload; `reason` is valid UTF-8 (≤ 123 bytes). This is the last event.
  virtual void on_close(std::uint16_t code, std::string_view reason) = 0;
};

// Why decoding stopped: the close code to send to the peer and a short, fixed description for
// logs (never echoes peer data).
struct CAR_API DecodeError {
  CloseCode code;
  std::string reason;
};

class CAR_API FrameDecoder {
 public:
  // `max_message`: the largest message, in payload bytes summed over its fragments, that is
  // accepted (text or binary); larger ⇒ 1009. Control frames are bounded by 125 separately.
  FrameDecoder(Role role, std::size_t max_message);

  // Consumes all of `bytes`, calling `handler` for each complete event in order, and returns
  // std::nullopt if everything so far is valid (a partial frame is simply kept for the next
  // call). On the first violation returns the error; the decoder is then dead: later feeds
  // ignore their bytes, call nothing and return the same error. Events for bytes before the
  // violation have been delivered. After on_close has been delivered, the decoder is closed:
  // later bytes (in this call or later ones) are ignored and feed returns std::nullopt.
  // An empty `bytes` is a no-op. May throw only std::bad_alloc (growing the text buffer).
  std::optional<DecodeError> feed(std::string_view bytes, FrameHandler& handler);

  // Bytes currently held for an unfinished text message (0 between messages).
  std::size_t buffered_bytes() const noexcept { return message_.size(); }

  // True once on_close has been delivered.
  bool closed() const noexcept { return closed_; }

  // The sticky error, if the decoder is dead.
  const std::optional<DecodeError>& error() const noexcept { return error_; }

  Role role() const noexcept { return role_; }
  std::size_t max_message() const noexcept { return max_message_; }
  // Raises the bound for the messages that start from now on (and the one in progress); a
  // smaller value is ignored, so a message already accepted can never become too big. The
  // WebSocket connection starts an unauthenticated peer at a small bound and raises it at auth.
  void raise_max_message(std::size_t max) noexcept {
    if (max > max_message_) max_message_ = max;
  }

 private:
  // Parsing the header or the payload of the current frame.
  enum class Stage : std::uint8_t { header, payload };

  // Returns the number of bytes consumed from `in`; sets error_ on a violation.
  std::size_t consume_header(std::string_view in, FrameHandler& handler);
  std::size_t consume_payload(std::string_view in, FrameHandler& handler);
  // Header complete: validate what needs the full header, then start the payload.
  void begin_payload(FrameHandler& handler);
  // The current frame's payload is complete: deliver what it completes.
  void finish_frame(FrameHandler& handler);
  void finish_control(FrameHandler& handler);
  void fail(CloseCode code, const char* reason);

  Role role_;
  std::size_t max_message_;
  Stage stage_ = Stage::header;

  // Header of the frame being parsed (the 2 fixed bytes, then extended length and mask key).
  std::array<unsigned char, 14> header_{};
  std::size_t header_len_ = 0;     // bytes of header_ filled
  std::size_t header_needed_ = 2;  // total header size, known once the first 2 bytes are in

  // The current frame, once its header is parsed.
  Opcode opcode_ = Opcode::continuation;
  bool fin_ = false;
  bool masked_ = false;
  std::array<unsigned char, 4> mask_key_{};
  std::uint64_t payload_len_ = 0;
  std::uint64_t payload_done_ = 0;

  // The data message being reassembled (open across fragments and interleaved control frames).
  bool message_open_ = false;
  Opcode message_opcode_ = Opcode::text;
  std::uint64_t message_size_ = 0;  // payload bytes announced so far, all fragments
  std::string message_;             // text only; binary is counted, not kept
  Utf8Validator utf8_;

  // Payload of the current control frame (≤ 125 bytes, so a fixed array).
  std::array<char, 125> control_{};

  bool closed_ = false;
  std::optional<DecodeError> error_;
};

}  // namespace car::ws
