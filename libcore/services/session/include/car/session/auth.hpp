#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "car/export.hpp"

// The credentials session.auth accepts (PROTOCOL.md §3), given once to install_session_service.
// Whether authentication is required at all is the engine's ServerConfig::require_auth.
namespace car::session {

struct CAR_API AuthConfig {
  // The daemon token; `{token}` must match it (or the agent's own token, below).
  std::string token;
  // When set, `{host_token}` matching it grants the host-management role.
  std::optional<std::string> host_token;
  // Per-agent tokens: `{token, agent_id: ID}` is checked against agent_tokens[ID] when present.
  std::map<std::string, std::string, std::less<>> agent_tokens;
  // When set (car-daemon --agent-tokens-only), only an agent's own token binds its agent_id: the
  // daemon token and the host token still authenticate, but `{token, agent_id}` for an agent
  // without an entry above, or `{host_token, agent_id}`, is refused with -32603
  // `auth failed: agent '<id>' needs its own agent token`. No effect while auth is disabled.
  bool agent_tokens_only = false;
};

// Compares secrets in time that depends only on their lengths (the length check is not secret).
CAR_API bool constant_time_equal(std::string_view a, std::string_view b);

}  // namespace car::session
