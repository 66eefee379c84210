#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "car/executor.hpp"
#include "car/export.hpp"
#include "car/reply.hpp"
#include "car/result.hpp"

// The tool broker (PROTOCOL.md §6): a connection registers tool names; another invokes one; the broker
// forwards the call to the tool's host as a server→client `tools.execute` request (id "cb-N")
// and relays the host's result or error to the invoker. Deadlines, host loss and invoker loss
// are handled here: the invoker always gets exactly one answer, and the host is told with
// `tools.cancel` when nobody waits for its answer any more.
//
// Threading: every member is thread-safe. Lifetime: owned by a shared_ptr (timers and call
// callbacks hold it weakly); `server` must outlive it.
namespace car {
class Connection;
class Server;
}  // namespace car

namespace car::host {

class CAR_API ToolBroker : public std::enable_shared_from_this<ToolBroker> {
 public:
  ToolBroker(Server& server, std::chrono::milliseconds default_timeout);
  ~ToolBroker();
  ToolBroker(const ToolBroker&) = delete;
  ToolBroker& operator=(const ToolBroker&) = delete;

  // tools.register: all or nothing. Error: -32602 "tool '<name>' is registered by another
  // session" when a name is held by another live connection (nothing is registered then).
  // Returns the names now held by `host` from this call (duplicates folded, order kept).
  Result<std::vector<std::string>> register_tools(Connection& host,
                                                  std::vector<std::string> names);

  // tools.invoke. Completes `reply` exactly once: the host's result, its error (code, message
  // and data kept), -32602 "unknown tool '<name>'", -32004 "tool call timed out" or -32603
  // "tool host disconnected". `timeout` defaults to the broker's.
  void invoke(Connection& invoker, std::string tool, std::string parameters_json,
              std::optional<std::chrono::milliseconds> timeout, Reply reply);

  // Teardown (PROTOCOL.md §3). Phase tool_invocations: every call `connection` invoked that is still
  // running is abandoned and its host gets tools.cancel {reason: "caller_disconnected"}.
  void cancel_invocations_of(Connection& connection);
  // Phase tool_registrations: `connection` no longer hosts any tool.
  void unregister_all(std::string_view client_id);

  std::optional<std::string> host_of(std::string_view tool) const;  // the holder's client_id
  std::size_t running() const;
  std::chrono::milliseconds default_timeout() const { return default_timeout_; }

 private:
  struct Holder;
  struct Invocation;
  void finish(const std::shared_ptr<Invocation>& call, std::optional<Error> error,
              std::string result_json);
  void expire(const std::shared_ptr<Invocation>& call);
  bool holder_live(const Holder& holder) const;

  Server& server_;
  const std::chrono::milliseconds default_timeout_;

  mutable std::mutex mutex_;
  std::map<std::string, Holder, std::less<>> tools_;
  std::map<std::string, std::shared_ptr<Invocation>, std::less<>> running_;  // by action_id
};

}  // namespace car::host
