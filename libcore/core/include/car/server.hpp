#pragma once

#include <atomic>
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

#include "car/executor.hpp"
#include "car/export.hpp"
#include "car/frame_sink.hpp"
#include "car/method_gate.hpp"
#include "car/method_registry.hpp"
#include "car/version.hpp"

// The state shared by every connection of one daemon (PROTOCOL.md §10): configuration, the method table,
// sessions by client_id, agent bindings, and the ordered teardown of a connection.
namespace car {

class Connection;

struct CAR_API ServerConfig {
  // Methods marked requires_auth answer -32001 (and close the connection) until the session is
  // authenticated. False: every session counts as authenticated (car-daemon --no-auth). Which
  // credentials authenticate is the session service's business (car/session/session_service.hpp).
  bool require_auth = true;
  // Requests being handled at once per connection before -32000 (PROTOCOL.md §2).
  std::size_t max_inflight = 256;
  // Largest inbound message; transports enforce it before buffering.
  std::size_t max_message = 16 * 1024 * 1024;
  std::size_t max_json_depth = json::default_max_depth;
  // When true, methods marked requires_handshake answer -32005 on a connection that has not
  // completed server.handshake; they are refused before params validation and never run
  // (PROTOCOL.md §2; car-daemon --require-handshake).
  bool require_handshake = false;
  std::string server_version = version_string;
};

// Teardown runs a connection's steps in ascending order (equal orders in the order they were
// added), after the session is marked closed and unmapped (PROTOCOL.md §3). The engine's own step
// sits at `fail_outbound_calls`; each service documents the orders of its steps beside its
// installer, and docs/ARCHITECTURE.md lists them all.
namespace teardown_order {
inline constexpr int fail_outbound_calls = 30;  // fail its pending server→client calls
}  // namespace teardown_order

// A snapshot of one server's connection counters (for a metrics endpoint; relaxed reads).
struct CAR_API ServerMetrics {
  std::size_t connections_open = 0;        // connections not yet torn down
  std::uint64_t connections_accepted = 0;  // open_connection calls since the server started
  std::size_t requests_inflight = 0;       // requests of every connection not yet answered
};

class CAR_API Server {
 public:
  using TeardownHook = std::function<void(Connection&)>;

  // The executor must outlive the server and every connection.
  Server(Executor& executor, ServerConfig config);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The per-connection entry point (PROTOCOL.md §10): the embedder (or a bundled transport) hands over
  // a sink for writes and a label for logs, then feeds Connection::receive. Any thread.
  std::shared_ptr<Connection> open_connection(std::string peer_label,
                                              std::shared_ptr<FrameSink> sink);

  MethodRegistry& methods() { return methods_; }
  const MethodRegistry& methods() const { return methods_; }
  Executor& executor() const { return executor_; }
  const ServerConfig& config() const { return config_; }

  // Install before serving.
  void set_method_gate(std::shared_ptr<MethodGate> gate) { gate_ = std::move(gate); }
  MethodGate* method_gate() const { return gate_.get(); }
  // Adds a step to every connection's teardown. Install before serving. A step runs on whichever
  // thread ends the connection, must not block and must tolerate other connections tearing down
  // at the same time.
  void add_teardown_step(int order, TeardownHook hook);

  std::shared_ptr<Connection> find_connection(std::string_view client_id) const;
  std::vector<std::shared_ptr<Connection>> connections() const;
  std::size_t connection_count() const;
  // Any thread; cheap (one lock for the connection count, relaxed atomics for the rest).
  ServerMetrics metrics() const;

  // Graceful close of every connection (shutdown): each sink flushes and closes with `code`.
  void close_all(std::uint16_t code, const std::string& reason);

 private:
  friend class Connection;
  void teardown(Connection& connection);

  Executor& executor_;
  const ServerConfig config_;
  MethodRegistry methods_;
  std::shared_ptr<MethodGate> gate_;
  std::multimap<int, TeardownHook> teardown_steps_;

  std::atomic<std::uint64_t> connections_accepted_{0};
  std::atomic<std::size_t> requests_inflight_{0};  // Connection adds and removes its own

  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::weak_ptr<Connection>> connections_;
};

}  // namespace car
