// WebSocket frame opcodes (RFC 6455 §5.2) and the two questions the codec asks about them.
//
// Thread-safety: constants and pure functions only; usable from any thread.
#pragma once

#include <cstdint>

namespace car::ws {

// The opcodes RFC 6455 defines. Values 3-7 and 11-15 are reserved; since we negotiate no
// extension, receiving one of them is a protocol error (close 1002).
enum class Opcode : std::uint8_t {
  continuation = 0,
  text = 1,
  binary = 2,
  close = 8,
  ping = 9,
  pong = 10,
};

// True for the six opcodes above; `raw` is the low nibble of a frame's first byte.
constexpr bool is_known_opcode(std::uint8_t raw) noexcept {
  return raw <= 2 || (raw >= 8 && raw <= 10);
}

// Control frames (close, ping, pong) have the high bit of the opcode nibble set. They may not be
// fragmented, carry at most 125 bytes, and may appear between the fragments of a data message.
constexpr bool is_control(Opcode op) noexcept {
  return (static_cast<std::uint8_t>(op) & 0x8U) != 0;
}

}  // namespace car::ws
