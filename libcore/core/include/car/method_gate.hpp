#pragma once

#include <functional>
#include <optional>
#include <string_view>

#include "car/error.hpp"
#include "car/export.hpp"
#include "car/json.hpp"

// A check that runs before a method's handler, without blocking a thread, and may refuse it:
// the high-risk approval gate (PROTOCOL.md §5.1) implements this. The dispatcher consults it for every
// authenticated request, before the method is even looked up (an approved unknown method still
// answers -32601).
namespace car {

class Connection;

class CAR_API MethodGate {
 public:
  using Decision = std::function<void(std::optional<Error> refusal)>;
  virtual ~MethodGate() = default;

  // True when `method` must pass admit() first. Any thread; must be cheap.
  virtual bool gates(std::string_view method) const = 0;

  // Decides, now or later and from any thread, by calling `decide` exactly once: no error to run
  // the handler, or the error to answer with. `params` is valid only during this call.
  virtual void admit(Connection& connection, std::string_view method, const json::Value& params,
                     Decision decide) = 0;
};

}  // namespace car
