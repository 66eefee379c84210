#include "car/session/agent_bindings.hpp"

namespace car::session {

bool AgentBindings::bind(std::string_view agent_id, std::string_view client_id,
                         const std::function<bool(std::string_view)>& holder_is_live) {
  std::lock_guard lock(mutex_);
  auto it = holders_.find(agent_id);
  if (it != holders_.end()) {
    if (it->second == client_id) return true;
    if (holder_is_live(it->second)) return false;
    it->second = std::string(client_id);
    return true;
  }
  holders_.emplace(std::string(agent_id), std::string(client_id));
  return true;
}

void AgentBindings::release(std::string_view agent_id, std::string_view client_id) {
  std::lock_guard lock(mutex_);
  auto it = holders_.find(agent_id);
  if (it != holders_.end() && it->second == client_id) holders_.erase(it);
}

std::optional<std::string> AgentBindings::holder(std::string_view agent_id) const {
  std::lock_guard lock(mutex_);
  auto it = holders_.find(agent_id);
  if (it == holders_.end()) return std::nullopt;
  return it->second;
}

}  // namespace car::session
