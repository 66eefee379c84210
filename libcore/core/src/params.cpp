#include "car/params.hpp"

#include <fmt/format.h>

namespace car {

Error Error::invalid_params(std::string_view field, std::string_view problem) {
  return {ErrorCode::invalid_params, fmt::format("invalid params: {} {}", field, problem)};
}

namespace {

std::string_view expectation(ParamType type) {
  switch (type) {
    case ParamType::string: return "must be a string";
    case ParamType::non_empty_string: return "must be a non-empty string";
    case ParamType::integer: return "must be an integer";
    case ParamType::non_negative_integer: return "must be a non-negative integer";
    case ParamType::boolean: return "must be a boolean";
    case ParamType::object: return "must be an object";
    case ParamType::array: return "must be an array";
    case ParamType::any: return "is invalid";
  }
  return "is invalid";
}

bool conforms(const json::Value& v, ParamType type) {
  switch (type) {
    case ParamType::string: return v.IsString();
    case ParamType::non_empty_string: return v.IsString() && v.GetStringLength() > 0;
    case ParamType::integer: return v.IsInt64();
    case ParamType::non_negative_integer: return v.IsInt64() && v.GetInt64() >= 0;
    case ParamType::boolean: return v.IsBool();
    case ParamType::object: return v.IsObject();
    case ParamType::array: return v.IsArray();
    case ParamType::any: return true;
  }
  return false;
}

}  // namespace

std::optional<Error> validate_params(const json::Value& params,
                                     const std::vector<ParamSpec>& specs) {
  for (const auto& spec : specs) {
    const json::Value* v = param::member(params, spec.name);
    // A null member reads as an absent one (upstream's clients send null for "not given"), so a
    // required one that is null is "required", not "must be a <type>".
    if (v == nullptr || v->IsNull()) {
      if (spec.required) return Error::invalid_params(spec.name, "is required");
      continue;
    }
    if (!conforms(*v, spec.type)) return Error::invalid_params(spec.name, expectation(spec.type));
  }
  return std::nullopt;
}

namespace param {

const json::Value* member(const json::Value& params, std::string_view name) {
  if (!params.IsObject()) return nullptr;
  auto it = params.FindMember(
      json::Value(rapidjson::StringRef(name.data(), static_cast<rapidjson::SizeType>(name.size()))));
  return it == params.MemberEnd() ? nullptr : &it->value;
}

std::optional<std::string_view> string(const json::Value& params, std::string_view name) {
  const json::Value* v = member(params, name);
  if (v == nullptr || !v->IsString()) return std::nullopt;
  return json::view(*v);
}

std::optional<long long> integer(const json::Value& params, std::string_view name) {
  const json::Value* v = member(params, name);
  if (v == nullptr || !v->IsInt64()) return std::nullopt;
  return v->GetInt64();
}

std::optional<bool> boolean(const json::Value& params, std::string_view name) {
  const json::Value* v = member(params, name);
  if (v == nullptr || !v->IsBool()) return std::nullopt;
  return v->GetBool();
}

}  // namespace param
}  // namespace car
