#include "car/session.hpp"

namespace car {

std::optional<std::string> Session::agent_id() const {
  std::lock_guard lock(mutex_);
  return agent_id_;
}

SessionAuth Session::auth() const {
  std::lock_guard lock(mutex_);
  return {authenticated(), is_host(), agent_id_, memory_namespace_};
}

void Session::set_auth(SessionAuth auth) {
  std::lock_guard lock(mutex_);
  agent_id_ = std::move(auth.agent_id);
  memory_namespace_ = std::move(auth.memory_namespace);
  host_.store(auth.host, std::memory_order_release);
  authenticated_.store(auth.authenticated, std::memory_order_release);
}

}  // namespace car
