#include "log_format.hpp"

#include <fmt/format.h>

#include "car/host/time_format.hpp"
#include "car/json.hpp"
#include "car/log.hpp"
#include "car/ws/utf8_validator.hpp"

namespace car::daemon {
namespace {

constexpr std::string_view replacement_character = "\xEF\xBF\xBD";

// The length a UTF-8 sequence starting with `lead` claims (1 for anything that cannot lead one,
// which the validator then refuses).
std::size_t claimed_length(unsigned char lead) {
  if (lead >= 0xF0) return 4;
  if (lead >= 0xE0) return 3;
  if (lead >= 0xC0) return 2;
  return 1;
}

// Text for a text-format line: valid UTF-8, and no control character that would end the line
// early or reach an operator's terminal (an ESC sequence in a peer-chosen method name).
void append_text(std::string& out, std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  for (char c : repair_utf8(text)) {
    auto u = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7F) {
      out += "\\u00";
      out.push_back(hex[u >> 4]);
      out.push_back(hex[u & 0xF]);
    } else {
      out.push_back(c);
    }
  }
}

}  // namespace

std::string repair_utf8(std::string_view text) {
  if (ws::is_valid_utf8(text)) return std::string(text);
  std::string out;
  out.reserve(text.size() + 8);
  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t length = claimed_length(static_cast<unsigned char>(text[i]));
    if (i + length <= text.size() && ws::is_valid_utf8(text.substr(i, length))) {
      out.append(text.substr(i, length));
      i += length;
    } else {
      out.append(replacement_character);
      i += 1;  // resynchronise on the next byte
    }
  }
  return out;
}

std::string format_text_log_line(LogTime time, const LogRecord& record) {
  std::string out = host::format_rfc3339_ms(time);
  fmt::format_to(std::back_inserter(out), " [car {}] ", to_string(record.level));
  // The library's own rendering of the fields (` key=value`), made safe for one line.
  append_text(out, record.has_fields() ? describe_log_record(record) : std::string(record.message));
  out.push_back('\n');
  return out;
}

std::string format_json_log_line(LogTime time, const LogRecord& record) {
  json::Builder b;
  b.begin_object();
  b.key("time").str(host::format_rfc3339_ms(time));
  b.key("level").str(to_string(record.level));
  b.key("message").str(repair_utf8(record.message));
  if (!record.connection.empty()) b.key("connection").str(repair_utf8(record.connection));
  if (!record.method.empty()) b.key("method").str(repair_utf8(record.method));
  // The id is JSON text already (the request's own id, re-serialized by the engine): spliced in,
  // so a numeric id stays a number and a string id a string.
  if (!record.id_json.empty()) b.key("id").raw(record.id_json);
  if (record.duration_us) b.key("duration_us").integer(*record.duration_us);
  if (record.error_code) b.key("error_code").integer(*record.error_code);
  b.end_object();
  std::string out = b.take();
  out.push_back('\n');
  return out;
}

std::string format_log_line(LogLineFormat format, LogTime time, const LogRecord& record) {
  return format == LogLineFormat::json ? format_json_log_line(time, record)
                                       : format_text_log_line(time, record);
}

}  // namespace car::daemon
