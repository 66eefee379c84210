#include "envelope.hpp"

namespace car::detail {
namespace {

const json::Value* find(const json::Value& object, const char* name) {
  auto it = object.FindMember(name);
  return it == object.MemberEnd() ? nullptr : &it->value;
}

bool valid_id(const json::Value& id) { return id.IsString() || id.IsInt64() || id.IsNull(); }

}  // namespace

Envelope classify(const json::Value& message) {
  Envelope env;
  if (!message.IsObject()) return env;
  const json::Value* id = find(message, "id");
  if (id != nullptr) {
    if (!valid_id(*id)) return env;  // wrong id type: invalid, answered with id null
    env.id = id;
    env.id_json = json::stringify(*id);
  }
  const json::Value* method = find(message, "method");
  const json::Value* version = find(message, "jsonrpc");
  bool version_ok = version != nullptr && version->IsString() && json::view(*version) == "2.0";
  if (method == nullptr) {
    // A reply to one of our server→client calls: id plus result xor error, no method.
    env.result = find(message, "result");
    env.error = find(message, "error");
    if (id != nullptr && version_ok && ((env.result != nullptr) != (env.error != nullptr))) {
      env.kind = MessageKind::response;
    }
    return env;
  }
  if (!version_ok || !method->IsString()) return env;
  env.method = json::view(*method);
  const json::Value* params = find(message, "params");
  if (params != nullptr) {
    if (!params->IsObject() && !params->IsArray()) return env;
    env.params = params;
  }
  env.kind = id == nullptr ? MessageKind::notification : MessageKind::request;
  return env;
}

}  // namespace car::detail
