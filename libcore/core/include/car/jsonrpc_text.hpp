#pragma once

#include <string>
#include <string_view>

#include "car/error.hpp"
#include "car/export.hpp"

// The JSON-RPC 2.0 envelopes carcore writes (PROTOCOL.md §2). Each one wraps a JSON text that is
// already serialized — a handler's result, a notification's params — so it is spliced in as it is:
// one copy of the payload and no DOM, on the path every reply and event takes. Every other JSON
// carcore composes is written with json::Builder (car/json.hpp). Thread-safe (pure functions).
namespace car::jsonrpc {

// {"jsonrpc":"2.0","id":ID,"result":RESULT}; `id_json` and `result_json` are JSON texts.
CAR_API std::string result(std::string_view id_json, std::string_view result_json);

// {"jsonrpc":"2.0","id":ID,"error":{"code":C,"message":M[,"data":D]}}.
CAR_API std::string error(std::string_view id_json, const Error& error);

// {"jsonrpc":"2.0","method":METHOD,"params":PARAMS}; `params_json` is a JSON object text.
CAR_API std::string notification(std::string_view method, std::string_view params_json);

// The text before PARAMS in notification(method, PARAMS): lets a reader find the params inside a
// stored notification without parsing it (the params end one byte before the text does).
CAR_API std::string notification_prefix(std::string_view method);

// {"jsonrpc":"2.0","id":"ID","method":METHOD,"params":PARAMS}: a server→client request whose id
// is the string `id`.
CAR_API std::string request(std::string_view id, std::string_view method,
                            std::string_view params_json);

}  // namespace car::jsonrpc
