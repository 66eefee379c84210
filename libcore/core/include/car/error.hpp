#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include "car/export.hpp"

// JSON-RPC error codes used by the protocol (PROTOCOL.md §2) and the Error value that carries one across
// module boundaries. Errors are values: nothing in carcore throws across a public function.
namespace car {

enum class ErrorCode : int {
  parse_error = -32700,
  invalid_request = -32600,
  method_not_found = -32601,
  invalid_params = -32602,
  internal_error = -32603,
  server_busy = -32000,
  auth_required = -32001,
  approval_denied = -32003,  // also "approval timed out"
  wait_timed_out = -32004,   // a server-side wait ran out (tool call)
  handshake_required = -32005,
  unsupported_protocol = -32006,
};

// Severity decides what happens to the connection: a request error is answered and the connection
// lives; a connection error is answered (when possible) and the connection is then closed.
enum class Severity : std::uint8_t { request, connection };

struct CAR_API Error {
  int code = static_cast<int>(ErrorCode::internal_error);
  std::string message;
  // Raw JSON text for the optional `data` member; empty means absent.
  std::string data_json;

  Error() = default;
  Error(ErrorCode c, std::string msg) : code(static_cast<int>(c)), message(std::move(msg)) {}
  Error(int c, std::string msg) : code(c), message(std::move(msg)) {}

  Severity severity() const {
    return code == static_cast<int>(ErrorCode::auth_required) ? Severity::connection
                                                              : Severity::request;
  }

  // The -32602 error whose message names the offending field, e.g.
  // invalid_params("limit", "must be an integer") => "invalid params: limit must be an integer".
  static Error invalid_params(std::string_view field, std::string_view problem);
  static Error internal(std::string msg) { return {ErrorCode::internal_error, std::move(msg)}; }
};

// Canonical messages of the codes whose text the spec fixes.
namespace messages {
inline constexpr std::string_view parse_error = "parse error";
inline constexpr std::string_view invalid_request = "invalid request";
inline constexpr std::string_view auth_required = "auth required: call session.auth first";
inline constexpr std::string_view server_busy = "server busy: too many requests in flight";
// -32005 and -32006 name the method or the version they are about; their texts are built where
// they are raised (connection.cpp, session_service.cpp) from the formats in PROTOCOL.md §2.
}  // namespace messages

}  // namespace car
