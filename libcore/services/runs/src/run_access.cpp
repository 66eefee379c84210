#include "run_access.hpp"

#include "car/connection.hpp"
#include "car/server.hpp"
#include "car/session/session_service.hpp"

namespace car::runs::detail {

bool may_read(const Server& server, const Connection& connection, std::string_view agent_id,
              std::string_view starter_client_id) {
  if (!server.config().require_auth) return true;
  const Session& session = connection.session();
  if (session::is_host(session)) return true;
  auto bound = session::agent_id(session);
  if (bound && *bound == agent_id) return true;
  return !starter_client_id.empty() && connection.client_id() == starter_client_id;
}

bool is_writer(const Connection& connection, std::string_view starter_client_id,
               std::string_view agent_id) {
  if (connection.client_id() == starter_client_id) return true;
  auto bound = session::agent_id(connection.session());
  return bound && *bound == agent_id;
}

bool may_read_stats(const Server& server, const Session& session) {
  return !server.config().require_auth || session::is_host(session);
}

}  // namespace car::runs::detail
