#pragma once

// Helpers for the host-side tests (host_service, approval_core, approval_gate, tool_broker,
// host_state): several in-process peers on one Server with the host services installed, a
// deterministic executor, and per-peer inboxes that split replies from notifications and
// server→client requests.

#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "../../../test_support.hpp"
#include "car/host/host_service.hpp"

namespace car::test {
// An inline namespace of its own: the host and runs helpers both define a Peer, and without it
// their inline members would collide in the one test binary (an ODR violation).
inline namespace host_support {

// One connection and everything it has received but the test has not looked at yet.
struct Peer {
  Peer(Server& server, Executor& executor, SinkLimits limits = {})
      : client(server, executor, limits) {}

  const std::string& id() const { return client.connection->client_id(); }

  Client client;
  std::deque<std::string> inbox;
  long long next_id = 1;
};

struct HostFixture {
  explicit HostFixture(host::HostConfig config = {},
                       ServerConfig server_config = Fixture::disabled_auth())
      : server(executor, std::move(server_config)),
        sessions(session::install_session_service(server, test_credentials())),
        service(host::install_host_services(server, std::move(config))) {}

  Peer& peer(SinkLimits limits = {}) {
    peers.push_back(std::make_unique<Peer>(server, executor, limits));
    return *peers.back();
  }

  // Runs the loop until idle and moves every written frame into its peer's inbox.
  void pump() {
    executor.run_until_idle();
    for (auto& p : peers) {
      for (auto& frame : p->client.sink->take_written()) p->inbox.push_back(std::move(frame));
    }
  }

  // Sends a request without waiting for its answer; returns its id.
  long long send(Peer& p, std::string_view method, std::string_view params = "{}") {
    long long id = p.next_id++;
    std::string text = R"({"jsonrpc":"2.0","id":)" + std::to_string(id) + R"(,"method":")" +
                       std::string(method) + R"(","params":)" + std::string(params) + "}";
    p.client.send(text);
    return id;
  }

  // The reply to request `id` if it has arrived (removed from the inbox).
  std::optional<json::Document> response(Peer& p, long long id) {
    pump();
    for (auto it = p.inbox.begin(); it != p.inbox.end(); ++it) {
      auto doc = parse_json(*it);
      if (doc.IsObject() && !doc.HasMember("method") && doc.HasMember("id") &&
          doc["id"].IsInt64() && doc["id"].GetInt64() == id) {
        p.inbox.erase(it);
        return doc;
      }
    }
    return std::nullopt;
  }

  // Sends a request and returns its reply, which must arrive once the loop is idle.
  json::Document call(Peer& p, std::string_view method, std::string_view params = "{}") {
    long long id = send(p, method, params);
    auto reply = response(p, id);
    REQUIRE_MESSAGE(reply.has_value(), "no reply to " << method << " " << params);
    return std::move(*reply);
  }

  // Removes and returns the messages with this method (notifications or server→client calls),
  // in arrival order; with `kind`, only host.event notifications of that kind.
  std::vector<json::Document> take(Peer& p, std::string_view method,
                                   std::optional<std::string_view> kind = std::nullopt) {
    pump();
    std::vector<json::Document> out;
    for (auto it = p.inbox.begin(); it != p.inbox.end();) {
      auto doc = parse_json(*it);
      bool match = doc.IsObject() && doc.HasMember("method") &&
                   json::view(doc["method"]) == method &&
                   (!kind || json::view(doc["params"]["kind"]) == *kind);
      if (match) {
        out.push_back(std::move(doc));
        it = p.inbox.erase(it);
      } else {
        ++it;
      }
    }
    return out;
  }

  // host.event notifications of `kind`, removed from the inbox.
  std::vector<json::Document> events(Peer& p, std::string_view kind) {
    return take(p, "host.event", kind);
  }

  void disconnect(Peer& p) {
    p.client.sink->simulate_peer_closed();
    pump();
  }

  ManualExecutor executor;
  Server server;
  std::shared_ptr<session::SessionService> sessions;
  std::shared_ptr<host::HostService> service;
  std::vector<std::unique_ptr<Peer>> peers;
};

inline std::string str(const json::Value& v) { return std::string(json::view(v)); }

}  // namespace host_support
}  // namespace car::test
