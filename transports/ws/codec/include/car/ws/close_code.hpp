// WebSocket close status codes (RFC 6455 §7.4) and the validity rule for received codes.
//
// Thread-safety: constants and pure functions only; usable from any thread.
#pragma once

#include <cstdint>

namespace car::ws {

// The codes carcore sends or reports. `no_status` (1005) and `abnormal` (1006) are never put on
// the wire: 1005 is what FrameHandler::on_close reports for a close frame without a payload, 1006
// is what a transport reports when the socket died without a close frame.
enum class CloseCode : std::uint16_t {
  normal = 1000,
  going_away = 1001,
  protocol_error = 1002,
  unsupported_data = 1003,
  no_status = 1005,
  abnormal = 1006,
  invalid_payload = 1007,
  policy_violation = 1008,
  message_too_big = 1009,
  mandatory_extension = 1010,
  internal_error = 1011,
};

// Whether a code found in a received close frame is acceptable (protocol PROTOCOL.md §1): 1000-1003 and
// 1007-1014 (defined or IANA-registered), 3000-4999 (libraries and applications). Everything else,
// including 1004-1006, 1015 (reserved, must never be sent), 0-999, 1016-2999 and 5000+, makes
// the close frame itself a protocol error (1002).
constexpr bool is_valid_received_close_code(std::uint16_t code) noexcept {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}

// The numeric value, for the wire and for FrameHandler::on_close comparisons.
constexpr std::uint16_t as_u16(CloseCode code) noexcept { return static_cast<std::uint16_t>(code); }

}  // namespace car::ws
