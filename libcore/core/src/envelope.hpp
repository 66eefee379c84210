#pragma once

// Private: classification of one inbound JSON-RPC message (PROTOCOL.md §2), independent of dispatch so
// it can be tested and fuzzed on its own.

#include <string>
#include <string_view>

#include "car/json.hpp"

namespace car::detail {

enum class MessageKind { request, notification, response, invalid };

struct Envelope {
  MessageKind kind = MessageKind::invalid;
  // The id as JSON text to echo ("null" when absent, unreadable or invalid).
  std::string id_json = "null";
  std::string_view method;
  const json::Value* params = nullptr;  // object or array when present
  const json::Value* result = nullptr;  // responses
  const json::Value* error = nullptr;   // responses
  const json::Value* id = nullptr;      // valid id value when present
};

Envelope classify(const json::Value& message);

}  // namespace car::detail
