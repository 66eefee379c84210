#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "car/export.hpp"
#include "car/json.hpp"
#include "car/params.hpp"
#include "car/reply.hpp"

// The table of methods a server answers. Fill it before the first connection opens; afterwards
// lookups are lock-free reads and registration is not allowed.
namespace car {

class Connection;
class Session;

// What a handler sees of the request. Valid only during the handler call: copy what you need
// before completing the Reply later.
class CAR_API Request {
 public:
  Request(Connection& connection, std::string_view method, const json::Value& params)
      : connection_(connection), method_(method), params_(params) {}

  Connection& connection() const { return connection_; }
  Session& session() const;
  std::shared_ptr<Connection> connection_ptr() const;
  std::string_view method() const { return method_; }
  // An object (an empty one when the request had no params), already validated against the
  // method's ParamSpecs; an array only for a method with MethodOptions::accepts_array_params,
  // which then checks it itself.
  const json::Value& params() const { return params_; }

 private:
  Connection& connection_;
  std::string_view method_;
  const json::Value& params_;
};

using Handler = std::function<void(const Request&, Reply)>;

struct CAR_API MethodOptions {
  // False for the methods callable before session.auth (the session service's session.auth).
  bool requires_auth = true;
  // With ServerConfig::require_handshake, answer -32005 until server.handshake (host.subscribe),
  // before the approval gate and params validation.
  bool requires_handshake = false;
  // Array params reach the handler unchecked instead of being answered -32602 "params must be
  // an object" (tools.register's upstream form, PROTOCOL.md §2 and §6). Object params are
  // validated against the ParamSpecs as usual.
  bool accepts_array_params = false;
};

struct CAR_API Method {
  std::string name;
  std::vector<ParamSpec> params;
  Handler handler;
  MethodOptions options;
};

class CAR_API MethodRegistry {
 public:
  // Adds (or replaces) a method. Not thread-safe; only before serving.
  void add(std::string name, std::vector<ParamSpec> params, Handler handler,
           MethodOptions options = {});
  const Method* find(std::string_view name) const;
  std::vector<std::string> names() const;

 private:
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, Method, Hash, std::equal_to<>> methods_;
};

}  // namespace car
