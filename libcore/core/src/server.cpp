#include "car/server.hpp"

#include "car/connection.hpp"
#include "car/log.hpp"

namespace car {

Server::Server(Executor& executor, ServerConfig config)
    : executor_(executor), config_(std::move(config)) {
  add_teardown_step(teardown_order::fail_outbound_calls, [](Connection& connection) {
    connection.calls_->fail_all(Error::internal("connection closed"));
  });
}

Server::~Server() = default;

std::shared_ptr<Connection> Server::open_connection(std::string peer_label,
                                                    std::shared_ptr<FrameSink> sink) {
  auto connection = std::make_shared<Connection>(*this, std::move(peer_label), sink);
  connections_accepted_.fetch_add(1, std::memory_order_relaxed);
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

void Server::add_teardown_step(int order, TeardownHook hook) {
  teardown_steps_.emplace(order, std::move(hook));
}

void Server::teardown(Connection& connection) {
  // PROTOCOL.md §3, in order. Each step must tolerate the others having run concurrently for other
  // connections; none may block.
  connection.session().mark_closed();
  {
    std::lock_guard lock(mutex_);
    connections_.erase(connection.client_id());
  }
  for (const auto& [order, step] : teardown_steps_) step(connection);
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

ServerMetrics Server::metrics() const {
  ServerMetrics out;
  out.connections_open = connection_count();
  out.connections_accepted = connections_accepted_.load(std::memory_order_relaxed);
  out.requests_inflight = requests_inflight_.load(std::memory_order_relaxed);
  return out;
}

void Server::close_all(std::uint16_t code, const std::string& reason) {
  for (auto& c : connections()) c->close(code, reason);
}

}  // namespace car
