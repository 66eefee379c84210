#include "car/method_registry.hpp"

#include <algorithm>

#include "car/connection.hpp"

namespace car {

Session& Request::session() const { return connection_.session(); }
std::shared_ptr<Connection> Request::connection_ptr() const {
  return connection_.shared_from_this();
}

void MethodRegistry::add(std::string name, std::vector<ParamSpec> params, Handler handler,
                         MethodOptions options) {
  Method method{name, std::move(params), std::move(handler), options};
  methods_.insert_or_assign(std::move(name), std::move(method));
}

const Method* MethodRegistry::find(std::string_view name) const {
  auto it = methods_.find(name);
  return it == methods_.end() ? nullptr : &it->second;
}

std::vector<std::string> MethodRegistry::names() const {
  std::vector<std::string> out;
  out.reserve(methods_.size());
  for (const auto& [name, method] : methods_) out.push_back(name);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace car
