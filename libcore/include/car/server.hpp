#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "car/agent_bindings.hpp"
#include "car/auth.hpp"
#include "car/executor.hpp"
#include "car/frame_sink.hpp"
#include "car/method_gate.hpp"
#include "car/method_registry.hpp"
#include "car/version.hpp"

// The state shared by every connection of one daemon (spec §10): configuration, the method table,
// sessions by client_id, agent bindings, and the ordered teardown of a connection.
namespace car {

class Connection;

struct ServerConfig {
  AuthConfig auth;
  // Requests being handled at once per connection before -32000 (spec §2).
  std::size_t max_inflight = 256;
  // Largest inbound message; transports enforce it before buffering.
  std::size_t max_message = 16 * 1024 * 1024;
  std::size_t max_json_depth = json::default_max_depth;
  // When true, methods marked requires_handshake answer -32005 before server.handshake.
  bool require_handshake = false;
  std::string server_version = version_string;
};

// The order of teardown steps after the session is marked closed and unmapped (spec §3). Steps
// the core owns (failing pending server→client calls, releasing the agent binding) run between.
enum class TeardownPhase : std::uint8_t {
  host_events = 10,        // unsubscribe from host events
  run_subscriptions = 20,  // remove its run-trace subscriptions
  // 30: core fails its pending server→client calls
  gate_waits = 35,         // end its requests waiting at the approval gate (rows stay pending)
  tool_invocations = 40,   // tools.cancel for calls it invoked
  tool_registrations = 50, // unregister its tools
  // 60: core releases its agent binding
  run_grace = 70,          // start the grace window of runs it started
};

class Server {
 public:
  using TeardownHook = std::function<void(Connection&)>;

  // The executor must outlive the server and every connection.
  Server(Executor& executor, ServerConfig config);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The per-connection entry point (spec §10): the embedder (or a bundled transport) hands over
  // a sink for writes and a label for logs, then feeds Connection::receive. Any thread.
  std::shared_ptr<Connection> open_connection(std::string peer_label,
                                              std::shared_ptr<FrameSink> sink);

  MethodRegistry& methods() { return methods_; }
  const MethodRegistry& methods() const { return methods_; }
  Executor& executor() const { return executor_; }
  const ServerConfig& config() const { return config_; }
  AgentBindings& agent_bindings() { return bindings_; }

  // Install before serving.
  void set_method_gate(std::shared_ptr<MethodGate> gate) { gate_ = std::move(gate); }
  MethodGate* method_gate() const { return gate_.get(); }
  void add_teardown_hook(TeardownPhase phase, TeardownHook hook);

  std::shared_ptr<Connection> find_connection(std::string_view client_id) const;
  std::vector<std::shared_ptr<Connection>> connections() const;
  std::size_t connection_count() const;

  // Graceful close of every connection (shutdown): each sink flushes and closes with `code`.
  void close_all(std::uint16_t code, const std::string& reason);

 private:
  friend class Connection;
  void teardown(Connection& connection);

  Executor& executor_;
  const ServerConfig config_;
  MethodRegistry methods_;
  AgentBindings bindings_;
  std::shared_ptr<MethodGate> gate_;
  std::multimap<TeardownPhase, TeardownHook> teardown_hooks_;

  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::weak_ptr<Connection>> connections_;
};

// Registers session.auth and server.handshake (done by the Server constructor).
void install_session_methods(Server& server);

}  // namespace car
