#pragma once

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "car/error.hpp"
#include "car/export.hpp"
#include "car/json.hpp"

// Declarative checks of a method's params object. The dispatcher validates before the handler
// runs, so handlers can read declared fields without re-checking their types. Unknown members are
// ignored (PROTOCOL.md §2).
namespace car {

enum class ParamType : std::uint8_t {
  string,
  non_empty_string,
  integer,  // int64 range
  non_negative_integer,
  boolean,
  object,
  array,
  any,
};

struct CAR_API ParamSpec {
  std::string name;
  ParamType type = ParamType::any;
  bool required = false;
};

inline ParamSpec required(std::string name, ParamType type) { return {std::move(name), type, true}; }
inline ParamSpec optional(std::string name, ParamType type) { return {std::move(name), type, false}; }

// Returns the -32602 error naming the first offending field, or nothing when `params` conforms.
// A member that is present with JSON null counts as absent for optional fields.
CAR_API std::optional<Error> validate_params(const json::Value& params, const std::vector<ParamSpec>& specs);

// Typed reads of an already-validated params object.
namespace param {
CAR_API std::optional<std::string_view> string(const json::Value& params, std::string_view name);
CAR_API std::optional<long long> integer(const json::Value& params, std::string_view name);
CAR_API std::optional<bool> boolean(const json::Value& params, std::string_view name);
CAR_API const json::Value* member(const json::Value& params, std::string_view name);
}  // namespace param

}  // namespace car
