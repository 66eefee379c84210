#include "car/stdio/ndjson_framer.hpp"

#include <cstdio>
#include <new>

#include "framer_buffer.hpp"

namespace car::stdio {
using detail::release;
using detail::ReleaseOnExit;
using detail::try_append;

namespace {


bool is_blank(std::string_view text) noexcept {
  for (char c : text) {
    if (c != ' ' && c != '\t' && c != '\r') return false;
  }
  return true;
}


}  // namespace

NdjsonFramer::NdjsonFramer(std::size_t max_message) : max_message_(max_message) {}

bool NdjsonFramer::partial_too_long(std::size_t size, char last) const noexcept {
  // A partial line of max_message + 1 bytes is still acceptable if its last byte is '\r': the
  // next byte may be the '\n' that makes that '\r' the ignored trailing one. Deciding this early
  // (rather than at the '\n') is what keeps the buffer bounded.
  // (Written as size - 1 so that max_message_ == SIZE_MAX, "no limit", cannot overflow.)
  if (size <= max_message_) return false;
  return size - 1 > max_message_ || last != '\r';
}

void NdjsonFramer::report_too_long(FrameEvents& events) const {
  char detail[96];
  std::snprintf(detail, sizeof detail, "line exceeds the maximum message size of %zu bytes",
                max_message_);
  events.on_framing_error(detail);
}

void NdjsonFramer::deliver_line(std::string_view raw, FrameEvents& events) {
  if (!raw.empty() && raw.back() == '\r') raw.remove_suffix(1);
  if (raw.size() > max_message_) {
    report_too_long(events);  // the whole line is here, so there is nothing left to drop
    return;
  }
  if (is_blank(raw)) return;
  events.on_message(raw);
}

void NdjsonFramer::feed(std::string_view bytes, FrameEvents& events) {
  while (!bytes.empty()) {
    const std::size_t newline = bytes.find('\n');

    if (discarding_) {
      if (newline == std::string_view::npos) return;  // the whole chunk belongs to the bad line
      discarding_ = false;
      bytes.remove_prefix(newline + 1);
      continue;
    }

    if (newline == std::string_view::npos) {
      // An incomplete line: keep it, unless it is already too long to ever be accepted.
      const std::size_t size = line_.size() + bytes.size();
      if (partial_too_long(size, bytes.back()) || !try_append(line_, bytes)) {
        // Drop what is buffered now and the rest of the line as it arrives.
        release(line_);
        discarding_ = true;
        report_too_long(events);
      }
      return;
    }

    const std::string_view rest = bytes.substr(0, newline);
    bytes.remove_prefix(newline + 1);
    if (line_.empty()) {
      deliver_line(rest, events);  // the common case: no copy
      continue;
    }
    // The line started in an earlier chunk. Check the size before copying so that a huge line
    // ending in this chunk is never copied.
    ReleaseOnExit clear(line_);
    if (line_.size() + rest.size() - 1 > max_message_ || !try_append(line_, rest)) {
      report_too_long(events);  // its '\n' is already consumed, so nothing is left to drop
      continue;
    }
    deliver_line(line_, events);
  }
}

void NdjsonFramer::finish(FrameEvents& events) {
  const bool discarding = discarding_;
  discarding_ = false;
  if (discarding || line_.empty()) {
    line_.clear();
    return;
  }
  ReleaseOnExit clear(line_);
  deliver_line(line_, events);
}

}  // namespace car::stdio
