#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "car/executor.hpp"
#include "car/export.hpp"
#include "car/reply.hpp"
#include "car/result.hpp"

// The tool broker (PROTOCOL.md §6): a connection registers tools; another invokes one; the broker
// forwards the call to the tool's host as a server→client `tools.execute` request (id "cb-N")
// and relays the host's result or error to the invoker. Deadlines, host loss and invoker loss
// are handled here: the invoker always gets exactly one answer, and the host is told with
// `tools.cancel` when nobody waits for its answer any more.
//
// Tools belong to the connection that registered them: two connections may hold the same name
// (an invoker then names one by client_id), and each connection's table is bounded
// (max_tools_per_connection, max_definition_bytes_per_connection).
//
// Threading: every member is thread-safe. Lifetime: owned by a shared_ptr (timers and call
// callbacks hold it weakly); `server` must outlive it.
namespace car {
class Connection;
class Server;
}  // namespace car

namespace car::host {

// upstream's ToolDefinition. `parameters_json` is the tool's parameter schema as compact JSON.
struct CAR_API ToolDefinition {
  std::string name;
  std::string description;
  std::string parameters_json = "{}";
};

// One tools.invoke.
struct CAR_API ToolCall {
  std::string tool;
  std::string parameters_json = "{}";
  std::optional<std::chrono::milliseconds> timeout;  // the broker's default when unset
  std::optional<std::string> client_id;              // which holder, when several hold `tool`
};

class CAR_API ToolBroker : public std::enable_shared_from_this<ToolBroker> {
 public:
  // A connection's tool table holds at most this many tools and this many bytes of definitions
  // (name + description + parameters). A registration that would pass either is refused whole.
  static constexpr std::size_t max_tools_per_connection = 1024;
  static constexpr std::size_t max_definition_bytes_per_connection = 4u << 20;

  // `grace`: how much longer than the advertised deadline the broker waits before answering
  // -32004, so a tool host that bounds itself by timeout_ms answers first (PROTOCOL.md §6).
  ToolBroker(Server& server, std::chrono::milliseconds default_timeout,
             std::chrono::milliseconds grace = std::chrono::milliseconds{5000});
  ~ToolBroker();
  ToolBroker(const ToolBroker&) = delete;
  ToolBroker& operator=(const ToolBroker&) = delete;

  // tools.register: all or nothing. Each definition is added to `host`'s table or replaces the
  // one of the same name there (a name repeated in `tools` keeps its last definition); other
  // connections' tools are not affected. Error: -32602 "too many tools: ..." / "tool
  // definitions too large: ..." when the table would pass its bound (nothing registered then).
  // Returns the names registered by this call (duplicates folded, first-seen order).
  Result<std::vector<std::string>> register_tools(Connection& host,
                                                  std::vector<ToolDefinition> tools);
  // tools.unregister: whether `client_id` held `name` (it no longer does).
  bool unregister(std::string_view client_id, std::string_view name);
  // tools.list: `client_id`'s tools, sorted by name.
  std::vector<ToolDefinition> tools_of(std::string_view client_id) const;

  // tools.invoke. Completes `reply` exactly once: the host's result, its error (code, message
  // and data kept), -32602 "unknown tool '<name>'", -32602 "tool '<name>' is registered by
  // several sessions; pass client_id", -32602 "tool '<name>' is not registered by session
  // '<client_id>'", -32004 "tool call timed out" or -32603 "tool host disconnected".
  void invoke(Connection& invoker, ToolCall call, Reply reply);

  // Teardown (PROTOCOL.md §3). Phase tool_invocations: every call `connection` invoked that is still
  // running is abandoned and its host gets tools.cancel {reason: "caller_disconnected"}.
  void cancel_invocations_of(Connection& connection);
  // Phase tool_registrations: `connection` no longer hosts any tool.
  void unregister_all(std::string_view client_id);

  // The client_ids holding `tool`, sorted (live or not yet torn down).
  std::vector<std::string> hosts_of(std::string_view tool) const;
  std::size_t running() const;
  std::chrono::milliseconds default_timeout() const { return default_timeout_; }
  std::chrono::milliseconds grace() const { return grace_; }

 private:
  struct HostTable;
  struct Invocation;
  void finish(const std::shared_ptr<Invocation>& call, std::optional<Error> error,
              std::string result_json);
  void expire(const std::shared_ptr<Invocation>& call);
  // register_tools' check-then-add on `host`'s table; `unique` holds distinct names.
  std::optional<Error> add_tools_locked(Connection& host, std::vector<ToolDefinition>& unique);
  // Picks the holder of `call.tool` under mutex_, or the error to answer.
  Result<std::shared_ptr<Connection>> pick_host(const ToolCall& call) const;

  Server& server_;
  const std::chrono::milliseconds default_timeout_;
  const std::chrono::milliseconds grace_;

  mutable std::mutex mutex_;
  std::map<std::string, HostTable, std::less<>> hosts_;  // by client_id
  // tool name → the client_ids holding it; an entry exists only while somebody holds the name.
  std::map<std::string, std::set<std::string, std::less<>>, std::less<>> holders_;
  std::map<std::string, std::shared_ptr<Invocation>, std::less<>> running_;  // by action_id
};

}  // namespace car::host
