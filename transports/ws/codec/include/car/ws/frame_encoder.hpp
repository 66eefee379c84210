// Building WebSocket frames (RFC 6455 §5.2). Sans-I/O: every function returns bytes, the caller
// writes them.
//
// Server frames are never masked. The masked variants exist for test and benchmark clients.
// The encoder never fragments: one call makes one frame. Lengths always use the shortest
// encoding (7-bit up to 125, 16-bit up to 65535, 64-bit above).
//
// Mask keys: a std::uint32_t key is put on the wire most significant byte first, so the key
// 0x11223344 appears as the bytes 11 22 33 44 and payload byte i is XORed with byte (i % 4) of
// that sequence.
//
// Errors (no exceptions): arguments that cannot form a valid frame — a payload length of 2^63 or
// more, or a control opcode (close/ping/pong) with a payload over 125 bytes or fin == false —
// make encode_frame_header return 0 and the string-returning functions return an empty string.
// std::bad_alloc from std::string is the only exception that can escape.
//
// Thread-safety: pure functions, reentrant. Returned strings are owned by the caller.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "car/export.hpp"
#include "car/ws/opcode.hpp"

namespace car::ws {

// The longest header: 2 fixed bytes + 8 bytes of 64-bit length + 4 bytes of mask key.
constexpr std::size_t max_frame_header = 14;

// The largest control-frame payload (RFC 6455 §5.5).
constexpr std::size_t max_control_payload = 125;

// Writes the header of one frame into `out` and returns its length (2 to 14), or 0 for invalid
// arguments (see above; `out` is then unspecified). `mask_key` null ⇒ unmasked (server frames);
// non-null ⇒ the MASK bit and the key are written — the caller masks the payload itself.
CAR_API std::size_t encode_frame_header(Opcode op, std::uint64_t payload_len, bool fin,
                                std::span<std::uint8_t, max_frame_header> out,
                                const std::uint32_t* mask_key = nullptr);

// One complete, unmasked, final (FIN) server frame: header + payload. Empty string for a control
// frame whose payload exceeds 125 bytes.
CAR_API std::string encode_frame(Opcode op, std::string_view payload);

// A server close frame. `reason` is cut to at most 123 bytes so the payload (2-byte code +
// reason) fits in 125; the cut backs up to a UTF-8 code point boundary, so a valid UTF-8 reason
// stays valid. The code is written as given, except CloseCode::no_status (1005), which by RFC
// 6455 §7.4.1 must not appear on the wire and instead yields a close frame with an empty payload
// (the reason is then dropped too).
CAR_API std::string encode_close_frame(std::uint16_t code, std::string_view reason);

// One complete masked frame as a client would send it. `fin` false makes a non-final fragment
// (data opcodes and continuation only). Empty string for invalid arguments.
CAR_API std::string encode_client_frame(Opcode op, std::string_view payload, std::uint32_t mask_key,
                                bool fin = true);

}  // namespace car::ws
