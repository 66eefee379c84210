#include "request_log.hpp"

#include <fmt/format.h>

#include "car/log.hpp"

namespace car::detail {
namespace {

// The longest prefix of `text` of at most `limit` bytes that does not end inside a UTF-8
// sequence (the method name was validated as UTF-8 by the parser).
std::string_view cut_utf8(std::string_view text, std::size_t limit) {
  if (text.size() <= limit) return text;
  std::size_t end = limit;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return text.substr(0, end);
}

}  // namespace

std::optional<RequestLog> start_request_log(std::string_view method) {
  if (!log_enabled(LogLevel::debug)) return std::nullopt;
  return RequestLog{std::string(cut_utf8(method, max_method_bytes)),
                    std::chrono::steady_clock::now()};
}

void finish_request_log(const RequestLog& log, std::string_view connection,
                        std::string_view id_json, std::optional<int> error_code) {
  if (!log_enabled(LogLevel::debug)) return;
  auto elapsed = std::chrono::steady_clock::now() - log.started;
  std::string long_id;
  if (id_json.size() > max_id_bytes) {
    long_id = fmt::format("\"(an id of {} bytes)\"", id_json.size());
    id_json = long_id;
  }
  LogRecord record;
  record.level = LogLevel::debug;
  record.message = id_json.empty() ? "notification" : "request";
  record.connection = connection;
  record.method = log.method;
  record.id_json = id_json;
  record.duration_us = std::chrono::duration_cast<std::chrono::microseconds>(elapsed).count();
  record.error_code = error_code;
  log_record(record);
}

}  // namespace car::detail
