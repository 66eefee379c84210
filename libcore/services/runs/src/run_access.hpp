#pragma once

#include <string_view>

// Private to the runs layer: who may read and who may write a run (PROTOCOL.md §7.3, §7.5). Pure
// checks of a connection's session; any thread.
namespace car {
class Connection;
class Session;
class Server;
}  // namespace car

namespace car::runs::detail {

// A reader of a run's trace: auth disabled, the host role, a session bound to the run's agent,
// or the connection that started it (`starter_client_id`; empty when there is none to match, as
// for runs.list, which is about an agent rather than a run).
bool may_read(const Server& server, const Connection& connection, std::string_view agent_id,
              std::string_view starter_client_id);

// The run's writer: the connection that started it, or one bound to its agent.
bool is_writer(const Connection& connection, std::string_view starter_client_id,
               std::string_view agent_id);

// runs.stats [ext]: the host role, or auth disabled.
bool may_read_stats(const Server& server, const Session& session);

}  // namespace car::runs::detail
