#include "car/stdio/content_length_framer.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <limits>
#include <new>

#include "framer_buffer.hpp"

namespace car::stdio {
using detail::release;
using detail::ReleaseOnExit;
using detail::try_append;

namespace {

constexpr std::string_view kLengthHeader = "content-length";
// What resynchronisation looks for (lower case; input is folded before comparing). Its first
// letter occurs nowhere else in it, which lets the matcher restart with a single comparison.
constexpr std::string_view kResyncMarker = "content-length:";

char to_lower_ascii(char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

bool equals_ignore_case(std::string_view a, std::string_view lower) noexcept {
  if (a.size() != lower.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (to_lower_ascii(a[i]) != lower[i]) return false;
  }
  return true;
}

std::string_view trim_ows(std::string_view text) noexcept {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

// Parses a non-empty run of decimal digits. A value too large for std::size_t saturates to
// SIZE_MAX, which is above any usable maximum and so takes the oversize path, as protocol.md asks.
bool parse_length(std::string_view text, std::size_t& value) noexcept {
  if (text.empty()) return false;
  constexpr std::size_t kMax = std::numeric_limits<std::size_t>::max();
  std::size_t result = 0;
  bool saturated = false;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    const auto digit = static_cast<std::size_t>(c - '0');
    if (saturated || result > (kMax - digit) / 10) {
      saturated = true;  // keep scanning: a later non-digit still makes the value invalid
      continue;
    }
    result = result * 10 + digit;
  }
  value = saturated ? kMax : result;
  return true;
}


}  // namespace

ContentLengthFramer::ContentLengthFramer(std::size_t max_message, std::size_t max_header_block)
    : max_message_(max_message), max_header_block_(max_header_block) {}

void ContentLengthFramer::start_block() noexcept {
  state_ = State::header;
  release(line_);
  block_bytes_ = 0;
  block_lines_ = 0;
  length_ = Length::absent;
  length_value_ = 0;
}

void ContentLengthFramer::start_resync() noexcept {
  start_block();
  state_ = State::resync;
  matched_ = 0;
}

void ContentLengthFramer::feed(std::string_view bytes, FrameEvents& events) {
  // Each step consumes a prefix of `bytes` and may change state; every step makes progress, so
  // the loop ends when the input is used up.
  while (!bytes.empty()) {
    switch (state_) {
      case State::header:
        bytes = feed_header(bytes, events);
        break;
      case State::body:
        bytes = feed_body(bytes, events);
        break;
      case State::discard: {
        const std::size_t take = std::min(expected_, bytes.size());
        expected_ -= take;
        bytes.remove_prefix(take);
        if (expected_ == 0) start_block();
        break;
      }
      case State::resync:
        bytes = feed_resync(bytes);
        break;
    }
  }
}

std::string_view ContentLengthFramer::feed_header(std::string_view bytes, FrameEvents& events) {
  const std::size_t newline = bytes.find('\n');
  const std::size_t segment = newline == std::string_view::npos ? bytes.size() : newline + 1;

  // Empty lines between messages do not start a block; only count bytes once a block has begun.
  // A lone '\r' (half of a "\r\n") is tentatively counted, which is harmless: it either completes
  // an empty line (and the count is reset) or belongs to a real header line.
  if (block_bytes_ + segment > max_header_block_) {
    // The limit is crossed inside this segment. Consume exactly up to the limit so that the error
    // fires at the same byte however the stream was split, then resynchronise from there.
    // (block_bytes_ may already be past a limit smaller than the resync marker.)
    const std::size_t allowed =
        block_bytes_ >= max_header_block_ ? 0 : max_header_block_ - block_bytes_;
    bytes.remove_prefix(allowed);
    start_resync();
    char detail[96];
    std::snprintf(detail, sizeof detail, "header block exceeds %zu bytes", max_header_block_);
    events.on_framing_error(detail);
    return bytes;
  }

  block_bytes_ += segment;
  if (newline == std::string_view::npos) {
    // Cannot fail in practice (bounded by max_header_block), but never let bad_alloc escape.
    if (!try_append(line_, bytes)) {
      start_resync();
      events.on_framing_error("out of memory while reading a header block");
    }
    return {};
  }

  std::string_view line = bytes.substr(0, newline);
  bytes.remove_prefix(newline + 1);
  if (line_.empty()) {
    header_line(line, events);
    return bytes;
  }
  if (!try_append(line_, line)) {
    start_resync();
    events.on_framing_error("out of memory while reading a header block");
    return bytes;
  }
  // header_line() may start a new block and so clear line_; work on a moved-out copy.
  const std::string whole = std::move(line_);
  line_.clear();
  header_line(whole, events);
  return bytes;
}

void ContentLengthFramer::header_line(std::string_view line, FrameEvents& events) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.empty()) {
    if (block_lines_ == 0) {
      block_bytes_ = 0;  // a stray empty line between messages
      return;
    }
    end_of_block(events);
    return;
  }
  ++block_lines_;
  const std::size_t colon = line.find(':');
  if (colon == std::string_view::npos) return;  // not a header; ignored like unknown headers
  if (!equals_ignore_case(line.substr(0, colon), kLengthHeader)) return;

  std::size_t value = 0;
  if (!parse_length(trim_ows(line.substr(colon + 1)), value)) {
    if (length_ != Length::conflicting) length_ = Length::not_a_number;
    return;
  }
  switch (length_) {
    case Length::absent:
      length_ = Length::value;
      length_value_ = value;
      break;
    case Length::value:
      // Repeating the same length is harmless; two different ones leave no safe choice.
      if (value != length_value_) length_ = Length::conflicting;
      break;
    case Length::not_a_number:
    case Length::conflicting:
      break;
  }
}

void ContentLengthFramer::end_of_block(FrameEvents& events) {
  const Length length = length_;
  const std::size_t value = length_value_;
  switch (length) {
    case Length::absent:
      start_resync();
      events.on_framing_error("header block has no Content-Length");
      return;
    case Length::not_a_number:
      start_resync();
      events.on_framing_error("Content-Length is not a decimal number");
      return;
    case Length::conflicting:
      start_resync();
      events.on_framing_error("conflicting Content-Length headers");
      return;
    case Length::value:
      break;
  }

  if (value > max_message_) {
    start_block();
    state_ = State::discard;
    expected_ = value;
    char detail[128];
    if (value == std::numeric_limits<std::size_t>::max()) {
      std::snprintf(detail, sizeof detail,
                    "Content-Length is too large (maximum message size %zu bytes)", max_message_);
    } else {
      std::snprintf(detail, sizeof detail,
                    "Content-Length %zu exceeds the maximum message size of %zu bytes", value,
                    max_message_);
    }
    events.on_framing_error(detail);
    return;
  }

  start_block();
  if (value == 0) {
    events.on_message(std::string_view{});
    return;
  }
  state_ = State::body;
  expected_ = value;
}

std::string_view ContentLengthFramer::feed_body(std::string_view bytes, FrameEvents& events) {
  if (body_.empty() && bytes.size() >= expected_) {
    // The whole body is in this chunk: hand out a view into the caller's bytes, no copy.
    const std::string_view body = bytes.substr(0, expected_);
    bytes.remove_prefix(expected_);
    start_block();
    events.on_message(body);
    return bytes;
  }

  const std::size_t take = std::min(expected_ - body_.size(), bytes.size());
  if (!try_append(body_, bytes.substr(0, take))) {
    // Drop the rest of this body, as for an oversized one.
    expected_ -= body_.size();
    release(body_);
    state_ = State::discard;
    events.on_framing_error("out of memory while reading a message body");
    return bytes;  // the discard state consumes what we could not append
  }
  bytes.remove_prefix(take);
  if (body_.size() == expected_) {
    start_block();
    ReleaseOnExit release_body(body_);
    events.on_message(body_);
  }
  return bytes;
}

std::string_view ContentLengthFramer::feed_resync(std::string_view bytes) {
  std::size_t i = 0;
  while (i < bytes.size()) {
    const char c = to_lower_ascii(bytes[i++]);
    if (c == kResyncMarker[matched_]) {
      if (++matched_ == kResyncMarker.size()) {
        // Found: the marker is the first line of a new header block. Only its length matters
        // for the block limit; its case does not, so store the canonical spelling.
        start_block();
        line_.assign("Content-Length:");  // 15 bytes: fits the small-string buffer, no alloc
        block_bytes_ = kResyncMarker.size();
        matched_ = 0;
        return bytes.substr(i);
      }
    } else {
      matched_ = (c == kResyncMarker[0]) ? 1 : 0;
    }
  }
  return {};
}

void ContentLengthFramer::finish(FrameEvents& events) {
  const State state = state_;
  const std::size_t have = body_.size();
  const std::size_t expected = expected_;
  // Only a lone '\r' (half of a stray empty line) is not a truncated header.
  const bool partial_header = block_lines_ > 0 || (!line_.empty() && line_ != "\r");

  start_block();
  release(body_);
  expected_ = 0;
  matched_ = 0;

  if (state == State::header && partial_header) {
    events.on_framing_error("end of input inside a header block");
  } else if (state == State::body) {
    char detail[128];
    std::snprintf(detail, sizeof detail, "end of input after %zu of %zu message bytes", have,
                  expected);
    events.on_framing_error(detail);
  }
}

std::size_t write_content_length_prefix(std::size_t body_size, char* out) noexcept {
  constexpr std::string_view head = "Content-Length: ";
  constexpr std::string_view tail = "\r\n\r\n";
  static_assert(head.size() + 20 + tail.size() == max_content_length_prefix);
  std::memcpy(out, head.data(), head.size());
  char* end = std::to_chars(out + head.size(), out + max_content_length_prefix, body_size).ptr;
  std::memcpy(end, tail.data(), tail.size());
  return static_cast<std::size_t>(end - out) + tail.size();
}

std::string content_length_prefix(std::size_t body_size) {
  char buffer[max_content_length_prefix];
  return std::string(buffer, write_content_length_prefix(body_size, buffer));
}

}  // namespace car::stdio
