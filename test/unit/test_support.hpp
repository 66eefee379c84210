#pragma once

// Helpers shared by the unit tests: an in-process client driving a Server through the loopback
// sink on a deterministic executor.

#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "car/carcore.hpp"
#include "car/testing/loopback_sink.hpp"
#include "car/testing/manual_executor.hpp"

namespace car::test {

using namespace car::testing;

inline json::Document parse_json(const std::string& text) {
  json::Document doc;
  doc.Parse(text.c_str(), text.size());
  REQUIRE_MESSAGE(!doc.HasParseError(), "not JSON: " << text);
  return doc;
}

// The credentials every fixture's session service accepts (they matter only with require_auth).
inline session::AuthConfig test_credentials() {
  session::AuthConfig auth;
  auth.token = "secret";
  auth.host_token = "host-secret";
  auth.agent_tokens["special"] = "special-token";
  return auth;
}

// One in-process connection.
struct Client {
  Client(Server& server, Executor& executor, SinkLimits limits = {})
      : sink(LoopbackSink::create(executor, limits)),
        connection(server.open_connection("test-client", sink)) {}

  void send(const std::string& text) { connection->receive(text); }

  std::shared_ptr<LoopbackSink> sink;
  std::shared_ptr<Connection> connection;
};

// A server on a manual executor with one client, for the common single-connection case.
struct Fixture {
  // A server with the session service (session.auth, server.handshake) installed.
  explicit Fixture(ServerConfig config = disabled_auth(), session::AuthConfig auth = test_credentials())
      : server(executor, std::move(config)),
        sessions(session::install_session_service(server, std::move(auth))) {}

  static ServerConfig disabled_auth() {
    ServerConfig config;
    config.require_auth = false;
    return config;
  }
  static ServerConfig enabled_auth() {
    ServerConfig config;
    config.require_auth = true;
    return config;
  }

  Client& client() {
    if (!first) first = std::make_unique<Client>(server, executor);
    return *first;
  }

  // Sends one message, runs the loop until idle, returns every frame written since last time.
  std::vector<std::string> exchange(const std::string& text) {
    client().send(text);
    executor.run_until_idle();
    return client().sink->take_written();
  }

  // Sends one message and expects exactly one frame back, parsed.
  json::Document call(const std::string& text) {
    auto frames = exchange(text);
    REQUIRE_MESSAGE(frames.size() == 1, "expected one reply to " << text);
    return parse_json(frames[0]);
  }

  ManualExecutor executor;
  Server server;
  std::shared_ptr<session::SessionService> sessions;
  std::unique_ptr<Client> first;
};

inline int error_code(const json::Value& reply) {
  REQUIRE(reply.HasMember("error"));
  return reply["error"]["code"].GetInt();
}

inline std::string error_message(const json::Value& reply) {
  REQUIRE(reply.HasMember("error"));
  return reply["error"]["message"].GetString();
}

}  // namespace car::test
