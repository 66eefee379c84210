#pragma once

// Private: the per-request debug line (PROTOCOL.md has no say in it; docs/OPERATIONS.md "Logs"
// describes it). The dispatcher captures a RequestLog when a request arrives — only if debug
// records would be written, so above debug a request costs one relaxed atomic load — and the
// reply's first completion writes one record with the method, id, duration, error code and
// connection. Never a token and never params: methods such as session.auth carry tokens there.

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace car::detail {

struct RequestLog {
  std::string method;  // cut to max_method_bytes
  std::chrono::steady_clock::time_point started;
};

// Longer method names are cut (at a UTF-8 character boundary) so a peer cannot make one log line
// as large as its message limit.
inline constexpr std::size_t max_method_bytes = 256;
// An id whose JSON text is longer than this is logged as a placeholder string naming its size.
inline constexpr std::size_t max_id_bytes = 256;

// A RequestLog when debug records are enabled now, nullopt (nothing allocated) otherwise.
std::optional<RequestLog> start_request_log(std::string_view method);

// Writes the line. `id_json` is empty for a notification (the message then says so);
// `error_code` is the error answered, if any. Re-checks the level: it may have changed since.
void finish_request_log(const RequestLog& log, std::string_view connection,
                        std::string_view id_json, std::optional<int> error_code);

}  // namespace car::detail
