#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "car/export.hpp"

// Which live connection each agent id is bound to (PROTOCOL.md §3: one live connection per agent id).
// Thread-safe.
namespace car::session {

class CAR_API AgentBindings {
 public:
  // Binds `agent_id` to `client_id`. Fails (returns false) when another client holds it and
  // `holder_is_live(holder)` says that client is still connected (a holder whose connection is
  // being torn down does not block the new one). Binding again to the same client succeeds.
  bool bind(std::string_view agent_id, std::string_view client_id,
            const std::function<bool(std::string_view holder)>& holder_is_live);
  // Releases the binding if `client_id` holds it.
  void release(std::string_view agent_id, std::string_view client_id);
  std::optional<std::string> holder(std::string_view agent_id) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::string, std::less<>> holders_;
};

}  // namespace car::session
