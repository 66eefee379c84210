#include "car/ws/frame_encoder.hpp"

#include <array>
#include <cstring>

#include "car/ws/close_code.hpp"
#include "mask.hpp"

namespace car::ws {

namespace {

std::array<unsigned char, 4> key_bytes(std::uint32_t key) noexcept {
  return {static_cast<unsigned char>(key >> 24), static_cast<unsigned char>(key >> 16),
          static_cast<unsigned char>(key >> 8), static_cast<unsigned char>(key)};
}

std::string build_frame(Opcode op, std::string_view payload, bool fin, const std::uint32_t* key) {
  std::array<std::uint8_t, max_frame_header> header{};
  const std::size_t header_len = encode_frame_header(op, payload.size(), fin, header, key);
  if (header_len == 0) return {};
  std::string frame;
  frame.resize(header_len + payload.size());
  std::memcpy(frame.data(), header.data(), header_len);
  auto* body = reinterpret_cast<unsigned char*>(frame.data() + header_len);
  const auto* src = reinterpret_cast<const unsigned char*>(payload.data());
  if (key != nullptr) {
    detail::mask_copy(body, src, payload.size(), key_bytes(*key), 0);
  } else if (!payload.empty()) {
    std::memcpy(body, src, payload.size());
  }
  return frame;
}

}  // namespace

std::size_t encode_frame_header(Opcode op, std::uint64_t payload_len, bool fin,
                                std::span<std::uint8_t, max_frame_header> out,
                                const std::uint32_t* mask_key) {
  if ((payload_len >> 63) != 0) return 0;
  if (is_control(op) && (payload_len > max_control_payload || !fin)) return 0;

  out[0] = static_cast<std::uint8_t>((fin ? 0x80U : 0U) | static_cast<std::uint8_t>(op));
  const std::uint8_t mask_bit = mask_key != nullptr ? 0x80U : 0U;
  std::size_t n = 2;
  if (payload_len <= 125) {
    out[1] = static_cast<std::uint8_t>(mask_bit | payload_len);
  } else if (payload_len <= 0xFFFF) {
    out[1] = static_cast<std::uint8_t>(mask_bit | 126U);
    out[2] = static_cast<std::uint8_t>(payload_len >> 8);
    out[3] = static_cast<std::uint8_t>(payload_len);
    n = 4;
  } else {
    out[1] = static_cast<std::uint8_t>(mask_bit | 127U);
    for (std::size_t i = 0; i < 8; ++i) {
      out[2 + i] = static_cast<std::uint8_t>(payload_len >> (56 - 8 * i));
    }
    n = 10;
  }
  if (mask_key != nullptr) {
    const auto key = key_bytes(*mask_key);
    for (std::size_t i = 0; i < 4; ++i) out[n + i] = key[i];
    n += 4;
  }
  return n;
}

std::string encode_frame(Opcode op, std::string_view payload) {
  return build_frame(op, payload, true, nullptr);
}

std::string encode_close_frame(std::uint16_t code, std::string_view reason) {
  if (code == as_u16(CloseCode::no_status)) return encode_frame(Opcode::close, {});
  constexpr std::size_t max_reason = max_control_payload - 2;
  if (reason.size() > max_reason) {
    std::size_t cut = max_reason;
    // Back up while the first dropped byte is a continuation byte (10xxxxxx): then the cut
    // falls between two code points. At most three steps for valid UTF-8.
    while (cut > 0 && (static_cast<unsigned char>(reason[cut]) & 0xC0U) == 0x80U) --cut;
    reason = reason.substr(0, cut);
  }
  std::string payload;
  payload.reserve(2 + reason.size());
  payload.push_back(static_cast<char>(code >> 8));
  payload.push_back(static_cast<char>(code & 0xFFU));
  payload.append(reason);
  return encode_frame(Opcode::close, payload);
}

std::string encode_client_frame(Opcode op, std::string_view payload, std::uint32_t mask_key,
                                bool fin) {
  return build_frame(op, payload, fin, &mask_key);
}

}  // namespace car::ws
