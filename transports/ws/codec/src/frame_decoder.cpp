#include "car/ws/frame_decoder.hpp"

#include <algorithm>
#include <cstring>

#include "mask.hpp"

namespace car::ws {

namespace {

// A delivered text message bigger than this has its buffer released rather than kept for the
// next message: typical JSON-RPC traffic is small, and one 16 MiB upload should not pin 16 MiB
// per connection for as long as the connection lives.
constexpr std::size_t keep_capacity = 64 * 1024;

// RFC 6455 §5.5: control frames carry at most 125 bytes, so the 7-bit length is all they may use.
constexpr unsigned max_control_payload = 125;

}  // namespace

FrameDecoder::FrameDecoder(Role role, std::size_t max_message)
    : role_(role), max_message_(max_message) {}

void FrameDecoder::fail(CloseCode code, const char* reason) { error_ = DecodeError{code, reason}; }

std::optional<DecodeError> FrameDecoder::feed(std::string_view bytes, FrameHandler& handler) {
  if (error_) return error_;
  while (!bytes.empty() && !closed_) {
    const std::size_t used =
        stage_ == Stage::header ? consume_header(bytes, handler) : consume_payload(bytes, handler);
    if (error_) return error_;
    bytes.remove_prefix(used);
  }
  return std::nullopt;
}

std::size_t FrameDecoder::consume_header(std::string_view in, FrameHandler& handler) {
  std::size_t used = 0;
  while (header_len_ < header_needed_ && used < in.size()) {
    header_[header_len_++] = static_cast<unsigned char>(in[used++]);
    if (header_len_ != 2) continue;

    // The first two bytes decide almost every protocol violation; check them now so a bad peer
    // is refused before it sends any length or payload.
    const unsigned char b0 = header_[0];
    const unsigned char b1 = header_[1];
    if ((b0 & 0x70U) != 0) {
      fail(CloseCode::protocol_error, "reserved bits set without a negotiated extension");
      return used;
    }
    const auto raw_opcode = static_cast<std::uint8_t>(b0 & 0x0FU);
    if (!is_known_opcode(raw_opcode)) {
      fail(CloseCode::protocol_error, "unknown opcode");
      return used;
    }
    opcode_ = static_cast<Opcode>(raw_opcode);
    fin_ = (b0 & 0x80U) != 0;
    masked_ = (b1 & 0x80U) != 0;
    if (role_ == Role::server && !masked_) {
      fail(CloseCode::protocol_error, "client frame is not masked");
      return used;
    }
    if (role_ == Role::client && masked_) {
      fail(CloseCode::protocol_error, "server frame is masked");
      return used;
    }
    const unsigned len7 = b1 & 0x7FU;
    if (is_control(opcode_)) {
      if (!fin_) {
        fail(CloseCode::protocol_error, "fragmented control frame");
        return used;
      }
      if (len7 > max_control_payload) {
        fail(CloseCode::protocol_error, "control frame payload over 125 bytes");
        return used;
      }
    } else if (opcode_ == Opcode::continuation) {
      if (!message_open_) {
        fail(CloseCode::protocol_error, "continuation frame without a message to continue");
        return used;
      }
    } else if (message_open_) {
      fail(CloseCode::protocol_error, "new data frame inside a fragmented message");
      return used;
    }
    header_needed_ = 2 + (len7 == 126 ? 2U : len7 == 127 ? 8U : 0U) + (masked_ ? 4U : 0U);
  }
  if (header_len_ == header_needed_) begin_payload(handler);
  return used;
}

void FrameDecoder::begin_payload(FrameHandler& handler) {
  const unsigned len7 = header_[1] & 0x7FU;
  std::size_t pos = 2;
  if (len7 <= 125) {
    payload_len_ = len7;
  } else if (len7 == 126) {
    payload_len_ = (std::uint64_t{header_[2]} << 8) | header_[3];
    pos = 4;
  } else {
    payload_len_ = 0;
    for (std::size_t i = 2; i < 10; ++i) payload_len_ = (payload_len_ << 8) | header_[i];
    pos = 10;
    if ((payload_len_ >> 63) != 0) {
      fail(CloseCode::protocol_error, "64-bit payload length has its most significant bit set");
      return;
    }
  }
  if (masked_) {
    std::copy_n(header_.begin() + static_cast<std::ptrdiff_t>(pos), 4, mask_key_.begin());
  }
  header_len_ = 0;
  header_needed_ = 2;

  if (!is_control(opcode_)) {
    if (opcode_ != Opcode::continuation) {
      message_open_ = true;
      message_opcode_ = opcode_;
      message_size_ = 0;
      utf8_.reset();
    }
    // Decided from the announced length alone, before a byte of this payload is stored.
    // message_size_ never exceeds max_message_, so the subtraction cannot wrap.
    if (payload_len_ > max_message_ - message_size_) {
      fail(CloseCode::message_too_big, "message exceeds the maximum message size");
      return;
    }
    message_size_ += payload_len_;
  }

  stage_ = Stage::payload;
  payload_done_ = 0;
  if (payload_len_ == 0) finish_frame(handler);
}

std::size_t FrameDecoder::consume_payload(std::string_view in, FrameHandler& handler) {
  const auto n =
      static_cast<std::size_t>(std::min<std::uint64_t>(in.size(), payload_len_ - payload_done_));
  const auto* src = reinterpret_cast<const unsigned char*>(in.data());
  // Copy (unmasking on the way) straight into the final destination: the control buffer or the
  // text message; binary payload is not copied at all.
  auto place = [&](unsigned char* dst) {
    if (masked_) {
      detail::mask_copy(dst, src, n, mask_key_, static_cast<std::size_t>(payload_done_));
    } else {
      std::memcpy(dst, src, n);
    }
  };
  if (is_control(opcode_)) {
    place(reinterpret_cast<unsigned char*>(control_.data()) + payload_done_);
  } else if (message_opcode_ == Opcode::text) {
    const std::size_t old = message_.size();
    message_.resize(old + n);
    place(reinterpret_cast<unsigned char*>(message_.data()) + old);
    // Validate just the new bytes, so a bad message fails on the read that brought the bad byte.
    if (!utf8_.feed(std::string_view(message_).substr(old))) {
      fail(CloseCode::invalid_payload, "text message is not valid UTF-8");
      return n;
    }
  }
  payload_done_ += n;
  if (payload_done_ == payload_len_) finish_frame(handler);
  return n;
}

void FrameDecoder::finish_frame(FrameHandler& handler) {
  stage_ = Stage::header;
  if (is_control(opcode_)) {
    finish_control(handler);
    return;
  }
  if (!fin_) return;  // more fragments to come
  message_open_ = false;
  const std::uint64_t size = message_size_;
  message_size_ = 0;
  if (message_opcode_ == Opcode::binary) {
    handler.on_binary(static_cast<std::size_t>(size));
    return;
  }
  if (!utf8_.at_boundary()) {
    fail(CloseCode::invalid_payload, "text message ends inside a UTF-8 sequence");
    return;
  }
  handler.on_text(message_);
  if (message_.capacity() > keep_capacity) {
    std::string().swap(message_);
  } else {
    message_.clear();
  }
}

void FrameDecoder::finish_control(FrameHandler& handler) {
  const std::string_view payload(control_.data(), static_cast<std::size_t>(payload_len_));
  switch (opcode_) {
    case Opcode::ping:
      handler.on_ping(payload);
      return;
    case Opcode::pong:
      handler.on_pong(payload);
      return;
    case Opcode::close:
      break;
    default:
      return;  // unreachable: only control opcodes get here
  }
  if (payload.empty()) {
    closed_ = true;
    handler.on_close(as_u16(CloseCode::no_status), {});
    return;
  }
  if (payload.size() == 1) {
    fail(CloseCode::protocol_error, "close frame with a 1-byte payload");
    return;
  }
  const auto code = static_cast<std::uint16_t>((static_cast<unsigned char>(payload[0]) << 8) |
                                               static_cast<unsigned char>(payload[1]));
  if (!is_valid_received_close_code(code)) {
    fail(CloseCode::protocol_error, "invalid close code");
    return;
  }
  const std::string_view reason = payload.substr(2);
  if (!is_valid_utf8(reason)) {
    fail(CloseCode::protocol_error, "close reason is not valid UTF-8");
    return;
  }
  closed_ = true;
  handler.on_close(code, reason);
}

}  // namespace car::ws
