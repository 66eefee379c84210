#pragma once

#include <memory>
#include <optional>
#include <string>

#include "car/export.hpp"
#include "car/session/agent_bindings.hpp"
#include "car/session/auth.hpp"

// The session service (PROTOCOL.md §3): session.auth and server.handshake, what a session was
// granted (host role, bound agent id, memory namespace) and the one-connection-per-agent-id rule.
// Every other service reads a session's grants through the accessors below.
namespace car {
class Server;
class Session;
}  // namespace car

namespace car::session {

// Teardown step this service adds (see car::teardown_order in car/server.hpp).
namespace teardown_order {
inline constexpr int release_agent_binding = 60;  // after tool teardown, before run grace
}  // namespace teardown_order

// Wrong tokens (or host tokens) one connection may present: the one that reaches this count is
// answered -32603 as usual, then the connection is closed with 1008 (PROTOCOL.md §3).
inline constexpr unsigned max_failed_auth_attempts = 5;

// What session.auth granted one session. Empty (all false / nullopt) until it succeeds.
struct CAR_API Grants {
  bool host = false;                           // host-management role (host_token)
  std::optional<std::string> agent_id;         // the agent this session is bound to
  std::optional<std::string> memory_namespace;
};

class CAR_API SessionService {
 public:
  explicit SessionService(AuthConfig auth) : auth_(std::move(auth)) {}
  SessionService(const SessionService&) = delete;
  SessionService& operator=(const SessionService&) = delete;

  const AuthConfig& auth() const { return auth_; }
  AgentBindings& agent_bindings() { return bindings_; }

 private:
  const AuthConfig auth_;
  AgentBindings bindings_;
};

// Registers session.auth (callable before authentication) and server.handshake (behind the auth
// gate, PROTOCOL.md §3) on `server` and adds the teardown step that releases a closing session's
// agent binding. Call once, before serving; the service lives as long as the
// returned pointer or the server's method table, whichever is longer.
CAR_API std::shared_ptr<SessionService> install_session_service(Server& server, AuthConfig auth);

// ---- a session's grants (any thread) ----
CAR_API Grants grants(const Session& session);
CAR_API bool is_host(const Session& session);
CAR_API std::optional<std::string> agent_id(const Session& session);

}  // namespace car::session
