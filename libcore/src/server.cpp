#include "car/server.hpp"

#include "car/connection.hpp"
#include "car/log.hpp"

namespace car {

Server::Server(Executor& executor, ServerConfig config)
    : executor_(executor), config_(std::move(config)) {
  install_session_methods(*this);
}

Server::~Server() = default;

std::shared_ptr<Connection> Server::open_connection(std::string peer_label,
                                                    std::shared_ptr<FrameSink> sink) {
  auto connection = std::make_shared<Connection>(*this, std::move(peer_label), sink);
  {
    std::lock_guard lock(mutex_);
    connections_.emplace(connection->client_id(), connection);
  }
  std::weak_ptr<Connection> weak = connection;
  sink->on_end([weak](const SinkEnd& end) {
    if (auto c = weak.lock()) {
      if (end.failed()) {
        log_info("{}: connection failed: {}", c->peer_label(), end.reason);
      }
      c->end();
    }
  });
  log_debug("{}: connection opened as {}", connection->peer_label(), connection->client_id());
  return connection;
}

void Server::add_teardown_hook(TeardownPhase phase, TeardownHook hook) {
  teardown_hooks_.emplace(phase, std::move(hook));
}

void Server::teardown(Connection& connection) {
  // Spec §3, in order. Each step must tolerate the others having run concurrently for other
  // connections; none may block.
  connection.session().mark_closed();
  {
    std::lock_guard lock(mutex_);
    connections_.erase(connection.client_id());
  }
  auto run_phase = [&](TeardownPhase phase) {
    auto [begin, end] = teardown_hooks_.equal_range(phase);
    for (auto it = begin; it != end; ++it) it->second(connection);
  };
  run_phase(TeardownPhase::host_events);
  run_phase(TeardownPhase::run_subscriptions);
  connection.calls_->fail_all(Error::internal("connection closed"));
  run_phase(TeardownPhase::gate_waits);
  run_phase(TeardownPhase::tool_invocations);
  run_phase(TeardownPhase::tool_registrations);
  if (auto agent = connection.session().agent_id()) {
    bindings_.release(*agent, connection.client_id());
  }
  run_phase(TeardownPhase::run_grace);
  // An embedder may end a connection whose sink is still open: close it too.
  connection.sink().close(1000, "connection ended");
  log_debug("{}: connection {} torn down", connection.peer_label(), connection.client_id());
}

std::shared_ptr<Connection> Server::find_connection(std::string_view client_id) const {
  std::lock_guard lock(mutex_);
  auto it = connections_.find(std::string(client_id));
  return it == connections_.end() ? nullptr : it->second.lock();
}

std::vector<std::shared_ptr<Connection>> Server::connections() const {
  std::vector<std::shared_ptr<Connection>> out;
  std::lock_guard lock(mutex_);
  out.reserve(connections_.size());
  for (const auto& [id, weak] : connections_) {
    if (auto c = weak.lock()) out.push_back(std::move(c));
  }
  return out;
}

std::size_t Server::connection_count() const {
  std::lock_guard lock(mutex_);
  return connections_.size();
}

void Server::close_all(std::uint16_t code, const std::string& reason) {
  for (auto& c : connections()) c->close(code, reason);
}

}  // namespace car
