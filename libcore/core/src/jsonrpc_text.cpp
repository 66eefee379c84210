#include "car/jsonrpc_text.hpp"

#include "car/json.hpp"

namespace car::jsonrpc {

std::string result(std::string_view id_json, std::string_view result_json) {
  // Reserved to the exact size: one byte short (as this once was) makes the closing brace
  // reallocate and copy the whole reply, on every reply.
  constexpr std::string_view head = R"({"jsonrpc":"2.0","id":)";
  constexpr std::string_view middle = R"(,"result":)";
  std::string out;
  out.reserve(head.size() + id_json.size() + middle.size() + result_json.size() + 1);
  out.append(head);
  out.append(id_json);
  out.append(middle);
  out.append(result_json);
  out.push_back('}');
  return out;
}

std::string error(std::string_view id_json, const Error& error) {
  std::string out;
  out.reserve(64 + id_json.size() + error.message.size() + error.data_json.size());
  out.append(R"({"jsonrpc":"2.0","id":)");
  out.append(id_json);
  out.append(R"(,"error":{"code":)");
  out.append(std::to_string(error.code));
  out.append(R"(,"message":)");
  json::append_quoted(out, error.message);
  if (!error.data_json.empty()) {
    out.append(R"(,"data":)");
    out.append(error.data_json);
  }
  out.append("}}");
  return out;
}

std::string notification_prefix(std::string_view method) {
  std::string out;
  out.reserve(40 + method.size());
  out.append(R"({"jsonrpc":"2.0","method":)");
  json::append_quoted(out, method);
  out.append(R"(,"params":)");
  return out;
}

std::string notification(std::string_view method, std::string_view params_json) {
  std::string out = notification_prefix(method);
  out.reserve(out.size() + params_json.size() + 1);
  out.append(params_json);
  out.push_back('}');
  return out;
}

std::string request(std::string_view id, std::string_view method, std::string_view params_json) {
  std::string out;
  out.reserve(48 + id.size() + method.size() + params_json.size());
  out.append(R"({"jsonrpc":"2.0","id":)");
  json::append_quoted(out, id);
  out.append(R"(,"method":)");
  json::append_quoted(out, method);
  out.append(R"(,"params":)");
  out.append(params_json);
  out.push_back('}');
  return out;
}

}  // namespace car::jsonrpc
